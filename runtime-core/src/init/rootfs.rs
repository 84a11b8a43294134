//! The container's filesystem view: the spec's mounts inside the rootfs,
//! /dev, pivot_root, masked and read-only paths, a read-only root.

use super::paths::{create_in_root, fd_path, open_in_root, Leaf};
use super::{devices, Describe, Result};
use crate::mount::{mount_with, MountOptions, MountTarget};
use crate::namespaces::Namespaces;
use crate::sys::Sys;
use nix::mount::{MntFlags, MsFlags};
use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// `before_pivot` runs once the mounts and /dev are in place, while the host's
/// root is still reachable (the hooks' moment).
pub(super) fn setup(
    sys: &dyn Sys,
    spec: &Spec,
    rootfs: &Path,
    ns: &Namespaces,
    idmapped: &HashMap<usize, OwnedFd>,
    no_pivot_root: bool,
    before_pivot: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let propagation = rootfs_propagation(spec)?;
    // Our mounts must not propagate back to the host: make the whole tree a
    // slave (or what the spec asks) before touching anything.
    let base = propagation.unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    sys.mount(None, Path::new("/"), None, base, None).describe(|| "make / a slave mount".into())?;
    // pivot_root needs the new root to be a mount point.
    sys.mount(Some(rootfs), rootfs, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)
        .describe(|| format!("bind rootfs {}", rootfs.display()))?;
    let root: OwnedFd = std::fs::File::open(rootfs).describe(|| format!("open rootfs {}", rootfs.display()))?.into();

    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        match idmapped.get(&i) {
            Some(mount) => attach_idmapped(&root, m, mount)?,
            None => mount_one(sys, &root, m, ns)?,
        }
    }
    if !dev_is_bind_mounted(spec) {
        devices::setup(sys, &root, spec, ns)?;
    }
    before_pivot()?;
    if no_pivot_root {
        move_root(sys, &root)?;
    } else {
        pivot(sys, &root)?;
    }
    if let Some(p) = propagation {
        sys.mount(None, Path::new("/"), None, p, None).describe(|| "set rootfsPropagation".into())?;
    }
    Ok(())
}

/// After `setup` and whatever still writes to /proc (sysctls): masked and
/// read-only paths, then the read-only root. CRI pods list /proc/sys among the
/// read-only paths and set network sysctls, so the order matters (as in runc).
pub(super) fn protect(sys: &dyn Sys, spec: &Spec) -> Result<()> {
    // Read-only first, then masks (as runc): a mask inside a read-only path
    // then sits on top of it, and the mount tables are the same.
    if let Some(linux) = spec.linux() {
        for p in linux.readonly_paths().iter().flatten() {
            make_readonly(sys, Path::new(p))?;
        }
        for p in linux.masked_paths().iter().flatten() {
            mask(sys, Path::new(p))?;
        }
    }
    if spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false) {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | sys.locked_flags(Path::new("/"));
        sys.mount(None, Path::new("/"), None, flags, None).describe(|| "make rootfs read-only".into())?;
    }
    Ok(())
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

fn mount_one(sys: &dyn Sys, root: &OwnedFd, m: &Mount, ns: &Namespaces) -> Result<()> {
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
        "cgroup" => return mount_cgroup_v1(sys, root, dest, &opts, ns).map_err(|e| describe(&e)),
        // In the host's network namespace, /sys would expose the host's network
        // devices writable: runc makes it read-only, and so do we. A joined one
        // (a pod's) is not the host's: a privileged pod container gets /sys rw.
        "sysfs" if !ns.has(LinuxNamespaceType::Network) => opts.flags |= MsFlags::MS_RDONLY,
        _ => {}
    }
    let source = m.source().clone().unwrap_or_else(|| typ.clone().into());
    let leaf = if opts.is_bind() && !source.is_dir() { Leaf::File } else { Leaf::Dir };
    if opts.is_bind() && !source.exists() {
        return Err(describe(&format!("bind source {} does not exist", source.display())));
    }
    let target = create_in_root(root.as_fd(), dest, leaf, 0o755).map_err(|e| describe(&e))?;
    let reopen = || {
        let fd = open_in_root(root.as_fd(), dest)?;
        Ok(MountTarget { path: fd_path(&fd), _fd: Some(fd) })
    };
    mount_with(sys, &typ, &source, &fd_path(&target), &opts, &reopen).map_err(|e| describe(&e))
}

/// An idmapped bind mount the parent made: attach it at its destination.
fn attach_idmapped(root: &OwnedFd, m: &Mount, mount: &OwnedFd) -> Result<()> {
    let dest = m.destination();
    let describe = |e: &dyn std::fmt::Display| format!("idmapped mount on {}: {e}", dest.display());
    let is_dir = m.source().as_ref().is_none_or(|s| s.is_dir());
    let target = create_in_root(root.as_fd(), dest, if is_dir { Leaf::Dir } else { Leaf::File }, 0o755)
        .map_err(|e| describe(&e))?;
    crate::new_mount_api::attach_at(mount, &target).map_err(|e| describe(&e))
}

/// A `cgroup` mount on a v1 or hybrid host (as runc): a tmpfs holding one entry
/// per hierarchy. With a cgroup namespace of its own the container gets fresh
/// cgroup mounts (the kernel roots them at its cgroup); without, bind mounts of
/// its own cgroup directories, so it never sees the host's tree.
fn mount_cgroup_v1(
    sys: &dyn Sys,
    root: &OwnedFd,
    dest: &Path,
    opts: &MountOptions,
    ns: &Namespaces,
) -> std::io::Result<()> {
    let hierarchies = crate::cgroup::visible_hierarchies()?;
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

/// pivot_root(".", ".") stacks the old root under the new one; unmounting "."
/// then drops it, with no directory needed for the old root.
fn pivot(sys: &dyn Sys, root: &OwnedFd) -> Result<()> {
    let here = Path::new(".");
    sys.fchdir(root.as_fd()).describe(|| "chdir to rootfs".into())?;
    sys.pivot_root(here, here).describe(|| "pivot_root".into())?;
    // The old root must not propagate the unmount to the host.
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

/// Hide a path: /dev/null over files, an empty read-only tmpfs over directories.
fn mask(sys: &dyn Sys, path: &Path) -> Result<()> {
    let Ok(meta) = std::fs::metadata(path) else { return Ok(()) };
    let what = || format!("mask {}", path.display());
    if meta.is_dir() {
        sys.mount(Some(Path::new("tmpfs")), path, Some("tmpfs"), MsFlags::MS_RDONLY, None).describe(what)
    } else {
        sys.mount(Some(Path::new("/dev/null")), path, None, MsFlags::MS_BIND, None).describe(what)
    }
}

fn make_readonly(sys: &dyn Sys, path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let what = || format!("make {} read-only", path.display());
    sys.mount(Some(path), path, None, MsFlags::MS_BIND | MsFlags::MS_REC, None).describe(what)?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC | sys.locked_flags(path);
    sys.mount(None, path, None, flags, None).describe(what)
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
        setup(sys, spec, &dir.0.join("rootfs"), &ns, &HashMap::new(), no_pivot_root, || Ok(()))
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
        // The old root goes, and we end up at the new one.
        assert_eq!(calls[calls.len() - 2..], ["umount . MntFlags(MNT_DETACH)", "chdir /"], "{calls:#?}");
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
        protect(&sys, &s).unwrap();
        assert_eq!(
            sys.calls(),
            [
                "mount <root>/ro <root>/ro - MS_BIND | MS_REC -",
                "mount - <root>/ro - MS_RDONLY | MS_REMOUNT | MS_BIND | MS_REC -",
                "mount tmpfs <root>/mdir tmpfs MS_RDONLY -",
                "mount /dev/null <root>/mfile - MS_BIND -",
                "mount - / - MS_RDONLY | MS_REMOUNT | MS_BIND -",
            ]
        );
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
