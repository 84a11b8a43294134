//! Starting a process in a cgroup without moving it there.
//!
//! A move (a pid written to `cgroup.procs`) takes the kernel's global
//! `cgroup_threadgroup_rwsem` for writing, and the first writer after a quiet
//! spell waits for an RCU grace period: on this project's 2-CPU VMs 7–23 ms of
//! a container's start, on v1 as on v2 (runc pays it too). Two ways around it:
//! - v2: clone3 with CLONE_INTO_CGROUP and the cgroup's directory (5.7).
//! - v1: a thread moves *itself* (`0` written to a hierarchy's `tasks` file),
//!   which recent kernels do under `cgroup_mutex` alone (the thread is
//!   `current`: it cannot exit or exec meanwhile), then clones: a child is
//!   born in its creating thread's cgroups. Measured on this project's hosts
//!   (6.18, `perf` of a `ctr run`): the 9 hierarchies entered in 0.06 ms,
//!   where a `cgroup.procs` write waited 7–23 ms. The thread is one of our
//!   own that ends after the clone (spawn::spawn), so no thread of the
//!   caller is left in a container's cgroup; where a kernel takes the lock
//!   for this move too, it waits as the `cgroup.procs` write would have.
//!
//! While that thread is in the cgroup, `cgroup.procs` of a v1 hierarchy lists
//! our own pid: `Cgroup::procs` leaves it out, so no kill or freeze of the
//! container's processes ever reaches the runtime.

use super::{cg_err, is_v2_dir, Cgroup};
use crate::error::Result;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

/// A cgroup opened to be born in: its v2 directory (CLONE_INTO_CGROUP) and
/// its v1 hierarchies' `tasks` files (for the spawning thread to enter).
pub struct Birthplace {
    v2: Option<OwnedFd>,
    v1_tasks: Vec<(PathBuf, File)>,
}

impl Birthplace {
    /// The v2 directory for CLONE_INTO_CGROUP.
    pub(crate) fn v2_dir(&self) -> Option<BorrowedFd<'_>> {
        self.v2.as_ref().map(|fd| fd.as_fd())
    }

    /// True when the spawning thread must enter v1 hierarchies first: it must
    /// be a thread of its own.
    pub(crate) fn moves_thread(&self) -> bool {
        !self.v1_tasks.is_empty()
    }

    /// Move the calling thread, alone, into the v1 hierarchies' cgroups: what
    /// it clones next is born there. Call only on a thread that ends after
    /// that clone.
    pub(crate) fn enter(&self) -> Result<()> {
        for (dir, tasks) in &self.v1_tasks {
            let mut tasks: &File = tasks;
            tasks.write_all(b"0").map_err(cg_err(dir, "move the thread starting the process in"))?;
        }
        Ok(())
    }
}

impl Cgroup {
    /// The (existing) cgroup opened for a process to be born in, or None where
    /// it must be moved in: a frozen v1 cgroup would stop the thread entering
    /// it (a paused container's exec, a shared cgroupsPath), and a cgroup
    /// without directories (rootless, none made) has nothing to enter.
    pub fn birthplace(&self) -> Result<Option<Birthplace>> {
        if self.dirs.is_empty() {
            return Ok(None);
        }
        let (v2, v1): (Vec<_>, Vec<_>) = self.dirs.iter().partition(|d| is_v2_dir(d));
        if !v1.is_empty() && self.is_frozen() {
            return Ok(None);
        }
        let v2 = match v2.as_slice() {
            [] => None,
            [dir] => Some(File::open(dir).map_err(cg_err(dir, "open to start a process in"))?.into()),
            _ => return Ok(None),
        };
        let v1_tasks = v1
            .into_iter()
            .map(|dir| {
                let tasks = dir.join("tasks");
                let file = File::options().write(true).open(&tasks).map_err(cg_err(dir, "open tasks"))?;
                Ok((dir.clone(), file))
            })
            .collect::<Result<_>>()?;
        Ok(Some(Birthplace { v2, v1_tasks }))
    }
}
