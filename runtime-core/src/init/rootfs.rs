//! The container's filesystem view: the spec's mounts inside the rootfs,
//! /dev, pivot_root, masked and read-only paths, a read-only root.

use super::destination::{self, Planned};
use super::paths::{create_in_root, fd_path, open_in_root, open_process_root, Leaf};
use super::{devices, Describe, Result};
use crate::mount::{finish_mount, mount_with, MountOptions, MountTarget};
use crate::namespaces::Namespaces;
use crate::protocol::CreateRequest;
use crate::sys::Sys;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::fstat;
use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// The rootfs layers first when they are ours to mount (`create.layers`, see
/// container/layers.rs), then the spec's mounts and /dev; `before_pivot` runs
/// once those are in place, while the host's root is still reachable (the
/// hooks' moment).
pub(super) fn setup(
    sys: &dyn Sys,
    create: &CreateRequest,
    ns: &Namespaces,
    detached: &HashMap<usize, OwnedFd>,
    before_pivot: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let CreateRequest { spec, rootfs, .. } = create;
    let propagation = rootfs_propagation(spec)?;
    // Our mounts must not propagate back to the host: make the whole tree a
    // slave (or what the spec asks) before touching anything.
    let base = propagation.unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    sys.mount(None, Path::new("/"), None, base, None).describe(|| "make / a slave mount".into())?;
    if !create.layers.is_empty() {
        // Ours to mount (container/layers.rs), where only we see them.
        crate::mount::mount_rootfs(&create.bundle, &create.layers).map_err(|e| e.to_string())?;
    }
    if base.contains(MsFlags::MS_SHARED) {
        // pivot_root refuses a new root that is, or sits on, a shared mount
        // (rshared: Kubernetes' Bidirectional mounts). As runc, the mount
        // holding the rootfs becomes private; the volumes keep their own
        // propagation, and the new root gets the spec's after the pivot.
        let holder = mount_holding(rootfs).describe(|| format!("find the mount holding {}", rootfs.display()))?;
        sys.mount(None, &fd_path(&holder), None, MsFlags::MS_PRIVATE, None)
            .describe(|| format!("make the mount holding {} private", rootfs.display()))?;
    }
    // pivot_root needs the new root to be a mount point.
    sys.mount(Some(rootfs), rootfs, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)
        .describe(|| format!("bind rootfs {}", rootfs.display()))?;
    let root: OwnedFd = std::fs::File::open(rootfs).describe(|| format!("open rootfs {}", rootfs.display()))?.into();
    // Where the root really is: mount targets are judged by where they resolve in it.
    let root = Root { path: crate::procfs::path_of(root.as_fd()).describe(|| "find the rootfs".into())?, fd: root };

    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        match detached.get(&i) {
            Some(mount) if m.uid_mappings().is_some() => attach_idmapped(&root, i, m, mount)?,
            source => mount_one(sys, &root, i, m, ns, source)?,
        }
    }
    if !dev_is_bind_mounted(spec) {
        devices::setup(sys, &root.fd, spec, ns)?;
    }
    before_pivot()?;
    if create.setup.no_pivot_root {
        move_root(sys, &root.fd)?;
    } else {
        pivot(sys, &root.fd)?;
    }
    if let Some(p) = propagation {
        sys.mount(None, Path::new("/"), None, p, None).describe(|| "set rootfsPropagation".into())?;
    }
    Ok(())
}

/// After `setup` and the sysctls (as runc): masked and read-only paths, then
/// the read-only root. Every target is opened inside `root` (the container's,
/// pivoted to) and mounted on by fd (`Sys::*_fd`), with no path resolved twice.
pub(super) fn protect(sys: &dyn Sys, spec: &Spec, root: &OwnedFd) -> Result<()> {
    // Read-only first, then masks (as runc): a mask inside a read-only path
    // then sits on top of it, and the mount tables are the same.
    if let Some(linux) = spec.linux() {
        for p in linux.readonly_paths().iter().flatten() {
            make_readonly(sys, root, Path::new(p))?;
        }
        let mut null = None;
        for p in linux.masked_paths().iter().flatten() {
            mask(sys, root, Path::new(p), &mut null)?;
        }
    }
    if spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false) {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | sys.locked_flags(Path::new("/"));
        sys.mount(None, Path::new("/"), None, flags, None).describe(|| "make rootfs read-only".into())?;
    }
    Ok(())
}

/// The root of the mount `path` is on (`path` itself when it is a mount
/// point): where a walk up with ".." first changes mounts.
fn mount_holding(path: &Path) -> std::io::Result<OwnedFd> {
    let mut dir: OwnedFd = std::fs::File::open(path)?.into();
    loop {
        let up = openat_dir(dir.as_fd(), "..")?;
        let (here, above) = (mount_id(dir.as_fd())?, mount_id(up.as_fd())?);
        let same_dir = fstat(&up)?.st_ino == fstat(&dir)?.st_ino && here == above;
        if here != above || same_dir {
            return Ok(dir);
        }
        dir = up;
    }
}

fn openat_dir(dir: std::os::fd::BorrowedFd, name: &str) -> std::io::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    nix::fcntl::openat(dir, name, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
        .map_err(std::io::Error::from)
}

/// statx's mount id of what `fd` is open on.
fn mount_id(fd: std::os::fd::BorrowedFd) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    // SAFETY: statx into a zeroed struct we own, on an fd we hold.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    let ret = unsafe { libc::statx(fd.as_raw_fd(), c"".as_ptr(), libc::AT_EMPTY_PATH, libc::STATX_MNT_ID, &mut st) };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.stx_mnt_id)
}

fn rootfs_propagation(spec: &Spec) -> Result<Option<MsFlags>> {
    let Some(p) = spec.linux().as_ref().and_then(|l| l.rootfs_propagation().clone()) else {
        return Ok(None);
    };
    let opts = MountOptions::parse(&[p.as_str()]);
    match opts.propagation.as_slice() {
        [one] => Ok(Some(*one)),
        _ => Err(format!("linux.rootfsPropagation {p:?} is not a propagation mode")),
    }
}

fn dev_is_bind_mounted(spec: &Spec) -> bool {
    spec.mounts().iter().flatten().any(|m| {
        m.destination() == Path::new("/dev") && MountOptions::parse(m.options().as_deref().unwrap_or(&[])).is_bind()
    })
}

/// The rootfs, open, and where it is on the host.
struct Root {
    fd: OwnedFd,
    path: std::path::PathBuf,
}

impl Root {
    /// Create (when missing) and open `m`'s destination, and refuse it unless
    /// `destination::check` allows a mount of `typ` there.
    fn target(&self, index: usize, m: &Mount, typ: &str, leaf: Leaf, bind_source: Option<&Path>) -> Result<OwnedFd> {
        let dest = m.destination();
        let describe = |e: &dyn std::fmt::Display| format!("mounts[{index}] ({typ} on {}): {e}", dest.display());
        let target = create_in_root(self.fd.as_fd(), dest, leaf, 0o755).map_err(|e| describe(&e))?;
        let source = match bind_source {
            Some(path) => {
                let flags = nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC;
                Some(nix::fcntl::open(path, flags, nix::sys::stat::Mode::empty()).map_err(|e| describe(&e))?)
            }
            None => None,
        };
        let planned = Planned { index, typ, destination: dest, bind_source: source.as_ref().map(|s| s.as_fd()) };
        destination::check(&planned, self.fd.as_fd(), &self.path, target.as_fd())?;
        Ok(target)
    }
}

/// `detached`: a bind source the parent cloned (see `idmap::prepare`), attached
/// in place of binding the path.
fn mount_one(sys: &dyn Sys, root: &Root, index: usize, m: &Mount, ns: &Namespaces, detached: Option<&OwnedFd>) -> Result<()> {
    let dest = m.destination();
    let spec_typ = m.typ().clone().unwrap_or_else(|| "none".into());
    let mut typ = spec_typ.clone();
    let mut opts = MountOptions::parse(m.options().as_deref().unwrap_or(&[]));
    let describe = |e: &dyn std::fmt::Display| {
        format!("mount {spec_typ} on {} (options {:?}): {e}", dest.display(), m.options().as_deref().unwrap_or(&[]))
    };
    if typ == "bind" {
        opts.flags |= MsFlags::MS_BIND;
    }
    match typ.as_str() {
        "cgroup" if crate::cgroup::is_pure_v2() => typ = "cgroup2".into(),
        "cgroup" => {
            root.target(index, m, &spec_typ, Leaf::Dir, None)?;
            return mount_cgroup_v1(sys, &root.fd, dest, &opts, ns).map_err(|e| describe(&e));
        }
        // In the host's network namespace, /sys would expose the host's network
        // devices writable: runc makes it read-only, and so do we. A joined one
        // (a pod's) is not the host's: a privileged pod container gets /sys rw.
        "sysfs" if !ns.has(LinuxNamespaceType::Network) => opts.flags |= MsFlags::MS_RDONLY,
        _ => {}
    }
    let mut source = m.source().clone().unwrap_or_else(|| typ.clone().into());
    if let Some(tree) = detached {
        source = fd_path(tree);
    }
    let leaf = if opts.is_bind() && !source.is_dir() { Leaf::File } else { Leaf::Dir };
    if opts.is_bind() && !source.exists() {
        return Err(describe(&format!("bind source {} does not exist", source.display())));
    }
    let target = root.target(index, m, &spec_typ, leaf, opts.is_bind().then_some(source.as_path()))?;
    let reopen = || {
        let fd = open_in_root(root.fd.as_fd(), dest)?;
        Ok(MountTarget { path: fd_path(&fd), _fd: Some(fd) })
    };
    match detached {
        Some(tree) => crate::new_mount_api::attach_at(tree, target.as_fd())
            .and_then(|()| finish_mount(sys, &opts, &reopen))
            .map_err(|e| describe(&e)),
        None => mount_with(sys, &typ, &source, &fd_path(&target), &opts, &reopen)
            .or_else(|e| match e.raw_os_error() {
                Some(libc::EPERM) if typ == "sysfs" && crate::rootless::in_user_namespace() => {
                    host_sysfs(sys, &fd_path(&target), &opts, &reopen)
                }
                _ => Err(e),
            })
            .map_err(|e| describe(&e)),
    }
}

/// A user namespace may mount a sysfs only with a network namespace it owns:
/// a rootless container on the host's network gets the host's /sys bound
/// instead, as with runc, read-only all the way down when asked (the
/// submounts of /sys, cgroups and securityfs among them, included).
fn host_sysfs(
    sys: &dyn Sys,
    target: &Path,
    opts: &MountOptions,
    reopen: &dyn Fn() -> std::io::Result<MountTarget>,
) -> std::io::Result<()> {
    let mut bind = opts.clone();
    bind.flags |= MsFlags::MS_BIND | MsFlags::MS_REC;
    if opts.flags.contains(MsFlags::MS_RDONLY) {
        bind.recursive.set |= crate::mount::ATTR_RDONLY;
    }
    mount_with(sys, "none", Path::new("/sys"), target, &bind, reopen)
}

/// An idmapped bind mount the parent made: attach it at its destination.
fn attach_idmapped(root: &Root, index: usize, m: &Mount, mount: &OwnedFd) -> Result<()> {
    let dest = m.destination();
    let describe = |e: &dyn std::fmt::Display| format!("idmapped mount on {}: {e}", dest.display());
    let is_dir = m.source().as_ref().is_none_or(|s| s.is_dir());
    let target = root.target(index, m, "idmapped bind", if is_dir { Leaf::Dir } else { Leaf::File }, None)?;
    crate::new_mount_api::attach_at(mount, target.as_fd()).map_err(|e| describe(&e))
}

/// A `cgroup` mount on a v1 or hybrid host (as runc): a tmpfs holding one entry
/// per v1 hierarchy. With a cgroup namespace of its own the container gets fresh
/// cgroup mounts (the kernel roots them at its cgroup); without, bind mounts of
/// its own cgroup directories, so it never sees the host's tree.
fn mount_cgroup_v1(
    sys: &dyn Sys,
    root: &OwnedFd,
    dest: &Path,
    opts: &MountOptions,
    ns: &Namespaces,
) -> std::io::Result<()> {
    // A hybrid host's cgroup2 `unified` hierarchy stays out, as with runc.
    let hierarchies: Vec<_> =
        crate::cgroup::visible_hierarchies()?.into_iter().filter(|h| h.fstype != "cgroup2").collect();
    let base = create_in_root(root.as_fd(), dest, Leaf::Dir, 0o755)?;
    let tmpfs_flags = opts.flags & !MsFlags::MS_RDONLY;
    sys.mount(Some(Path::new("tmpfs")), &fd_path(&base), Some("tmpfs"), tmpfs_flags, Some("mode=755"))?;
    let flags = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
    for h in &hierarchies {
        let sub = create_in_root(root.as_fd(), &dest.join(&h.name), Leaf::Dir, 0o755)?;
        let target = fd_path(&sub);
        if ns.has(LinuxNamespaceType::Cgroup) {
            sys.mount(Some(Path::new("cgroup")), &target, Some(h.fstype), flags, Some(h.data.as_str()))?;
        } else {
            let reopen = || {
                let fd = open_in_root(root.as_fd(), &dest.join(&h.name))?;
                Ok(MountTarget { path: fd_path(&fd), _fd: Some(fd) })
            };
            let bind = MountOptions { flags: flags | MsFlags::MS_BIND | MsFlags::MS_REC, ..Default::default() };
            mount_with(sys, "none", &h.own_dir, &target, &bind, &reopen)?;
        }
    }
    if opts.flags.contains(MsFlags::MS_RDONLY) {
        let top = open_in_root(root.as_fd(), dest)?;
        let remount = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | tmpfs_flags;
        sys.mount(None, &fd_path(&top), None, remount, Some("mode=755"))?;
    }
    Ok(())
}

/// pivot_root(".", ".") stacks the old root on top of the new one; unmounting
/// it from there drops it, with no directory needed for the old root.
fn pivot(sys: &dyn Sys, root: &OwnedFd) -> Result<()> {
    let here = Path::new(".");
    let old_root = open_process_root().describe(|| "open the old root".into())?;
    sys.fchdir(root.as_fd()).describe(|| "chdir to rootfs".into())?;
    sys.pivot_root(here, here).describe(|| "pivot_root".into())?;
    // Into the old root (as runc): "." from the new root's top would be the
    // new root itself to mount(2), and making *that* a slave would cut a
    // Bidirectional volume off from the host's peers.
    sys.fchdir(old_root.as_fd()).describe(|| "chdir to the old root".into())?;
    // The old root must not propagate its unmount to the host.
    sys.mount(None, here, None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None).describe(|| "make old root a slave".into())?;
    sys.umount(here, MntFlags::MNT_DETACH).describe(|| "unmount old root".into())?;
    sys.chdir(Path::new("/")).describe(|| "chdir /".into())
}

/// runc's NoPivotRoot: move the rootfs mount onto / and chroot into it.
fn move_root(sys: &dyn Sys, root: &OwnedFd) -> Result<()> {
    let here = Path::new(".");
    sys.fchdir(root.as_fd()).describe(|| "chdir to rootfs".into())?;
    sys.mount(Some(here), Path::new("/"), None, MsFlags::MS_MOVE, None).describe(|| "move rootfs onto /".into())?;
    sys.chroot(here).describe(|| "chroot into rootfs".into())?;
    sys.chdir(Path::new("/")).describe(|| "chdir /".into())
}

/// `path` opened inside `root`, or None when it does not exist (a path the
/// spec protects need not exist, as with runc).
fn existing(root: &OwnedFd, path: &Path, what: impl Fn() -> String) -> Result<Option<OwnedFd>> {
    match open_in_root(root.as_fd(), path) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(format!("{}: {e}", what())),
    }
}

/// Hide a path: the container's /dev/null bound over files, an empty
/// read-only tmpfs over directories. `null` keeps /dev/null once opened.
fn mask(sys: &dyn Sys, root: &OwnedFd, path: &Path, null: &mut Option<OwnedFd>) -> Result<()> {
    let what = || format!("mask {}", path.display());
    let Some(target) = existing(root, path, what)? else { return Ok(()) };
    if fstat(&target).describe(what)?.st_mode & libc::S_IFMT == libc::S_IFDIR {
        return sys.empty_tmpfs_fd(target.as_fd()).describe(|| format!("{} with an empty tmpfs", what()));
    }
    let null = match null {
        Some(fd) => fd,
        None => null.insert(dev_null(root)?),
    };
    // (Gone since it was checked, it fails here: ENOENT.)
    sys.bind_fd(null.as_fd(), target.as_fd(), false).describe(|| format!("{} with the container's /dev/null", what()))
}

/// The container's /dev/null, checked to be the null device: a /dev from a
/// volume or an image may hold anything there, and a mask made of a symlink to
/// a procfs file would expose that file, writable (the CVE-2025-31133 class).
fn dev_null(root: &OwnedFd) -> Result<OwnedFd> {
    let what = || "maskedPaths: open /dev/null".to_string();
    let fd = open_in_root(root.as_fd(), Path::new("/dev/null")).describe(what)?;
    let st = fstat(&fd).describe(what)?;
    let is_char = st.st_mode & libc::S_IFMT == libc::S_IFCHR;
    if !is_char || (libc::major(st.st_rdev), libc::minor(st.st_rdev)) != (1, 3) {
        let is = if is_char {
            format!("the device {}:{}", libc::major(st.st_rdev), libc::minor(st.st_rdev))
        } else {
            "not a device".to_string()
        };
        return Err(format!("maskedPaths: the container's /dev/null is {is}, not the null device 1:3: refusing to mask with it"));
    }
    Ok(fd)
}

fn make_readonly(sys: &dyn Sys, root: &OwnedFd, path: &Path) -> Result<()> {
    let what = || format!("make {} read-only", path.display());
    let Some(target) = existing(root, path, what)? else { return Ok(()) };
    sys.bind_readonly_fd(target.as_fd()).describe(what)
}

/// The rootfs logic through the recording `Sys`: no root, no mount.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::recorder::Recorder;

    struct TempRoot(std::path::PathBuf);

    impl TempRoot {
        fn new(name: &str) -> TempRoot {
            let dir = std::env::temp_dir().join(format!("ferrum-rootfs-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("rootfs")).unwrap();
            TempRoot(dir)
        }
    }

    impl Drop for TempRoot {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    fn run_setup(sys: &Recorder, dir: &TempRoot, spec: &Spec, no_pivot_root: bool) -> Result<()> {
        let ns = Namespaces::from_spec(spec);
        let create = CreateRequest {
            id: "c".into(),
            spec: spec.clone(),
            rootfs: dir.0.join("rootfs"),
            bundle: dir.0.clone(),
            setup: crate::protocol::SetupOptions { no_pivot_root, no_new_keyring: false },
            detached: Vec::new(),
            joins: Vec::new(),
            unshare: 0,
            layers: Vec::new(),
        };
        setup(sys, &create, &ns, &HashMap::new(), || Ok(()))
    }

    #[test]
    fn mounts_then_devices_then_pivot_root_in_order() {
        let dir = TempRoot::new("order");
        let source = dir.0.join("data");
        std::fs::create_dir(&source).unwrap();
        let s = spec(&format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},
                "mounts":[{{"destination":"/proc","type":"proc","source":"proc","options":["nosuid","noexec","nodev"]}},
                          {{"destination":"/sys","type":"sysfs","source":"sysfs","options":["nosuid"]}},
                          {{"destination":"/data","type":"bind","source":{source:?},"options":["rbind","ro"]}}],
                "linux":{{"namespaces":[{{"type":"mount"}},{{"type":"pid"}}]}}}}"#
        ));
        let sys = Recorder::new(&dir.0);
        run_setup(&sys, &dir, &s, false).unwrap();
        let calls = sys.calls();
        let mounts: Vec<&String> = calls.iter().filter(|c| c.starts_with("mount") || c.contains("pivot")).collect();
        assert_eq!(
            mounts,
            [
                "mount - / - MS_REC | MS_SLAVE -",
                "mount <root>/rootfs <root>/rootfs - MS_BIND | MS_REC -",
                "mount proc <root>/rootfs/proc proc MS_NOSUID | MS_NODEV | MS_NOEXEC -",
                // No network namespace of its own: the host's /sys, read-only (as runc).
                "mount sysfs <root>/rootfs/sys sysfs MS_RDONLY | MS_NOSUID -",
                // A read-only bind is a bind, then a remount.
                "mount <root>/data <root>/rootfs/data - MS_BIND | MS_REC -",
                "mount - <root>/rootfs/data - MS_RDONLY | MS_REMOUNT | MS_BIND -",
                "pivot_root . .",
                "mount - . - MS_REC | MS_SLAVE -",
            ],
            "{calls:#?}"
        );
        // The old root goes (made a slave from inside it, not from the new
        // root's top), and we end up at the new one.
        assert_eq!(
            calls[calls.len() - 4..],
            ["fchdir /", "mount - . - MS_REC | MS_SLAVE -", "umount . MntFlags(MNT_DETACH)", "chdir /"],
            "{calls:#?}"
        );
    }

    #[test]
    fn the_mount_holding_a_path_is_found_by_walking_up() {
        let path_of = |p: &str| crate::procfs::path_of(mount_holding(Path::new(p)).unwrap().as_fd()).unwrap();
        assert_eq!(path_of("/proc/sys/kernel"), Path::new("/proc"));
        assert_eq!(path_of("/proc"), Path::new("/proc"), "a mount point holds itself");
        assert_eq!(path_of("/"), Path::new("/"));
    }

    #[test]
    fn default_devices_get_modes_owners_and_links() {
        let dir = TempRoot::new("dev");
        let s = spec(
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
                "linux":{"namespaces":[{"type":"mount"}],
                         "devices":[{"path":"/dev/fuse","type":"c","major":10,"minor":229,"fileMode":384,"uid":7,"gid":8}]}}"#,
        );
        let sys = Recorder::new(&dir.0);
        run_setup(&sys, &dir, &s, false).unwrap();
        let calls = sys.calls();
        for expected in [
            "mknod <root>/rootfs/dev/null 20666 1:3",
            "chown <root>/rootfs/dev/null 0:0",
            "mknod <root>/rootfs/dev/tty 20666 5:0",
            "mknod <root>/rootfs/dev/fuse 20600 10:229",
            "chown <root>/rootfs/dev/fuse 7:8",
            "symlink <root>/rootfs/dev/fd -> /proc/self/fd",
            "symlink <root>/rootfs/dev/stderr -> /proc/self/fd/2",
        ] {
            assert!(calls.iter().any(|c| c == expected), "no {expected:?} in {calls:#?}");
        }
    }

    #[test]
    fn in_a_user_namespace_devices_are_bound_from_the_host() {
        let dir = TempRoot::new("userns");
        let s = spec(r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"linux":{"namespaces":[{"type":"mount"},{"type":"user"}]}}"#);
        let mut sys = Recorder::new(&dir.0);
        sys.refuse_mknod = true;
        run_setup(&sys, &dir, &s, false).unwrap();
        let calls = sys.calls();
        assert!(calls.iter().any(|c| c == "mount /dev/null <root>/rootfs/dev/null - MS_BIND -"), "{calls:#?}");
        assert!(!calls.iter().any(|c| c.starts_with("chown")), "{calls:#?}");
    }

    #[test]
    fn no_pivot_root_moves_the_rootfs_and_chroots() {
        let dir = TempRoot::new("move");
        let s = spec(r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"mounts":[{"destination":"/dev","type":"bind","source":"/dev","options":["rbind"]}],"linux":{"namespaces":[{"type":"mount"}]}}"#);
        let sys = Recorder::new(&dir.0);
        run_setup(&sys, &dir, &s, true).unwrap();
        let calls = sys.calls();
        assert_eq!(
            calls[calls.len() - 4..],
            ["fchdir <root>/rootfs", "mount . / - MS_MOVE -", "chroot .", "chdir /"],
            "{calls:#?}"
        );
        // /dev is bound from the spec: no device is made.
        assert!(!calls.iter().any(|c| c.starts_with("mknod")), "{calls:#?}");
    }

    #[test]
    fn read_only_paths_before_masks_and_then_a_read_only_root() {
        let dir = TempRoot::new("protect");
        let (ro, masked_dir, masked_file) = (dir.0.join("ro"), dir.0.join("mdir"), dir.0.join("mfile"));
        std::fs::create_dir(&ro).unwrap();
        std::fs::create_dir(&masked_dir).unwrap();
        std::fs::write(&masked_file, "").unwrap();
        let s = spec(&format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs","readonly":true}},
                "linux":{{"maskedPaths":[{masked_dir:?},{masked_file:?},"/no/such/path"],"readonlyPaths":[{ro:?}]}}}}"#
        ));
        let sys = Recorder::new(&dir.0);
        // This host's root stands for the container's: its /dev/null is real.
        protect(&sys, &s, &std::fs::File::open("/").unwrap().into()).unwrap();
        assert_eq!(
            sys.calls(),
            [
                "bind_readonly_fd <root>/ro",
                "empty_tmpfs_fd <root>/mdir",
                "bind_fd /dev/null <root>/mfile",
                "mount - / - MS_RDONLY | MS_REMOUNT | MS_BIND -",
            ]
        );
    }

    #[test]
    fn masks_are_never_made_of_a_dev_null_that_is_no_null_device() {
        let dir = TempRoot::new("null");
        let rootfs = dir.0.join("rootfs");
        for d in ["proc/sys/kernel", "dev"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::write(rootfs.join("proc/keys"), "").unwrap();
        std::fs::write(rootfs.join("proc/sys/kernel/core_pattern"), "").unwrap();
        let s = spec(r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"linux":{"maskedPaths":["/proc/keys"]}}"#);
        let root: OwnedFd = std::fs::File::open(&rootfs).unwrap().into();
        let null = rootfs.join("dev/null");
        std::os::unix::fs::symlink("/proc/sys/kernel/core_pattern", &null).unwrap();
        let sys = Recorder::new(&dir.0);
        let err = protect(&sys, &s, &root).unwrap_err();
        assert!(err.contains("/dev/null is not a device, not the null device 1:3"), "{err}");
        std::fs::remove_file(&null).unwrap();
        std::fs::write(&null, "").unwrap();
        assert!(protect(&sys, &s, &root).unwrap_err().contains("/dev/null is not a device"));
        std::fs::remove_file(&null).unwrap();
        assert!(protect(&sys, &s, &root).unwrap_err().contains("open /dev/null: No such file"));
        assert_eq!(sys.calls(), Vec::<String>::new(), "nothing was masked");
    }

    fn with_mounts(mounts: &str) -> Spec {
        spec(&format!(r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},"mounts":{mounts},"linux":{{"namespaces":[{{"type":"mount"}}]}}}}"#))
    }

    #[test]
    fn no_mount_lands_in_proc_however_its_destination_is_spelled() {
        let dir = TempRoot::new("inproc");
        let rootfs = dir.0.join("rootfs");
        std::fs::create_dir_all(rootfs.join("proc/self/attr")).unwrap();
        // An image's (or an earlier mount's) symlink into /proc.
        std::os::unix::fs::symlink("/proc/self", rootfs.join("lnk")).unwrap();
        let (data, file) = (dir.0.join("data"), dir.0.join("uptime"));
        std::fs::create_dir(&data).unwrap();
        std::fs::write(&file, "").unwrap();
        let bind = |src: &Path, dst: &str| format!(r#"{{"destination":"{dst}","type":"bind","source":{src:?},"options":["rbind"]}}"#);
        for (mounts, refusal) in [
            (bind(&data, "/proc/self/attr"), "mounts[0] (bind on /proc/self/attr): inside /proc, where only"),
            (bind(&data, "/lnk/attr"), "mounts[0] (bind on /lnk/attr, which resolves to /proc/self/attr): inside /proc"),
            (bind(&data, "/proc"), "mounts[0] (bind on /proc): only a procfs"),
            (r#"{"destination":"/proc","type":"tmpfs","source":"tmpfs"}"#.to_string(), "mounts[0] (tmpfs on /proc): only a procfs"),
        ] {
            let sys = Recorder::new(&dir.0);
            let err = run_setup(&sys, &dir, &with_mounts(&format!("[{mounts}]")), false).unwrap_err();
            assert!(err.contains(refusal), "{err}");
            assert!(!sys.calls().iter().any(|c| c.contains("<root>/rootfs/proc")), "{:#?}", sys.calls());
        }
        // A procfs on /proc, and lxcfs's files in it.
        let proc = r#"{"destination":"/proc","type":"proc","source":"proc"}"#;
        let sys = Recorder::new(&dir.0);
        run_setup(&sys, &dir, &with_mounts(&format!("[{proc},{}]", bind(&file, "/proc/uptime"))), false).unwrap();
        assert!(sys.calls().iter().any(|c| c == "mount <root>/uptime <root>/rootfs/proc/uptime - MS_BIND | MS_REC -"));
    }

    #[test]
    fn a_proc_or_sysfs_is_never_mounted_through_a_symlink() {
        let dir = TempRoot::new("procsym");
        let rootfs = dir.0.join("rootfs");
        std::fs::create_dir_all(rootfs.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink("/elsewhere", rootfs.join("proc")).unwrap();
        std::os::unix::fs::symlink("elsewhere", rootfs.join("sys")).unwrap();
        for (typ, dst) in [("proc", "/proc"), ("sysfs", "/sys")] {
            let mounts = format!(r#"[{{"destination":"{dst}","type":"{typ}","source":"{typ}"}}]"#);
            let err = run_setup(&Recorder::new(&dir.0), &dir, &with_mounts(&mounts), false).unwrap_err();
            assert!(err.contains(&format!("{typ} on {dst}, which resolves to /elsewhere): a {typ} must be mounted on an ordinary directory")), "{err}");
        }
    }

    #[test]
    fn a_missing_bind_source_and_a_bad_propagation_are_named() {
        let dir = TempRoot::new("bad");
        let s = spec(r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"mounts":[{"destination":"/x","type":"bind","source":"/no/such/source","options":["bind"]}],"linux":{"namespaces":[{"type":"mount"}]}}"#);
        let err = run_setup(&Recorder::new(&dir.0), &dir, &s, false).unwrap_err();
        assert!(err.contains("mount bind on /x") && err.contains("bind source /no/such/source does not exist"), "{err}");
        let s = spec(r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"linux":{"rootfsPropagation":"sideways","namespaces":[{"type":"mount"}]}}"#);
        let err = run_setup(&Recorder::new(&dir.0), &dir, &s, false).unwrap_err();
        assert!(err.contains("linux.rootfsPropagation \"sideways\""), "{err}");
    }

    #[test]
    fn a_mount_target_that_escapes_through_a_symlink_stays_in_the_rootfs() {
        let dir = TempRoot::new("escape");
        let outside = dir.0.join("outside");
        std::fs::create_dir(&outside).unwrap();
        // The image links /evil to a host path; the mount must land inside the rootfs.
        std::os::unix::fs::symlink(&outside, dir.0.join("rootfs/evil")).unwrap();
        let s = spec(r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"mounts":[{"destination":"/evil/x","type":"tmpfs","source":"tmpfs"}],"linux":{"namespaces":[{"type":"mount"}]}}"#);
        let sys = Recorder::new(&dir.0);
        run_setup(&sys, &dir, &s, false).unwrap();
        let calls = sys.calls();
        let tmpfs = calls.iter().find(|c| c.starts_with("mount tmpfs")).unwrap();
        assert!(!tmpfs.contains("<root>/outside"), "the mount escaped the rootfs: {tmpfs}");
        assert!(tmpfs.contains("<root>/rootfs/"), "{tmpfs}");
        assert!(!outside.join("x").exists());
    }
}
