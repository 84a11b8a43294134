//! Shim logs: logfmt lines on stderr, which the daemon points at the bundle's
//! `log` FIFO (containerd copies it into its own log).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static DEBUG: AtomicBool = AtomicBool::new(false);

pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

pub fn debug_enabled() -> bool {
    DEBUG.load(Ordering::Relaxed)
}

pub fn write(level: &str, id: &str, msg: std::fmt::Arguments) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let line = format!(
        "time={}.{:09} level={level} msg={:?} id={id} runtime={}\n",
        now.as_secs(),
        now.subsec_nanos(),
        msg.to_string(),
        crate::RUNTIME_NAME
    );
    // A full FIFO (containerd not reading) must never block the shim: the fd is
    // non-blocking and a line that does not fit is dropped.
    let _ = std::io::stderr().write_all(line.as_bytes());
}

#[macro_export]
macro_rules! info {
    ($id:expr, $($arg:tt)*) => { $crate::logger::write("info", $id, format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! warn {
    ($id:expr, $($arg:tt)*) => { $crate::logger::write("warning", $id, format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! debug {
    ($id:expr, $($arg:tt)*) => {
        if $crate::logger::debug_enabled() { $crate::logger::write("debug", $id, format_args!($($arg)*)) }
    };
}
