//! The raw `clone3` system call: new processes in new namespaces (spawn), or
//! with a pidfd and no exit signal (hooks); and the fd copies a cloned child
//! takes its fds from, numbered out of the way of its dup2s.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `struct clone_args` of linux/sched.h (CLONE_ARGS_SIZE_VER2).
#[repr(C)]
#[derive(Default)]
pub(crate) struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

/// Fork-like `clone3` (no CLONE_VM): 0 in the child, the child's pid in the parent.
///
/// # Safety
/// In a multi-threaded caller the child may only make async-signal-safe calls
/// until it execs or exits, on data prepared before the call.
pub(crate) unsafe fn clone3(args: &mut CloneArgs) -> io::Result<libc::pid_t> {
    let pid = libc::syscall(
        libc::SYS_clone3,
        args as *mut CloneArgs,
        std::mem::size_of::<CloneArgs>(),
    );
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid as libc::pid_t)
}

/// A close-on-exec copy of `fd` numbered 10 or above, out of the way of
/// the low fds a spawned child dup2s onto.
pub(crate) fn dup_high(fd: BorrowedFd) -> io::Result<OwnedFd> {
    dup_above(fd, 10)
}

/// A close-on-exec copy of `fd` numbered `min` or above.
pub(crate) fn dup_above(fd: BorrowedFd, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new fd that we own.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}
