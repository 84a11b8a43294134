//! The checkpoint/restore tests' probe: a shell counting in memory and
//! writing each value to `/count`. Restored with its memory it carries on
//! from the checkpointed value; a fresh start would begin again at 1.

use std::path::Path;
use std::time::{Duration, Instant};

/// Counts without forking while it counts (`read -t` waits on a pipe nobody
/// writes to): a process that exits while CRIU freezes the tree makes CRIU
/// fail, for runc as for ferrum.
pub const COUNTER: &str = "sleep 100000 | { i=0; while true; do i=$((i+1)); echo $i > /count; read -t 0.1 x; done; }";

/// The value in `file`. The shell truncates before it writes: an empty read
/// is tried again, and stays None for a counter frozen (or dumped) right in
/// between.
pub fn read(file: &Path) -> Option<u64> {
    (0..10).find_map(|i| {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    })
}

/// Waits (up to 20 s) until `read` gives at least `at_least`, and returns
/// that value; panics naming `what` otherwise.
pub fn wait_for(what: &str, read: impl Fn() -> Option<u64>, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(n) = read().filter(|n| *n >= at_least) {
            return n;
        }
        assert!(Instant::now() < deadline, "{what}: the counter did not reach {at_least} (at {:?})", read());
        std::thread::sleep(Duration::from_millis(50));
    }
}
