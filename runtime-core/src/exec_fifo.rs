//! The exec FIFO: how a container created by one process is started by
//! another (runc's CLI model — `create` returns, `start` is a later command).
//!
//! `create` makes `exec.fifo` in the container's state dir and hands init an
//! O_PATH fd of it; init, set up, reopens it for writing, which blocks until
//! `start` opens it for reading. Init then execs the user's process: the
//! close-on-exec write end closes, and `start` reads EOF. If the exec fails,
//! init writes why before it exits, and `start` reads the message.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

const NAME: &str = "exec.fifo";

fn path(dir: &Path) -> PathBuf {
    dir.join(NAME)
}

/// Make the FIFO and return an O_PATH fd of it. Mode 0622, as runc's: init
/// reopens it for writing through the fd once it may be the root of a user
/// namespace that maps no host root; only the owner reads (`start`), and the
/// state dir (0700) keeps everyone else from reaching it by path.
pub(crate) fn make(dir: &Path) -> io::Result<OwnedFd> {
    let fifo = path(dir);
    let c = CString::new(fifo.as_os_str().as_bytes())?;
    // SAFETY: mkfifo and chmod (the umask must not narrow the mode) with a
    // valid C string.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } < 0 || unsafe { libc::chmod(c.as_ptr(), 0o622) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&fifo)?;
    Ok(file.into())
}

/// What `start` learns from the FIFO.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    /// The user's process runs.
    Started,
    /// Init could not exec it, and said why.
    Failed(String),
    /// Init died before it got to the FIFO.
    InitGone,
}

/// Let init exec and wait until it did (or could not). `init_alive` tells
/// whether init is still there while it has not opened its end.
pub(crate) fn release(dir: &Path, init_alive: impl Fn() -> bool) -> io::Result<Outcome> {
    // Non-blocking: a blocking open would wait for ever for an init that died.
    let fifo = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path(dir))?;
    let mut message = Vec::new();
    loop {
        let mut poll = libc::pollfd { fd: fifo.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut poll, 1, 100) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // POLLHUP comes only once a writer has been and gone (the kernel
        // keeps a never-opened FIFO from looking hung up).
        if poll.revents & (libc::POLLIN | libc::POLLHUP) != 0 {
            match read_available(&fifo, &mut message)? {
                true if message.is_empty() => return Ok(Outcome::Started),
                true => return Ok(Outcome::Failed(String::from_utf8_lossy(&message).into_owned())),
                false => continue,
            }
        }
        if n == 0 && !init_alive() {
            return Ok(Outcome::InitGone);
        }
    }
}

/// Append what can be read now; true at EOF.
fn read_available(fifo: &File, out: &mut Vec<u8>) -> io::Result<bool> {
    let mut buf = [0u8; 4096];
    loop {
        match (&*fifo).read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Once started (or deleted): the FIFO has served.
pub(crate) fn remove(dir: &Path) {
    let _ = std::fs::remove_file(path(dir));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    struct TempDir(PathBuf);

    impl TempDir {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn start_sees_eof_a_message_or_a_dead_init() {
        let dir = TempDir(std::env::temp_dir().join(format!("ferrum-exec-fifo-{}", std::process::id())));
        std::fs::create_dir_all(dir.path()).unwrap();
        let fd = make(dir.path()).unwrap();
        // As init: block in open until start's reader is there, then exec (close).
        let init = {
            let dir = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let w = std::fs::OpenOptions::new().write(true).open(path(&dir)).unwrap();
                drop(w);
            })
        };
        assert_eq!(release(dir.path(), || true).unwrap(), Outcome::Started);
        init.join().unwrap();
        drop(fd);
        remove(dir.path());

        let _fd = make(dir.path()).unwrap();
        let init = {
            let dir = dir.path().to_path_buf();
            std::thread::spawn(move || {
                let mut w = std::fs::OpenOptions::new().write(true).open(path(&dir)).unwrap();
                w.write_all(b"exec: no such file").unwrap();
            })
        };
        assert_eq!(release(dir.path(), || true).unwrap(), Outcome::Failed("exec: no such file".into()));
        init.join().unwrap();
        remove(dir.path());

        let _fd = make(dir.path()).unwrap();
        assert_eq!(release(dir.path(), || false).unwrap(), Outcome::InitGone);
    }
}
