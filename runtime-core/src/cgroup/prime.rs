//! Hiding the kernel's wait before the first cgroup migration.
//!
//! Moving a process into a cgroup (a write to `cgroup.procs`, v1 or v2) takes
//! the kernel's `cgroup_threadgroup_rwsem` for writing, and the first writer
//! after a quiet spell waits for an RCU grace period (percpu-rwsem's rcu_sync)
//! before it gets it: 7–11 ms on this project's test machines, the longest
//! single step of a container's create — runc pays it too. Writers in the next
//! grace periods find the lock warm and take well under a millisecond. So a
//! create or an exec first starts a thread that moves this process into the
//! cgroup it is already in (which changes nothing) and waits out that grace
//! period while the caller mounts, clones and sets limits; the real move finds
//! the lock warm.

use super::hierarchy;
use crate::procfs::{self, Base};

/// Start paying the first migration's wait on a short-lived thread of its own.
/// Best effort: any failure only leaves the wait to the real move.
pub fn prime_migration() {
    let _ = std::thread::Builder::new()
        .name("cgroup-prime".into())
        .stack_size(64 * 1024)
        // An error (not permitted, a v2 cgroup with controllers on) comes
        // after the wait this is for.
        .spawn(|| drop(move_into_own_cgroup()));
}

/// Move this process into the cgroup it is in, in the first hierarchy found.
fn move_into_own_cgroup() -> std::io::Result<()> {
    let procs = own_procs_file().ok_or(std::io::ErrorKind::NotFound)?;
    std::fs::write(procs, std::process::id().to_string())
}

/// `cgroup.procs` of this process's own cgroup in the first hierarchy found.
fn own_procs_file() -> Option<std::path::PathBuf> {
    let mountinfo = procfs::read(Base::OwnProcess, "mountinfo").ok()?;
    let own = procfs::read(Base::OwnProcess, "cgroup").ok()?;
    let first = hierarchy::parse(&mountinfo, &own).into_iter().next()?;
    Some(first.mountpoint.join(first.own_path()).join("cgroup.procs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_priming_move_leaves_the_process_where_it_was() {
        let before = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        assert!(own_procs_file().is_some_and(|f| f.is_file()), "no cgroup.procs of our own found");
        move_into_own_cgroup().expect("move into our own cgroup (as root)");
        assert_eq!(std::fs::read_to_string("/proc/self/cgroup").unwrap(), before);
    }
}
