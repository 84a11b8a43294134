//! The seam between the container's filesystem logic (rootfs, mounts, /dev)
//! and the kernel: every call that changes the mount table or makes a node
//! goes through `Sys`, so that the logic is unit-tested without root by a
//! recorder (`init::rootfs` tests), while `Kernel` makes the real calls.
//!
//! The `*_fd` calls take both ends as open files and resolve no path at all
//! (the new mount API: open_tree, fsmount, move_mount): the mounts made once
//! the container's mounts exist — masks, read-only paths, the console —,
//! where any path, /proc/self/fd ones too, would be the container's to
//! redirect.

use crate::mount::RecursiveAttrs;
use crate::new_mount_api;
use nix::mount::{MntFlags, MsFlags};
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

pub(crate) trait Sys {
    fn mount(&self, source: Option<&Path>, target: &Path, fstype: Option<&str>, flags: MsFlags, data: Option<&str>)
        -> io::Result<()>;
    fn umount(&self, target: &Path, flags: MntFlags) -> io::Result<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    fn chroot(&self, path: &Path) -> io::Result<()>;
    fn chdir(&self, path: &Path) -> io::Result<()>;
    fn fchdir(&self, dir: BorrowedFd) -> io::Result<()>;
    /// The flags an existing mount has locked, which a bind remount must repeat.
    fn locked_flags(&self, path: &Path) -> MsFlags;
    fn mknodat(&self, dir: BorrowedFd, name: &CStr, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()>;
    fn fchownat(&self, dir: BorrowedFd, name: &CStr, uid: u32, gid: u32) -> io::Result<()>;
    fn symlinkat(&self, target: &CStr, dir: BorrowedFd, name: &CStr) -> io::Result<()>;
    fn unlinkat(&self, dir: BorrowedFd, name: &CStr) -> io::Result<()>;
    /// Bind what `source` is open on over what `target` is open on.
    fn bind_fd(&self, source: BorrowedFd, target: BorrowedFd, recursive: bool) -> io::Result<()>;
    /// Bind `target` read-only over itself. As a bind remount, only the top
    /// mount becomes read-only; the flags it has stay.
    fn bind_readonly_fd(&self, target: BorrowedFd) -> io::Result<()>;
    /// A fresh, empty, read-only tmpfs on `target`.
    fn empty_tmpfs_fd(&self, target: BorrowedFd) -> io::Result<()>;
    /// Set and clear MOUNT_ATTR_*s on the mount at `target` and every mount below it.
    fn set_tree_attrs(&self, target: &Path, attrs: RecursiveAttrs) -> io::Result<()>;
}

/// The real thing.
pub(crate) struct Kernel;

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Sys for Kernel {
    fn mount(&self, source: Option<&Path>, target: &Path, fstype: Option<&str>, flags: MsFlags, data: Option<&str>)
        -> io::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data).map_err(io::Error::from)
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> io::Result<()> {
        nix::mount::umount2(target, flags).map_err(io::Error::from)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        nix::unistd::pivot_root(new_root, put_old).map_err(io::Error::from)
    }

    fn chroot(&self, path: &Path) -> io::Result<()> {
        nix::unistd::chroot(path).map_err(io::Error::from)
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        nix::unistd::chdir(path).map_err(io::Error::from)
    }

    fn fchdir(&self, dir: BorrowedFd) -> io::Result<()> {
        nix::unistd::fchdir(dir).map_err(io::Error::from)
    }

    fn locked_flags(&self, path: &Path) -> MsFlags {
        crate::mount::locked_flags(path)
    }

    fn mknodat(&self, dir: BorrowedFd, name: &CStr, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
        // SAFETY: mknodat relative to a directory fd with a valid name.
        check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, dev) })
    }

    fn fchownat(&self, dir: BorrowedFd, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
        // SAFETY: as above; never follows a symlink the image may have put there.
        check(unsafe { libc::fchownat(dir.as_raw_fd(), name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })
    }

    fn symlinkat(&self, target: &CStr, dir: BorrowedFd, name: &CStr) -> io::Result<()> {
        // SAFETY: as above.
        check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
    }

    fn unlinkat(&self, dir: BorrowedFd, name: &CStr) -> io::Result<()> {
        // SAFETY: as above.
        check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) })
    }

    fn bind_fd(&self, source: BorrowedFd, target: BorrowedFd, recursive: bool) -> io::Result<()> {
        new_mount_api::attach_at(&new_mount_api::clone_tree_at(source, recursive)?, target)
    }

    fn bind_readonly_fd(&self, target: BorrowedFd) -> io::Result<()> {
        // The whole tree, as a recursive bind takes it; only its top read-only.
        let tree = new_mount_api::clone_tree_at(target, true)?;
        new_mount_api::set_attrs(&tree, new_mount_api::MOUNT_ATTR_RDONLY, false)?;
        new_mount_api::attach_at(&tree, target)
    }

    fn set_tree_attrs(&self, target: &Path, attrs: RecursiveAttrs) -> io::Result<()> {
        new_mount_api::set_tree_attrs(target, attrs.set, attrs.clear)
    }

    fn empty_tmpfs_fd(&self, target: BorrowedFd) -> io::Result<()> {
        let fs = new_mount_api::FsContext::open("tmpfs")?;
        // As mount(2) with MS_RDONLY makes it (a read-only superblock, named
        // tmpfs), so that mount tables read the same.
        fs.set("source", "tmpfs")?;
        fs.flag("ro")?;
        new_mount_api::attach_at(&fs.mount(new_mount_api::MOUNT_ATTR_RDONLY)?, target)
    }
}

/// A `Sys` that changes nothing and writes down every call, with paths made
/// readable: a /proc/self/fd link becomes the path it points at, and `root`
/// (a test's temp dir) becomes `<root>`.
#[cfg(test)]
pub(crate) mod recorder {
    use super::*;
    use std::cell::RefCell;
    use std::path::PathBuf;

    pub(crate) struct Recorder {
        root: PathBuf,
        pub calls: RefCell<Vec<String>>,
        /// mknod fails with EPERM, as in a user namespace.
        pub refuse_mknod: bool,
    }

    impl Recorder {
        pub(crate) fn new(root: &Path) -> Recorder {
            Recorder { root: root.to_path_buf(), calls: RefCell::new(Vec::new()), refuse_mknod: false }
        }

        fn show(&self, path: &Path) -> String {
            let real = if path.starts_with("/proc/self/fd") { std::fs::read_link(path).unwrap_or(path.into()) } else { path.into() };
            let text = real.display().to_string();
            text.replacen(&self.root.display().to_string(), "<root>", 1)
        }

        fn show_fd(&self, fd: BorrowedFd) -> String {
            self.show(Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())))
        }

        fn note(&self, call: String) -> io::Result<()> {
            self.calls.borrow_mut().push(call);
            Ok(())
        }

        pub(crate) fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }
    }

    impl Sys for Recorder {
        fn mount(&self, source: Option<&Path>, target: &Path, fstype: Option<&str>, flags: MsFlags, data: Option<&str>)
            -> io::Result<()> {
            let source = source.map_or("-".into(), |s| self.show(s));
            let flags = format!("{flags:?}").replace("MsFlags(", "").replace(')', "");
            self.note(format!("mount {source} {} {} {flags} {}", self.show(target), fstype.unwrap_or("-"), data.unwrap_or("-")))
        }

        fn umount(&self, target: &Path, flags: MntFlags) -> io::Result<()> {
            self.note(format!("umount {} {flags:?}", self.show(target)))
        }

        fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
            self.note(format!("pivot_root {} {}", new_root.display(), put_old.display()))
        }

        fn chroot(&self, path: &Path) -> io::Result<()> {
            self.note(format!("chroot {}", path.display()))
        }

        fn chdir(&self, path: &Path) -> io::Result<()> {
            self.note(format!("chdir {}", path.display()))
        }

        fn fchdir(&self, dir: BorrowedFd) -> io::Result<()> {
            self.note(format!("fchdir {}", self.show_fd(dir)))
        }

        fn locked_flags(&self, _path: &Path) -> MsFlags {
            MsFlags::empty()
        }

        fn mknodat(&self, dir: BorrowedFd, name: &CStr, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
            if self.refuse_mknod {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            let (major, minor) = (libc::major(dev), libc::minor(dev));
            self.note(format!("mknod {}/{} {mode:o} {major}:{minor}", self.show_fd(dir), name.to_string_lossy()))
        }

        fn fchownat(&self, dir: BorrowedFd, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
            self.note(format!("chown {}/{} {uid}:{gid}", self.show_fd(dir), name.to_string_lossy()))
        }

        fn symlinkat(&self, target: &CStr, dir: BorrowedFd, name: &CStr) -> io::Result<()> {
            self.note(format!("symlink {}/{} -> {}", self.show_fd(dir), name.to_string_lossy(), target.to_string_lossy()))
        }

        fn unlinkat(&self, dir: BorrowedFd, name: &CStr) -> io::Result<()> {
            self.note(format!("unlink {}/{}", self.show_fd(dir), name.to_string_lossy()))
        }

        fn bind_fd(&self, source: BorrowedFd, target: BorrowedFd, recursive: bool) -> io::Result<()> {
            let rec = if recursive { " recursive" } else { "" };
            self.note(format!("bind_fd {} {}{rec}", self.show_fd(source), self.show_fd(target)))
        }

        fn bind_readonly_fd(&self, target: BorrowedFd) -> io::Result<()> {
            self.note(format!("bind_readonly_fd {}", self.show_fd(target)))
        }

        fn empty_tmpfs_fd(&self, target: BorrowedFd) -> io::Result<()> {
            self.note(format!("empty_tmpfs_fd {}", self.show_fd(target)))
        }

        fn set_tree_attrs(&self, target: &Path, attrs: RecursiveAttrs) -> io::Result<()> {
            self.note(format!("set_tree_attrs {} set {:#x} clear {:#x}", self.show(target), attrs.set, attrs.clear))
        }
    }
}
