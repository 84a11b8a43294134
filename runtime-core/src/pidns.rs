//! The processes of a container's own pid namespace, for a container that has
//! no cgroup to list them (rootless without a delegated cgroup).
//!
//! Each candidate is held by a pidfd before its namespace is checked, and is
//! signalled through that pidfd: a pid reused between the check and the
//! signal is never hit.

use crate::procfs::{self, Base};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

/// Pids of every process in the pid namespace whose first process is `init`
/// (started at `init_start`), init included. Empty once init is gone.
pub(crate) fn members(init: i32, init_start: u64) -> Vec<i32> {
    held_members(init, init_start).unwrap_or_default().into_iter().map(|(pid, _)| pid).collect()
}

/// Send `signal` to every process of init's pid namespace.
pub(crate) fn signal_members(init: i32, init_start: u64, signal: i32) -> io::Result<()> {
    for (_, pidfd) in held_members(init, init_start)? {
        // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo.
        let r = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), signal, 0usize, 0u32) };
        // ESRCH: it exited meanwhile, which is what the signal was for.
        if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH) {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn held_members(init: i32, init_start: u64) -> io::Result<Vec<(i32, OwnedFd)>> {
    let init_fd = pidfd_open(init)?;
    if !crate::proc_stat::is_same_process(init, init_start) {
        return Ok(Vec::new());
    }
    let namespace = pid_namespace(init)?;
    let mut out = vec![(init, init_fd)];
    // Only the names are read by path; every process is then opened by pidfd
    // and its namespace read through the runtime's procfs handle.
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        if pid == init {
            continue;
        }
        let Ok(fd) = pidfd_open(pid) else { continue };
        if pid_namespace(pid).is_ok_and(|ns| ns == namespace) {
            out.push((pid, fd));
        }
    }
    Ok(out)
}

/// The pid namespace a process's pid is in, as `pid:[inode]`.
fn pid_namespace(pid: i32) -> io::Result<PathBuf> {
    procfs::readlink(Base::Pid(pid), "ns/pid")
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd of ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
