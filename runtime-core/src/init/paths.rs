//! Resolving paths inside the container's rootfs without ever leaving it.
//!
//! Every mount target and device node is opened with openat2(RESOLVE_IN_ROOT):
//! symlinks and ".." in the image are resolved as if the rootfs were "/", so a
//! hostile image cannot redirect a mount onto the host (the CVE-2021-30465
//! class). The spec's mounts then go through /proc/self/fd/N of the resolved
//! fd, so no path is resolved twice; that /proc is the host's, in init's own
//! copy of the host's mount namespace, before pivot_root: no container
//! process can reach or change it. After pivot_root nothing is mounted by
//! path (`Sys::*_fd`).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// What to create when the last component is missing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Leaf {
    Dir,
    File,
}

fn c(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

fn openat2_in_root(root: BorrowedFd, rel: &Path, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    openat2(root, rel, flags, mode, libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS)
}

fn openat2(root: BorrowedFd, rel: &Path, flags: i32, mode: u32, resolve: u64) -> io::Result<OwnedFd> {
    let path = c(if rel.as_os_str().is_empty() { Path::new(".") } else { rel })?;
    // SAFETY: open_how is plain data; zeroed is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = mode as u64;
    how.resolve = resolve;
    // SAFETY: valid pointers for the duration of the call; the fd is owned at once.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The process's root (the container's, once pivoted or joined), by fd: what
/// paths are resolved in once the container's mounts exist.
pub(super) fn open_process_root() -> io::Result<OwnedFd> {
    std::fs::File::open("/").map(OwnedFd::from)
}

/// Relative form of a container path ("/dev/pts" -> "dev/pts").
pub(super) fn relative(path: &Path) -> PathBuf {
    path.components().filter(|c| !matches!(c, Component::RootDir | Component::CurDir)).collect()
}

/// Open `path` (a container path) inside `root` as an O_PATH fd.
pub(super) fn open_in_root(root: BorrowedFd, path: &Path) -> io::Result<OwnedFd> {
    openat2_in_root(root, &relative(path), libc::O_PATH, 0)
}

/// Open `path` inside `root` as an O_PATH fd, failing (ELOOP) on any symlink.
pub(super) fn open_in_root_no_symlinks(root: BorrowedFd, path: &Path) -> io::Result<OwnedFd> {
    let resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_SYMLINKS;
    openat2(root, &relative(path), libc::O_PATH | libc::O_NOFOLLOW, 0, resolve)
}

/// The entry `name` of directory `dir` itself, as an O_PATH fd (a symlink is
/// opened, not followed), created as `leaf` when missing.
pub(super) fn open_or_create_at(dir: BorrowedFd, name: &str, leaf: Leaf, mode: u32) -> io::Result<OwnedFd> {
    let name = c(Path::new(name))?;
    // SAFETY: *at calls relative to a directory fd we hold, with a valid name;
    // a returned fd is owned at once.
    let entry = || {
        let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) };
        if fd < 0 { Err(io::Error::last_os_error()) } else { Ok(unsafe { OwnedFd::from_raw_fd(fd) }) }
    };
    match entry() {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        other => return other,
    }
    let ret = unsafe {
        match leaf {
            Leaf::File => {
                let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
                let fd = libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode);
                if fd >= 0 {
                    libc::close(fd);
                }
                fd
            }
            Leaf::Dir => libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode),
        }
    };
    if ret < 0 {
        let e = io::Error::last_os_error();
        // EEXIST: someone made it meanwhile; open what is there.
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    entry()
}

/// Open `path` inside `root`, creating missing directories (and the leaf as
/// `leaf`) on the way, each inside the root. A dangling symlink on the way gets
/// its target created, resolved inside the root.
pub(super) fn create_in_root(root: BorrowedFd, path: &Path, leaf: Leaf, mode: u32) -> io::Result<OwnedFd> {
    create_in_root_depth(root, path, leaf, mode, 0)
}

/// Links followed while creating, as the kernel's own limit.
const MAX_LINKS: u32 = 40;

fn create_in_root_depth(root: BorrowedFd, path: &Path, leaf: Leaf, mode: u32, depth: u32) -> io::Result<OwnedFd> {
    if depth > MAX_LINKS {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    let rel = relative(path);
    match open_in_root(root, &rel) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        other => return other,
    }
    let parts: Vec<Component> = rel.components().collect();
    let mut cur = PathBuf::new();
    for (i, part) in parts.iter().enumerate() {
        let parent = open_in_root(root, &cur)?;
        cur.push(part);
        match open_in_root(root, &cur) {
            Ok(_) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        let name = c(Path::new(part.as_os_str()))?;
        let last = i + 1 == parts.len();
        // SAFETY: *at calls relative to a directory fd we hold, valid name.
        let ret = unsafe {
            if last && leaf == Leaf::File {
                let fd = libc::openat(
                    parent.as_raw_fd(),
                    name.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    mode,
                );
                if fd >= 0 {
                    libc::close(fd);
                }
                fd
            } else {
                libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), if last { mode } else { 0o755 })
            }
        };
        if ret < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
            // It exists but did not open: a symlink to something missing.
            let target = std::fs::read_link(fd_path(&parent).join(part.as_os_str()))?;
            let target = if target.is_absolute() { target } else { cur.parent().unwrap_or(Path::new("")).join(target) };
            let kind = if last { leaf } else { Leaf::Dir };
            create_in_root_depth(root, &target, kind, mode, depth + 1)?;
        }
    }
    open_in_root(root, &rel)
}

/// The path under which mount(2) and friends reach an fd.
pub(super) fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::symlink;

    struct TempRoot(PathBuf);
    impl TempRoot {
        fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!("ferrum-paths-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempRoot(p)
        }
        fn fd(&self) -> OwnedFd {
            std::fs::File::open(&self.0).unwrap().into()
        }
    }
    impl Drop for TempRoot {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn absolute_symlink_stays_inside_root() {
        let root = TempRoot::new("abs");
        // /evil -> /tmp (host /tmp) must resolve to <root>/tmp.
        symlink("/tmp", root.0.join("evil")).unwrap();
        let fd = create_in_root(root.fd().as_fd(), Path::new("/evil/x"), Leaf::Dir, 0o755).unwrap();
        let real = std::fs::read_link(fd_path(&fd)).unwrap();
        assert_eq!(real, root.0.join("tmp/x"));
    }

    #[test]
    fn dotdot_is_clamped_to_root() {
        let root = TempRoot::new("dotdot");
        let fd = create_in_root(root.fd().as_fd(), Path::new("/../../etc/y"), Leaf::File, 0o644).unwrap();
        let real = std::fs::read_link(fd_path(&fd)).unwrap();
        assert_eq!(real, root.0.join("etc/y"));
        assert!(root.0.join("etc/y").is_file());
    }

    #[test]
    fn existing_paths_are_opened_not_recreated() {
        let root = TempRoot::new("exist");
        std::fs::create_dir_all(root.0.join("a/b")).unwrap();
        let fd = create_in_root(root.fd().as_fd(), Path::new("/a/b"), Leaf::File, 0o644).unwrap();
        assert_eq!(std::fs::read_link(fd_path(&fd)).unwrap(), root.0.join("a/b"));
    }
}
