//! Every read and write the runtime does in /proc, through a procfs of its own.
//!
//! A container can change what its /proc shows: mount over its files, swap the
//! directory its procfs is mounted on for one of dummy files, or simply have
//! no procfs (the CVE-2019-16884 and CVE-2025-52881 classes). A write by path
//! then lands in a plain file, and the LSM label, sysctl or oom_score_adj is
//! silently lost — or lands in another procfs file. So no path string into
//! /proc is ever used: everything goes through libpathrs's `ProcfsHandle`
//! (written by runc's maintainer for this) on a detached procfs mount, in no
//! mount namespace; every lookup in it is an openat2 with RESOLVE_BENEATH |
//! RESOLVE_NO_XDEV | RESOLVE_NO_MAGICLINKS, and the file reached is checked
//! to be procfs and on the handle's own mount (not overmounted).
//!
//! The mount is a non-recursive clone (open_tree) of the /proc this process
//! sees when the handle is made — the host's: the shim's, or a container's
//! init's first thing ([`prime`]), before any container mount exists and
//! before it joins a namespace. Nothing mounted later under any /proc reaches
//! it. It costs a tenth of a fresh procfs instance (fsopen, libpathrs's own
//! choice, ~100 µs a container: `examples/lifecycle.rs`), which remains the
//! fallback. Such a handle shows system-wide files too (/proc/sys): its fd
//! is close-on-exec like every fd of ours, and a cwd never goes through a
//! magic link (init/process.rs). [`Global`] names the uses that need them.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pathrs::flags::OpenFlags;
use pathrs::procfs::{ProcfsBase, ProcfsHandle, ProcfsHandleBuilder};

/// Which process's directory a path is in.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Base {
    /// /proc/thread-self: LSM attributes belong to the calling thread.
    ThreadSelf,
    /// /proc/self.
    OwnProcess,
    /// /proc/<pid>: only for a child not yet reaped, whose pid cannot be reused.
    Pid(i32),
}

impl Base {
    fn pathrs(self) -> ProcfsBase {
        match self {
            Base::ThreadSelf => ProcfsBase::ProcThreadSelf,
            Base::OwnProcess => ProcfsBase::ProcSelf,
            Base::Pid(pid) => ProcfsBase::ProcPid(pid as u32),
        }
    }

    fn describe(self, path: &Path) -> String {
        match self {
            Base::ThreadSelf => format!("/proc/thread-self/{}", path.display()),
            Base::OwnProcess => format!("/proc/self/{}", path.display()),
            Base::Pid(pid) => format!("/proc/{pid}/{}", path.display()),
        }
    }
}

static HANDLE: OnceLock<ProcfsHandle> = OnceLock::new();

/// libpathrs's errors as io::Error, keeping the errno and the whole story.
fn io_error(what: String, e: pathrs::error::Error) -> io::Error {
    let kind = match e.kind() {
        pathrs::error::ErrorKind::OsError(Some(errno)) => io::Error::from_raw_os_error(errno).kind(),
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, format!("{what}: {e}"))
}

/// Make this process's handle now (a container's init before its mounts;
/// anything else gets it on first use).
pub(crate) fn prime() -> io::Result<()> {
    handle().map(drop)
}

fn handle() -> io::Result<&'static ProcfsHandle> {
    if let Some(h) = HANDLE.get() {
        return Ok(h);
    }
    let h = private_clone().or_else(|_| ProcfsHandle::new().map_err(|e| io_error("open a procfs of our own".into(), e)))?;
    Ok(HANDLE.get_or_init(|| h))
}

/// A detached, non-recursive clone of this process's /proc mount, checked to
/// be a procfs root.
fn private_clone() -> io::Result<ProcfsHandle> {
    let fd = crate::new_mount_api::clone_tree(Path::new("/proc"), false)?;
    ProcfsHandle::try_from_fd(fd).map_err(|e| io_error("clone /proc".into(), e))
}

/// Open `path` below `base`, never following a symlink out of procfs.
pub(crate) fn open(base: Base, path: impl AsRef<Path>, flags: OpenFlags) -> io::Result<File> {
    let path = path.as_ref();
    handle()?.open(base.pathrs(), path, flags).map_err(|e| io_error(base.describe(path), e))
}

/// Open a magic link below `base` (`ns/net`, `fd/3`), as what it points at.
pub(crate) fn open_link(base: Base, path: impl AsRef<Path>, flags: OpenFlags) -> io::Result<File> {
    let path = path.as_ref();
    handle()?.open_follow(base.pathrs(), path, flags).map_err(|e| io_error(base.describe(path), e))
}

pub(crate) fn read(base: Base, path: impl AsRef<Path>) -> io::Result<String> {
    let mut text = String::new();
    open(base, &path, OpenFlags::O_RDONLY)?.read_to_string(&mut text)?;
    Ok(text)
}

/// One write(2) of all of `data`, as procfs files want them.
pub(crate) fn write(base: Base, path: impl AsRef<Path>, data: &[u8]) -> io::Result<()> {
    write_all_once(open(base, &path, OpenFlags::O_WRONLY)?, data)
}

fn write_all_once(mut file: File, data: &[u8]) -> io::Result<()> {
    let n = file.write(data)?;
    if n != data.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, format!("short write: {n} of {} bytes", data.len())));
    }
    Ok(())
}

/// Whether `path` below `base` exists (and is reachable safely).
pub(crate) fn exists(base: Base, path: impl AsRef<Path>) -> bool {
    open(base, path, OpenFlags::O_PATH).is_ok()
}

pub(crate) fn readlink(base: Base, path: impl AsRef<Path>) -> io::Result<PathBuf> {
    let path = path.as_ref();
    handle()?.readlink(base.pathrs(), path).map_err(|e| io_error(base.describe(path), e))
}

/// Where the file `fd` is open on is, as /proc/self/fd/N says (fds are the
/// process's: no need for thread-self and the lookups it takes).
pub(crate) fn path_of(fd: BorrowedFd) -> io::Result<PathBuf> {
    readlink(Base::OwnProcess, format!("fd/{}", fd.as_raw_fd()))
}

/// Reopen what an O_PATH `fd` points at with real access `flags`, through
/// its fd link: no path lookup an image could redirect.
pub(crate) fn reopen(fd: BorrowedFd, flags: OpenFlags) -> io::Result<OwnedFd> {
    open_link(Base::ThreadSelf, format!("fd/{}", fd.as_raw_fd()), flags).map(OwnedFd::from)
}

/// A procfs of our own with the system-wide files (/proc/sys, /proc/devices):
/// the clone of /proc, or when that could not be had, an unmasked instance
/// held only while needed.
pub(crate) struct Global(ProcfsHandle);

impl Global {
    pub(crate) fn open() -> io::Result<Global> {
        let h = private_clone().or_else(|_| {
            ProcfsHandleBuilder::new()
                .unmasked()
                .build()
                .map_err(|e| io_error("open an unmasked procfs of our own".into(), e))
        })?;
        Ok(Global(h))
    }

    fn file(&self, path: &Path, flags: OpenFlags) -> io::Result<File> {
        self.0
            .open(ProcfsBase::ProcRoot, path, flags)
            .map_err(|e| io_error(format!("/proc/{}", path.display()), e))
    }

    pub(crate) fn read(&self, path: impl AsRef<Path>) -> io::Result<String> {
        let mut text = String::new();
        self.file(path.as_ref(), OpenFlags::O_RDONLY)?.read_to_string(&mut text)?;
        Ok(text)
    }

    pub(crate) fn write(&self, path: impl AsRef<Path>, data: &[u8]) -> io::Result<()> {
        write_all_once(self.file(path.as_ref(), OpenFlags::O_WRONLY)?, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_links_of_our_own_process() {
        let status = read(Base::OwnProcess, "status").unwrap();
        assert!(status.contains(&format!("Pid:\t{}", std::process::id())), "{status}");
        let exe = readlink(Base::OwnProcess, "exe").unwrap();
        assert_eq!(exe, std::env::current_exe().unwrap());
        let file = File::open("/dev/null").unwrap();
        use std::os::fd::AsFd;
        assert_eq!(path_of(file.as_fd()).unwrap(), Path::new("/dev/null"));
    }

    #[test]
    fn no_walk_out_of_procfs() {
        // `root` is a magic link to "/": never followed in the middle of a path.
        let err = read(Base::OwnProcess, "root/etc/passwd").unwrap_err();
        assert!(err.to_string().contains("/proc/self/root/etc/passwd"), "{err}");
        assert!(read(Base::OwnProcess, "../../etc/passwd").is_err());
    }

    #[test]
    fn system_files_only_through_the_unmasked_handle() {
        if !crate::test_support::have_root("an unmasked procfs needs CAP_SYS_ADMIN") {
            return;
        }
        let global = Global::open().unwrap();
        let last: u32 = global.read("sys/kernel/cap_last_cap").unwrap().trim().parse().unwrap();
        assert!(last >= 40, "{last}");
    }
}
