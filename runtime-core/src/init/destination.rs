//! Where a spec's mount may go: nothing onto or into /proc but a procfs and
//! the few files lxcfs emulates, nothing onto another procfs, and a proc or
//! sysfs only on an ordinary directory — runc's rules (checkProcMount, and
//! its CVE-2019-16884 and CVE-2019-19921 fixes), judged on the destination
//! as resolved inside the root, never on the string: a symlink an image or an
//! earlier mount put on the way counts where it leads. A mount over
//! /proc/self/attr would take the container's LSM label into a plain
//! directory, and the process would run unconfined.

use super::paths::{open_in_root_no_symlinks, relative};
use super::Result;
use nix::sys::stat::fstat;
use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

/// What lxcfs mounts over, the only mounts allowed inside /proc (as runc).
const LXCFS_FILES: [&str; 11] = [
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
    "/proc/sys/crypto/fips_enabled",
];

/// The root inode of every procfs.
const PROC_ROOT_INO: u64 = 1;

/// A mount about to be made, as the checks need it.
pub(super) struct Planned<'a> {
    /// Its index in the spec's mounts, for messages.
    pub index: usize,
    pub typ: &'a str,
    pub destination: &'a Path,
    /// For a bind: the source, open.
    pub bind_source: Option<BorrowedFd<'a>>,
}

impl Planned<'_> {
    fn describe(&self, resolved: &Path) -> String {
        let dest = self.destination.display();
        if resolved == Path::new("/").join(relative(self.destination)) {
            format!("mounts[{}] ({} on {dest})", self.index, self.typ)
        } else {
            format!("mounts[{}] ({} on {dest}, which resolves to {})", self.index, self.typ, resolved.display())
        }
    }
}

/// The container path `target` (open inside `root`, at `root_path` on the
/// host) resolved to.
fn container_path(root_path: &Path, target: BorrowedFd) -> Result<PathBuf> {
    let host = crate::procfs::path_of(target).map_err(|e| format!("find where a mount target is: {e}"))?;
    let inside = host.strip_prefix(root_path).map_err(|_| format!("mount target {} is outside the root", host.display()))?;
    Ok(Path::new("/").join(inside))
}

fn is_procfs(fd: BorrowedFd) -> bool {
    fstatfs(fd).is_ok_and(|fs| fs.filesystem_type() == PROC_SUPER_MAGIC)
}

/// Refuse `m` on `target` (its destination, opened inside `root`) unless the
/// rules allow it; the error names the mount and both paths.
pub(super) fn check(m: &Planned, root: BorrowedFd, root_path: &Path, target: BorrowedFd) -> Result<()> {
    let resolved = container_path(root_path, target)?;
    let what = || m.describe(&resolved);
    if m.typ == "proc" || m.typ == "sysfs" {
        // runc's CVE-2019-19921 fix: never through a symlink another container
        // could swap, and on a directory.
        let lexical = open_in_root_no_symlinks(root, m.destination);
        let same = |fd: &std::os::fd::OwnedFd| match (fstat(fd), fstat(target)) {
            (Ok(a), Ok(b)) => (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino),
            _ => false,
        };
        let is_dir = fstat(target).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
        if !lexical.is_ok_and(|fd| same(&fd)) || !is_dir {
            return Err(format!("{}: a {} must be mounted on an ordinary directory, reached without symlinks", what(), m.typ));
        }
    }
    if resolved == Path::new("/proc") {
        let procfs_root = |fd: BorrowedFd| is_procfs(fd) && fstat(fd.as_fd()).is_ok_and(|st| st.st_ino == PROC_ROOT_INO);
        return match (m.typ, m.bind_source) {
            ("proc", _) => Ok(()),
            (_, Some(source)) if procfs_root(source) => Ok(()),
            _ => Err(format!("{}: only a procfs (or a bind of a procfs's root) may be mounted on /proc", what())),
        };
    }
    if resolved.starts_with("/proc") {
        if LXCFS_FILES.iter().any(|f| resolved == Path::new(f)) {
            return Ok(());
        }
        return Err(format!(
            "{}: inside /proc, where only a procfs and lxcfs's files ({}) may be mounted",
            what(),
            LXCFS_FILES.join(", ")
        ));
    }
    if is_procfs(target) {
        return Err(format!("{}: on a procfs, where nothing may be mounted", what()));
    }
    Ok(())
}
