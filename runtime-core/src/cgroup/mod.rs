//! Cgroup placement and removal (cgroupfs driver) on v1, hybrid and pure v2 hosts.
//!
//! A container's cgroup is one directory per mounted hierarchy (v1 controllers,
//! named hierarchies such as name=systemd, and the v2 hierarchy — alone on a
//! pure v2 host, next to the v1 ones on a hybrid host), with `cgroupsPath`
//! interpreted as runc does: absolute paths from each hierarchy's root, relative
//! paths from the caller's own cgroup, empty meaning `<caller's cgroup>/<id>`.

mod birth;
mod block_io;
mod device_filter;
mod hierarchy;
mod hugetlb;
mod oom;
mod resources;
mod rootless;
mod stats;
pub(crate) mod systemd;
mod unified;

use crate::procfs::{self, Base};
use crate::error::{Error, Result};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use birth::Birthplace;
pub use hierarchy::is_pure_v2;
pub use oom::OomWatcher;
pub use rootless::Refused;
pub use block_io::{BlkioEntry, IoEntry};
pub use hugetlb::HugetlbUsage;
pub use stats::CgroupStats;

/// Who makes the container's cgroup: we do, in cgroupfs, or systemd, as a
/// transient unit (runc's `SystemdCgroup`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    #[default]
    Cgroupfs,
    Systemd,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
}

fn cg_err(path: &Path, what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let (path, what) = (path.to_path_buf(), what.into());
    move |source| Error::Cgroup { path, what, source }
}

impl Cgroup {
    /// The directories for `cgroups_path` (from the spec) on this host.
    pub fn resolve(cgroups_path: Option<&Path>, id: &str) -> Result<Cgroup> {
        let mountinfo = procfs::read(Base::OwnProcess, "mountinfo")
            .map_err(cg_err(Path::new("/proc/self/mountinfo"), "read"))?;
        let own = procfs::read(Base::OwnProcess, "cgroup").map_err(cg_err(Path::new("/proc/self/cgroup"), "read"))?;
        let hierarchies = hierarchy::parse(&mountinfo, &own);
        let mut dirs = Vec::with_capacity(hierarchies.len());
        for h in &hierarchies {
            let dir = h.dir_for(cgroups_path, id);
            // Its subtree is every process of the host: never a container's
            // (delete kills and removes the whole cgroup).
            if dir == h.mountpoint {
                let path = cgroups_path.unwrap_or(Path::new("")).display();
                return Err(cg_err(&dir, format!("cgroups path {:?}", path.to_string()))(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "names the root cgroup of the hierarchy",
                )));
            }
            dirs.push(dir);
        }
        Ok(Cgroup { dirs })
    }

    pub fn from_dirs(dirs: Vec<PathBuf>) -> Cgroup {
        Cgroup { dirs }
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Create the directories (a v1 cpuset one ready to take tasks, a v2
    /// one with its controllers' files). Before any process is in: enabling
    /// a controller above a populated cgroup takes the kernel's lock on moves
    /// (see birth.rs), which an empty subtree spares.
    pub fn create(&self) -> Result<()> {
        for dir in &self.dirs {
            std::fs::create_dir_all(dir).map_err(cg_err(dir, "create"))?;
            if dir.join("cpuset.cpus").exists() && !is_v2_dir(dir) {
                inherit_cpuset(dir)?;
            }
        }
        self.enable_v2_controllers();
        Ok(())
    }

    /// Move `pid` into the (existing) directories.
    pub fn add(&self, pid: i32) -> Result<()> {
        for dir in &self.dirs {
            std::fs::write(dir.join("cgroup.procs"), pid.to_string())
                .map_err(cg_err(dir, format!("add pid {pid}")))?;
        }
        Ok(())
    }

    /// Create the directories and move `pid` into them.
    pub fn join(&self, pid: i32) -> Result<()> {
        self.create()?;
        self.add(pid)
    }

    /// A resource the spec sets for a controller this host or cgroup version lacks.
    fn missing_controller(&self, field: &str, controller: &str) -> Error {
        let e = io::Error::new(io::ErrorKind::Unsupported, format!("no {controller} controller on this host"));
        let path = self.dirs.first().cloned().unwrap_or_default();
        Error::Cgroup { path, what: format!("linux.resources.{field}"), source: e }
    }

    /// The first of the directories that has `file` (finds a v1 controller's).
    fn dir_with(&self, file: &str) -> Option<&PathBuf> {
        self.dirs.iter().find(|d| d.join(file).exists())
    }

    /// Pids of every process in the cgroup, sub-cgroups included (a container
    /// may make its own, e.g. with systemd inside). Never ours: on v1 a thread
    /// of ours passes through while it starts a process there (birth.rs).
    pub fn procs(&self) -> Vec<i32> {
        let Some(dir) = self.dirs.first() else { return Vec::new() };
        let ours = std::process::id() as i32;
        let mut pids = Vec::new();
        for d in subtree(dir) {
            if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
                pids.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()).filter(|p| *p != ours));
            }
        }
        pids
    }

    /// SIGKILL everything in the cgroup and its sub-cgroups and wait (up to
    /// `timeout`) until it is empty. On v2, cgroup.kill does the whole subtree
    /// at once and cannot miss a process forked meanwhile.
    pub fn kill_all(&self, timeout: Duration) {
        for dir in &self.dirs {
            if dir.join("cgroup.kill").exists() {
                let _ = std::fs::write(dir.join("cgroup.kill"), "1");
            }
        }
        let deadline = Instant::now() + timeout;
        loop {
            let procs = self.procs();
            if procs.is_empty() || Instant::now() > deadline {
                return;
            }
            for pid in procs {
                // SAFETY: kill(2) has no memory effects.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Freeze (or thaw) every process of the cgroup and wait until the kernel
    /// says it is done: v1's freezer where it is mounted, else v2's cgroup.freeze.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        let Some(freezer) = self.freezer() else {
            let path = self.dirs.first().cloned().unwrap_or_default();
            return Err(cg_err(&path, "freeze")(io::Error::new(io::ErrorKind::Unsupported, "no freezer")));
        };
        let (dir, file, value) = freezer.request(frozen);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // v1 may stay FREEZING while a task is in an uninterruptible
            // sleep; writing the state again retries the freeze.
            std::fs::write(dir.join(file), value).map_err(cg_err(dir, format!("write {value} to {file}")))?;
            if freezer.reached(frozen) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let e = io::Error::new(io::ErrorKind::TimedOut, format!("{file} did not reach {value}"));
                return Err(cg_err(dir, "freeze")(e));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The directory CRIU freezes the container through.
    pub(crate) fn freezer_dir(&self) -> Option<&Path> {
        self.freezer().map(|f| match f {
            Freezer::V1(d) | Freezer::V2(d) => d,
        })
    }

    /// The v1 hierarchies' entries under a container's /sys/fs/cgroup (named
    /// as `Visible::name`) with this cgroup's directory in each: what a
    /// container without a cgroup namespace has bound there.
    pub(crate) fn v1_entries(&self) -> Result<Vec<(String, PathBuf)>> {
        let mountinfo = procfs::read(Base::OwnProcess, "mountinfo")
            .map_err(cg_err(Path::new("/proc/self/mountinfo"), "read"))?;
        let own = procfs::read(Base::OwnProcess, "cgroup").map_err(cg_err(Path::new("/proc/self/cgroup"), "read"))?;
        Ok(hierarchy::parse(&mountinfo, &own)
            .into_iter()
            .filter(|h| !h.key.is_empty())
            .filter_map(|h| {
                let name = h.mountpoint.file_name()?.to_string_lossy().into_owned();
                let dir = self.dirs.iter().find(|d| d.starts_with(&h.mountpoint))?;
                Some((name, dir.clone()))
            })
            .collect())
    }

    /// Whether the freezer holds the cgroup frozen.
    pub fn is_frozen(&self) -> bool {
        self.freezer().is_some_and(|f| f.reached(true))
    }

    /// v1's freezer where it is mounted, else v2's cgroup.freeze.
    fn freezer(&self) -> Option<Freezer<'_>> {
        let v1 = self.dirs.iter().find(|d| d.join("freezer.state").exists()).map(|d| Freezer::V1(d));
        v1.or_else(|| self.dirs.iter().find(|d| d.join("cgroup.freeze").exists()).map(|d| Freezer::V2(d)))
    }

    /// Remove the directories. A cgroup is busy for a moment after its last
    /// process died (until the exit is fully processed), hence the retries.
    pub fn remove(&self) -> Result<()> {
        // Sub-cgroups first, deepest first: rmdir refuses a cgroup with children.
        let all: Vec<PathBuf> = self.dirs.iter().flat_map(|d| subtree(d).into_iter().rev()).collect();
        for dir in &all {
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => return Err(cg_err(dir, "remove")(e)),
                }
            }
        }
        Ok(())
    }
}

/// How a container sees one hierarchy under its /sys/fs/cgroup.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Visible {
    /// Entry name under /sys/fs/cgroup (the host's: "cpu", "memory", "unified"...).
    pub name: String,
    /// The caller's own cgroup in it, on the host.
    pub own_dir: PathBuf,
    /// "cgroup" or "cgroup2", and the data for mounting it afresh.
    pub fstype: &'static str,
    pub data: String,
}

/// The hierarchies of this host with the caller's own cgroup in each: what a
/// container's `cgroup` mount shows. Read before unsharing a cgroup namespace.
pub(crate) fn visible_hierarchies() -> std::io::Result<Vec<Visible>> {
    let mountinfo = procfs::read(Base::OwnProcess, "mountinfo")?;
    let own = procfs::read(Base::OwnProcess, "cgroup")?;
    Ok(hierarchy::parse(&mountinfo, &own)
        .into_iter()
        .map(|h| {
            let name = h.mountpoint.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let (fstype, data) = match h.key.as_str() {
                "" => ("cgroup2", String::new()),
                k if k.starts_with("name=") => ("cgroup", format!("none,{k}")),
                k => ("cgroup", k.to_string()),
            };
            Visible { name, own_dir: h.mountpoint.join(h.own_path()), fstype, data }
        })
        .collect())
}

enum Freezer<'a> {
    V1(&'a Path),
    V2(&'a Path),
}

impl Freezer<'_> {
    /// The directory, file and value that ask for the state.
    fn request(&self, frozen: bool) -> (&Path, &'static str, &'static str) {
        match (self, frozen) {
            (Freezer::V1(d), true) => (d, "freezer.state", "FROZEN"),
            (Freezer::V1(d), false) => (d, "freezer.state", "THAWED"),
            (Freezer::V2(d), true) => (d, "cgroup.freeze", "1"),
            (Freezer::V2(d), false) => (d, "cgroup.freeze", "0"),
        }
    }

    /// Whether the kernel reports the state reached (v1 reads back the state,
    /// v2 reports it in cgroup.events).
    fn reached(&self, frozen: bool) -> bool {
        let (file, want) = match (self, frozen) {
            (Freezer::V1(_), true) => ("freezer.state", "FROZEN"),
            (Freezer::V1(_), false) => ("freezer.state", "THAWED"),
            (Freezer::V2(_), true) => ("cgroup.events", "frozen 1"),
            (Freezer::V2(_), false) => ("cgroup.events", "frozen 0"),
        };
        let dir = match self {
            Freezer::V1(d) | Freezer::V2(d) => d,
        };
        std::fs::read_to_string(dir.join(file)).map(|s| s.lines().any(|l| l.trim() == want)).unwrap_or(false)
    }
}

/// `dir` and every cgroup below it, parents before children.
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = std::fs::read_dir(&out[i]) {
            out.extend(entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()));
        }
        i += 1;
    }
    out
}

fn is_v2_dir(dir: &Path) -> bool {
    dir.join("cgroup.controllers").exists()
}

/// A v1 cpuset cgroup refuses tasks while its cpus/mems are empty; new ones are
/// empty. Fill them from the nearest ancestor, top down.
fn inherit_cpuset(dir: &Path) -> Result<()> {
    let mut chain = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if !d.join("cpuset.cpus").exists() {
            break;
        }
        chain.push(d);
        cur = d.parent();
    }
    for pair in chain.windows(2).rev() {
        let (child, parent) = (pair[0], pair[1]);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let current = std::fs::read_to_string(child.join(file)).map_err(cg_err(child, file))?;
            if current.trim().is_empty() {
                let value = std::fs::read_to_string(parent.join(file)).map_err(cg_err(parent, file))?;
                std::fs::write(child.join(file), value.trim()).map_err(cg_err(child, file))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the config.json fuzz suite (as `..` out of the hierarchy);
    /// the root itself is as bad: deleting the container kills its subtree.
    #[test]
    fn the_root_cgroup_is_never_a_containers() {
        let Ok(any) = Cgroup::resolve(Some(Path::new("/c1")), "c1") else { return };
        if any.dirs().is_empty() {
            return; // no cgroup hierarchy mounted here
        }
        for path in ["/", "/..", "/a/../..", "/./"] {
            let err = Cgroup::resolve(Some(Path::new(path)), "c1").expect_err(path).to_string();
            assert!(err.contains("names the root cgroup") && err.contains(&format!("{path:?}")), "{err}");
        }
    }
}
