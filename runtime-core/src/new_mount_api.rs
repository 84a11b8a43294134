//! Thin wrappers over Linux's new mount API (fsopen/fsconfig/fsmount/
//! move_mount), which libc does not wrap. Used where mount(2) cannot do the
//! job: detached mounts (init_exe) and overlays whose options exceed a page.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

// linux/mount.h
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
pub(crate) const MOUNT_ATTR_RDONLY: libc::c_uint = 0x1;
const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
const MOUNT_ATTR_NOEXEC: libc::c_uint = 0x8;

/// The MOUNT_ATTR_* of a detached mount for these mount(2) flags.
pub(crate) fn mount_attrs(flags: nix::mount::MsFlags) -> libc::c_uint {
    use nix::mount::MsFlags as F;
    [(F::MS_RDONLY, MOUNT_ATTR_RDONLY), (F::MS_NOSUID, MOUNT_ATTR_NOSUID), (F::MS_NODEV, MOUNT_ATTR_NODEV), (F::MS_NOEXEC, MOUNT_ATTR_NOEXEC)]
        .into_iter()
        .filter(|(flag, _)| flags.contains(*flag))
        .fold(0, |attrs, (_, attr)| attrs | attr)
}
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A filesystem context being configured.
pub(crate) struct FsContext(OwnedFd);

impl FsContext {
    pub(crate) fn open(fstype: &str) -> io::Result<FsContext> {
        let name = cstr(fstype)?;
        // SAFETY: fsopen with a valid name; the fd is owned at once.
        let fd = check(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) })?;
        Ok(FsContext(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
    }

    fn config(&self, cmd: libc::c_uint, key: Option<&str>, value: Option<&str>) -> io::Result<()> {
        let key = key.map(cstr).transpose()?;
        let value = value.map(cstr).transpose()?;
        let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        // SAFETY: fsconfig with NUL-terminated strings or nulls, as the command wants.
        check(unsafe { libc::syscall(libc::SYS_fsconfig, self.0.as_raw_fd(), cmd, ptr(&key), ptr(&value), 0) })
            .map(drop)
            .map_err(|e| io::Error::new(e.kind(), format!("fsconfig {}: {e}", key.as_ref().map_or("create".into(), |k| k.to_string_lossy()))))
    }

    pub(crate) fn set(&self, key: &str, value: &str) -> io::Result<()> {
        self.config(FSCONFIG_SET_STRING, Some(key), Some(value))
    }

    pub(crate) fn flag(&self, key: &str) -> io::Result<()> {
        self.config(FSCONFIG_SET_FLAG, Some(key), None)
    }

    /// Create the filesystem and a detached mount of it.
    pub(crate) fn mount(self, attrs: libc::c_uint) -> io::Result<OwnedFd> {
        self.config(FSCONFIG_CMD_CREATE, None, None)?;
        // SAFETY: fsmount on our context; the fd is owned at once.
        let fd = check(unsafe { libc::syscall(libc::SYS_fsmount, self.0.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) })?;
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }
}

/// Attach a detached mount at `target`.
pub(crate) fn attach(mount: &OwnedFd, target: &Path) -> io::Result<()> {
    let empty = cstr("")?;
    let target = cstr(&target.to_string_lossy())?;
    // SAFETY: move_mount from our mount fd to a NUL-terminated path.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map(drop)
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// Attach a detached mount on the file or directory `target` is open on (a
/// /proc/self/fd path would not do: move_mount does not follow its last link).
pub(crate) fn attach_at(mount: &OwnedFd, target: BorrowedFd) -> io::Result<()> {
    let empty = cstr("")?;
    // SAFETY: move_mount between two fds we own, with empty paths.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
    .map(drop)
}
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// A detached copy of the mount tree at `path` (the whole subtree with
/// `recursive`), as a bind mount would take it.
pub(crate) fn clone_tree(path: &Path, recursive: bool) -> io::Result<OwnedFd> {
    open_tree(libc::AT_FDCWD, &cstr(&path.to_string_lossy())?, 0, recursive)
}

/// `clone_tree` of what `fd` is open on: no path is resolved.
pub(crate) fn clone_tree_at(fd: BorrowedFd, recursive: bool) -> io::Result<OwnedFd> {
    open_tree(fd.as_raw_fd(), &cstr("")?, libc::AT_EMPTY_PATH as libc::c_uint, recursive)
}

fn open_tree(dirfd: RawFd, path: &CString, flags: libc::c_uint, recursive: bool) -> io::Result<OwnedFd> {
    let recursive = if recursive { libc::AT_RECURSIVE as libc::c_uint } else { 0 };
    let flags = flags | OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | recursive;
    // SAFETY: open_tree with a NUL-terminated path; the fd is owned at once.
    let fd = check(unsafe { libc::syscall(libc::SYS_open_tree, dirfd, path.as_ptr(), flags) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `struct mount_attr` of linux/mount.h.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Make a detached mount idmapped through `userns` and give it `attrs`
/// (MOUNT_ATTR_RDONLY…), on the whole tree with `recursive`.
pub(crate) fn set_idmap(mount: &OwnedFd, userns: &OwnedFd, attrs: libc::c_uint, recursive: bool) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | attrs as u64,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    set_attr(mount, &attr, recursive)
}

/// Set and clear MOUNT_ATTR_*s on the mount at `path` and every mount below it.
pub(crate) fn set_tree_attrs(path: &Path, set: u64, clear: u64) -> io::Result<()> {
    let attr = MountAttr { attr_set: set, attr_clr: clear, propagation: 0, userns_fd: 0 };
    mount_setattr(libc::AT_FDCWD, &cstr(&path.to_string_lossy())?, libc::AT_RECURSIVE, &attr)
}

/// Give a mount `attrs` (MOUNT_ATTR_RDONLY…), on the whole tree with `recursive`.
pub(crate) fn set_attrs(mount: &OwnedFd, attrs: libc::c_uint, recursive: bool) -> io::Result<()> {
    set_attr(mount, &MountAttr { attr_set: attrs as u64, attr_clr: 0, propagation: 0, userns_fd: 0 }, recursive)
}

fn set_attr(mount: &OwnedFd, attr: &MountAttr, recursive: bool) -> io::Result<()> {
    let flags = libc::AT_EMPTY_PATH | if recursive { libc::AT_RECURSIVE } else { 0 };
    mount_setattr(mount.as_raw_fd(), &cstr("")?, flags, attr)
}

fn mount_setattr(dirfd: RawFd, path: &CString, flags: libc::c_int, attr: &MountAttr) -> io::Result<()> {
    // SAFETY: mount_setattr with a NUL-terminated path and a struct of the declared size.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            path.as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}
