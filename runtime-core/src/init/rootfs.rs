//! The container's filesystem view: the spec's mounts inside the rootfs,
//! /dev, pivot_root, masked and read-only paths, a read-only root.

use super::paths::{create_in_root, fd_path, open_in_root, Leaf};
use super::{devices, Describe, Result};
use crate::mount::{locked_flags, mount_with, MountOptions, MountTarget};
use crate::namespaces::Namespaces;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// `before_pivot` runs once the mounts and /dev are in place, while the host's
/// root is still reachable (the hooks' moment).
pub(super) fn setup(
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
    mount(None::<&str>, "/", None::<&str>, base, None::<&str>).describe(|| "make / a slave mount".into())?;
    // pivot_root needs the new root to be a mount point.
    mount(Some(rootfs), rootfs, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .describe(|| format!("bind rootfs {}", rootfs.display()))?;
    let root: OwnedFd = std::fs::File::open(rootfs).describe(|| format!("open rootfs {}", rootfs.display()))?.into();

    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        match idmapped.get(&i) {
            Some(mount) => attach_idmapped(&root, m, mount)?,
            None => mount_one(&root, m, ns)?,
        }
    }
    if !dev_is_bind_mounted(spec) {
        devices::setup(&root, spec, ns)?;
    }
    before_pivot()?;
    if no_pivot_root {
        move_root(&root)?;
    } else {
        pivot(&root)?;
    }
    if let Some(p) = propagation {
        mount(None::<&str>, "/", None::<&str>, p, None::<&str>).describe(|| "set rootfsPropagation".into())?;
    }
    Ok(())
}

/// After `setup` and whatever still writes to /proc (sysctls): masked and
/// read-only paths, then the read-only root. CRI pods list /proc/sys among the
/// read-only paths and set network sysctls, so the order matters (as in runc).
pub(super) fn protect(spec: &Spec) -> Result<()> {
    // Read-only first, then masks (as runc): a mask inside a read-only path
    // then sits on top of it, and the mount tables are the same.
    if let Some(linux) = spec.linux() {
        for p in linux.readonly_paths().iter().flatten() {
            make_readonly(Path::new(p))?;
        }
        for p in linux.masked_paths().iter().flatten() {
            mask(Path::new(p))?;
        }
    }
    if spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false) {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked_flags(Path::new("/"));
        mount(None::<&str>, "/", None::<&str>, flags, None::<&str>).describe(|| "make rootfs read-only".into())?;
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

fn mount_one(root: &OwnedFd, m: &Mount, ns: &Namespaces) -> Result<()> {
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
        "cgroup" => return mount_cgroup_v1(root, dest, &opts, ns).map_err(|e| describe(&e)),
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
    mount_with(&typ, &source, &fd_path(&target), &opts, &reopen).map_err(|e| describe(&e))
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
fn mount_cgroup_v1(root: &OwnedFd, dest: &Path, opts: &MountOptions, ns: &Namespaces) -> std::io::Result<()> {
    let hierarchies = crate::cgroup::visible_hierarchies()?;
    let base = create_in_root(root.as_fd(), dest, Leaf::Dir, 0o755)?;
    let tmpfs_flags = opts.flags & !MsFlags::MS_RDONLY;
    mount(Some("tmpfs"), &fd_path(&base), Some("tmpfs"), tmpfs_flags, Some("mode=755"))?;
    let flags = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
    for h in &hierarchies {
        let sub = create_in_root(root.as_fd(), &dest.join(&h.name), Leaf::Dir, 0o755)?;
        let target = fd_path(&sub);
        if ns.has(LinuxNamespaceType::Cgroup) {
            mount(Some("cgroup"), &target, Some(h.fstype), flags, Some(h.data.as_str()))?;
        } else {
            let reopen = || {
                let fd = open_in_root(root.as_fd(), &dest.join(&h.name))?;
                Ok(MountTarget { path: fd_path(&fd), _fd: Some(fd) })
            };
            let bind = MountOptions { flags: flags | MsFlags::MS_BIND | MsFlags::MS_REC, ..Default::default() };
            mount_with("none", &h.own_dir, &target, &bind, &reopen)?;
        }
    }
    if opts.flags.contains(MsFlags::MS_RDONLY) {
        let top = open_in_root(root.as_fd(), dest)?;
        let remount = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | tmpfs_flags;
        mount(None::<&str>, &fd_path(&top), None::<&str>, remount, Some("mode=755"))?;
    }
    Ok(())
}

/// pivot_root(".", ".") stacks the old root under the new one; unmounting "."
/// then drops it, with no directory needed for the old root.
fn pivot(root: &OwnedFd) -> Result<()> {
    nix::unistd::fchdir(root).describe(|| "chdir to rootfs".into())?;
    nix::unistd::pivot_root(".", ".").describe(|| "pivot_root".into())?;
    // The old root must not propagate the unmount to the host.
    mount(None::<&str>, ".", None::<&str>, MsFlags::MS_SLAVE | MsFlags::MS_REC, None::<&str>)
        .describe(|| "make old root a slave".into())?;
    umount2(".", MntFlags::MNT_DETACH).describe(|| "unmount old root".into())?;
    nix::unistd::chdir("/").describe(|| "chdir /".into())
}

/// runc's NoPivotRoot: move the rootfs mount onto / and chroot into it.
fn move_root(root: &OwnedFd) -> Result<()> {
    nix::unistd::fchdir(root).describe(|| "chdir to rootfs".into())?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>).describe(|| "move rootfs onto /".into())?;
    nix::unistd::chroot(".").describe(|| "chroot into rootfs".into())?;
    nix::unistd::chdir("/").describe(|| "chdir /".into())
}

/// Hide a path: /dev/null over files, an empty read-only tmpfs over directories.
fn mask(path: &Path) -> Result<()> {
    let Ok(meta) = std::fs::metadata(path) else { return Ok(()) };
    let what = || format!("mask {}", path.display());
    if meta.is_dir() {
        mount(Some("tmpfs"), path, Some("tmpfs"), MsFlags::MS_RDONLY, None::<&str>).describe(what)
    } else {
        mount(Some("/dev/null"), path, None::<&str>, MsFlags::MS_BIND, None::<&str>).describe(what)
    }
}

fn make_readonly(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let what = || format!("make {} read-only", path.display());
    mount(Some(path), path, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>).describe(what)?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_REC | locked_flags(path);
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>).describe(what)
}
