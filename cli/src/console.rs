//! The container's pty master, as runc hands it on: over a console socket
//! (the caller, containerd's shim or conmon, listens on a Unix socket and
//! gets the master as one SCM_RIGHTS fd, with the master's name as the
//! message, before `create` or `exec --detach` returns), or attached to our
//! own terminal for a foreground `run` or `exec -t` without one.

use anyhow::{Context, Result};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use std::fs::File;
use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

pub fn send_master(socket: &str, master: &OwnedFd) -> Result<()> {
    let stream = UnixStream::connect(socket).with_context(|| format!("connect to console socket {socket}"))?;
    let fds = [master.as_raw_fd()];
    let name = b"/dev/ptmx";
    sendmsg::<()>(stream.as_raw_fd(), &[IoSlice::new(name)], &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None)
        .with_context(|| format!("send the console to {socket}"))?;
    Ok(())
}

/// runc's foreground terminal, for `run` and `exec -t` without a console
/// socket: the container's pty sized as our terminal, our terminal raw
/// (the pty's own line discipline echoes and edits), what we read copied
/// into the pty and what it prints to our stdout, until it hangs up (every
/// process holding its other end has exited). `start` runs once the pty is
/// sized; our terminal is restored afterwards, also when `start` fails.
pub fn attach(master: OwnedFd, start: impl FnOnce() -> Result<()>) -> Result<()> {
    if let Some(size) = our_size() {
        // SAFETY: TIOCSWINSZ with a valid winsize on the master we own.
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    }
    let _raw = RawMode::enter();
    start()?;
    forward_resizes(&master)?;
    let mut input = File::from(master.try_clone().context("copy the console's fd")?);
    // Ends with our stdin, or with the process (std::process::exit).
    std::thread::spawn(move || std::io::copy(&mut std::io::stdin().lock(), &mut input));
    let mut output = File::from(master);
    let mut stdout = std::io::stdout().lock();
    let mut buf = [0u8; 8192];
    loop {
        match output.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                stdout.write_all(&buf[..n]).context("write the console's output")?;
                stdout.flush().context("write the console's output")?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // EIO: the pty hung up.
            Err(_) => return Ok(()),
        }
    }
}

/// Our terminal's size changes (SIGWINCH) passed on to the pty by a thread
/// of its own, which reads them from a signalfd: SIGWINCH is blocked in
/// this thread first, so every thread made after inherits the block.
fn forward_resizes(master: &OwnedFd) -> Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::SignalFd;
    let pty = master.try_clone().context("copy the console's fd")?;
    let mut winch = SigSet::empty();
    winch.add(Signal::SIGWINCH);
    winch.thread_block().context("block SIGWINCH")?;
    let signals = SignalFd::new(&winch).context("signalfd for SIGWINCH")?;
    std::thread::spawn(move || {
        while let Ok(Some(_)) = signals.read_signal() {
            if let Some(size) = our_size() {
                // SAFETY: TIOCSWINSZ with a valid winsize on a pty fd we own.
                unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &size) };
            }
        }
    });
    Ok(())
}

/// Our stdin's window size, when it is a terminal.
pub fn our_size() -> Option<libc::winsize> {
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills the winsize we pass.
    (unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut size) } == 0).then_some(size)
}

/// Our stdin in raw mode while this lives, when it is a terminal.
struct RawMode(Option<libc::termios>);

impl RawMode {
    fn enter() -> RawMode {
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr/tcsetattr on fd 0 with termios structs we own.
        unsafe {
            if libc::tcgetattr(0, &mut saved) != 0 {
                return RawMode(None);
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            libc::tcsetattr(0, libc::TCSANOW, &raw);
        }
        RawMode(Some(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the termios read in enter().
            unsafe { libc::tcsetattr(0, libc::TCSANOW, saved) };
        }
    }
}
