//! The executable a container's init runs from.
//!
//! A container must never be able to write to the runtime binary through
//! `/proc/<pid>/exe` (CVE-2019-5736). The init is our own binary until it
//! `execve`s the user process, so it is started from a view of the executable
//! that cannot be written:
//!
//! 1. preferred: a *detached* overlayfs mount whose layers are the directory
//!    holding our binary and an empty directory (overlayfs wants two lower
//!    layers when there is no upper one). It has no upper layer, so the filesystem itself is
//!    read-only (a clone of the mount stays read-only too), it is attached to no
//!    mount namespace (nothing shows up in mountinfo, nothing to clean up), and it
//!    costs a few syscalls and no memory;
//! 2. fallback: a sealed memfd copy (costs the binary's size in memory).
//!
//! Either way the fd is made once per process and reused for every container.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::new_mount_api::{FsContext, MOUNT_ATTR_RDONLY};
use std::sync::OnceLock;

static INIT_EXE: OnceLock<OwnedFd> = OnceLock::new();

/// The fd to `execveat(fd, "", AT_EMPTY_PATH)` for a container's init.
pub(crate) fn init_exe() -> io::Result<RawFd> {
    if let Some(fd) = INIT_EXE.get() {
        return Ok(fd.as_raw_fd());
    }
    let exe = crate::procfs::readlink(crate::procfs::Base::OwnProcess, "exe")?;
    // spawn copies it above the fds its child dup2s onto before using it.
    let fd = detached_readonly_view(&exe).or_else(|_| sealed_copy(&exe))?;
    Ok(INIT_EXE.get_or_init(|| fd).as_raw_fd())
}

fn detached_readonly_view(exe: &Path) -> io::Result<OwnedFd> {
    let dir = exe.parent().ok_or_else(|| io::Error::other("executable has no directory"))?;
    let name = exe.file_name().ok_or_else(|| io::Error::other("executable has no name"))?;
    // The empty second layer, made for the moment: the mount keeps what it
    // needs of it, so nothing stays on disk. Layers must not overlap, so it
    // cannot be "/" (or a directory holding our binary).
    let empty = std::env::temp_dir().join(format!("ferrum-empty-layer.{}", std::process::id()));
    std::fs::create_dir(&empty)?;
    let mounted = FsContext::open("overlay").and_then(|fs| {
        fs.set("lowerdir", &format!("{}:{}", dir.display(), empty.display()))?;
        fs.mount(MOUNT_ATTR_RDONLY)
    });
    let _ = std::fs::remove_dir(&empty);
    let mnt = mounted?;
    let name = CString::new(name.as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: openat relative to the mount fd; the file fd is owned at once.
    let file = unsafe { libc::openat(mnt.as_raw_fd(), name.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if file < 0 {
        return Err(io::Error::last_os_error());
    }
    // The open file pins the detached mount; the mount fd itself can go.
    Ok(unsafe { OwnedFd::from_raw_fd(file) })
}

const MFD_EXEC: libc::c_uint = 0x10;

fn sealed_copy(exe: &Path) -> io::Result<OwnedFd> {
    let name = CString::new("ferrum-init").expect("static");
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: memfd_create with a valid name; the fd is owned at once.
    let fd = unsafe {
        let mut fd = libc::memfd_create(name.as_ptr(), flags | MFD_EXEC);
        if fd < 0 {
            // Kernels before 6.3 do not know MFD_EXEC and make memfds executable anyway.
            fd = libc::memfd_create(name.as_ptr(), flags);
        }
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        OwnedFd::from_raw_fd(fd)
    };
    let mut copy = File::from(fd);
    io::copy(&mut File::open(exe)?, &mut copy)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on an fd we own.
    if unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(copy.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::Write;

    fn assert_unwritable(fd: &OwnedFd) {
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        match std::fs::OpenOptions::new().write(true).open(&path) {
            Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}"),
            // A sealed memfd opens for writing but refuses every write.
            Ok(mut f) => assert!(f.write_all(b"x").is_err(), "wrote to the init executable"),
        }
    }

    #[test]
    fn overlay_view_is_read_only() {
        if !crate::test_support::have_root("the overlay view needs CAP_SYS_ADMIN") {
            return;
        }
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_unwritable(&detached_readonly_view(&exe).unwrap());
    }

    #[test]
    fn sealed_copy_is_read_only() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert_unwritable(&sealed_copy(&exe).unwrap());
    }
}
