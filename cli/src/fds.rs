//! The fds a container's process gets beyond stdio, as runc passes them:
//! systemd's socket activation (`LISTEN_FDS`, for `create` and `run`) first,
//! then `--preserve-fds N` of the caller's own fds after those.

use anyhow::{anyhow, Result};
use std::os::fd::{FromRawFd, OwnedFd};

/// The extra fds, in the order they become the process's 3, 4, …, and the
/// environment the process is told about activation with.
pub struct Extra {
    pub fds: Vec<OwnedFd>,
    pub env: Vec<String>,
}

/// `preserve` is `--preserve-fds`; `activation` whether systemd's
/// `LISTEN_FDS` counts (create and run, not exec).
pub fn extra(preserve: Option<&str>, activation: bool) -> Result<Extra> {
    let listen = if activation { listen_fds(std::env::var("LISTEN_PID").ok(), std::env::var("LISTEN_FDS").ok()) } else { 0 };
    let preserve = match preserve {
        Some(n) => n.parse::<u32>().map_err(|_| anyhow!("invalid value {n:?} for flag -preserve-fds"))?,
        None => 0,
    };
    let end = 3u32.saturating_add(listen).saturating_add(preserve);
    let mut fds = Vec::new();
    for i in 0..listen {
        fds.push(copy(3 + i, end).map_err(|e| anyhow!("LISTEN_FDS: fd {} (of {listen}): {e}", 3 + i))?);
    }
    // Every fd is checked before any is used: a missing one fails the
    // command (runc would pass one of its own in its place).
    let base = 3 + listen;
    for i in 0..preserve {
        fds.push(copy(base + i, end).map_err(|e| anyhow!("unable to stat preserved-fd {i} (of {preserve}): {e}"))?);
    }
    let env = if listen > 0 { vec![format!("LISTEN_FDS={listen}"), "LISTEN_PID=1".to_string()] } else { Vec::new() };
    Ok(Extra { fds, env })
}

/// How many fds systemd handed us: only when `LISTEN_PID` names this process.
fn listen_fds(pid: Option<String>, count: Option<String>) -> u32 {
    let ours = pid.and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    count.filter(|_| ours).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// A copy of our fd `fd` numbered `above` or higher (EBADF when `fd` is not
/// open): copies above the range looked at never fill one of its gaps.
fn copy(fd: u32, above: u32) -> std::io::Result<OwnedFd> {
    let bad = || std::io::Error::from_raw_os_error(libc::EBADF);
    let fd = i32::try_from(fd).map_err(|_| bad())?;
    let above = i32::try_from(above).map_err(|_| bad())?;
    // SAFETY: fcntl on any number fails cleanly when it is not open; the copy
    // is owned at once.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_counts_only_for_this_process() {
        let me = std::process::id().to_string();
        assert_eq!(listen_fds(Some(me.clone()), Some("2".into())), 2);
        assert_eq!(listen_fds(Some("1".into()), Some("2".into())), 0);
        assert_eq!(listen_fds(None, Some("2".into())), 0);
        assert_eq!(listen_fds(Some(me), Some("x".into())), 0);
    }

    #[test]
    fn a_preserved_fd_that_is_not_open_is_named() {
        // Far above anything this test process has open.
        let err = copy(4000, 4001).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        let msg = extra(Some("x"), false).err().unwrap().to_string();
        assert!(msg.contains("preserve-fds"), "{msg}");
    }
}
