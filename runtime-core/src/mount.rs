//! Mount options and mounting, shared by the container's init (the spec's
//! mounts) and by the caller (the rootfs mounts a snapshotter hands out).

use crate::sys::{Kernel, Sys};
use nix::mount::{umount2, MntFlags, MsFlags};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// A mount's options split the way mount(2) wants them.
#[derive(Debug, Clone, PartialEq)]
pub struct MountOptions {
    pub flags: MsFlags,
    /// Propagation changes, applied one by one after the mount.
    pub propagation: Vec<MsFlags>,
    /// Filesystem-specific options, comma-joined into the data argument.
    pub data: Vec<String>,
    /// The recursive attributes (`rro`, `rnosuid`…): MOUNT_ATTR_* set and
    /// cleared on the whole new tree with mount_setattr(AT_RECURSIVE), where
    /// mount(2)'s flags reach only its top.
    pub recursive: RecursiveAttrs,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RecursiveAttrs {
    pub set: u64,
    pub clear: u64,
}

impl RecursiveAttrs {
    fn is_empty(&self) -> bool {
        self.set == 0 && self.clear == 0
    }
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            flags: MsFlags::empty(),
            propagation: Vec::new(),
            data: Vec::new(),
            recursive: RecursiveAttrs::default(),
        }
    }
}

impl MountOptions {
    pub fn parse<S: AsRef<str>>(options: &[S]) -> MountOptions {
        let mut out = MountOptions::default();
        for opt in options {
            let opt = opt.as_ref();
            if let Some(p) = propagation(opt) {
                out.propagation.push(p);
            } else if let Some((set, attr)) = recursive_attr(opt) {
                if set {
                    out.recursive.set |= attr;
                    // An access-time mode is set only with the whole field cleared first.
                    if attr & ATTR_ATIME_MASK == attr {
                        out.recursive.clear |= ATTR_ATIME_MASK;
                    }
                } else {
                    out.recursive.clear |= attr;
                }
            } else if let Some((set, flag)) = flag(opt) {
                if set {
                    out.flags |= flag;
                } else {
                    out.flags &= !flag;
                }
            } else if !opt.is_empty() {
                out.data.push(opt.to_string());
            }
        }
        out
    }

    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    /// Flags that a bind mount only takes through a second, remounting call.
    fn bind_remount_flags(&self) -> MsFlags {
        self.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT)
    }

    pub fn data_string(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }
}

/// Every option `flag`, `propagation` and `recursive_attr` know (the rest is filesystem data).
pub(crate) const OPTION_NAMES: [&str; 53] = [
    "ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "sync", "async", "dirsync", "remount", "mand",
    "nomand", "noatime", "atime", "nodiratime", "diratime", "relatime", "norelatime", "strictatime",
    "nostrictatime", "silent", "loud", "bind", "rbind", "defaults", "private", "rprivate", "shared", "rshared",
    "slave", "rslave", "unbindable", "runbindable", "rro", "rrw", "rnosuid", "rsuid", "rnodev", "rdev", "rnoexec",
    "rexec", "rnodiratime", "rdiratime", "rrelatime", "rnorelatime", "rnoatime", "ratime", "rstrictatime",
    "rnostrictatime", "rnosymfollow", "rsymfollow",
];

// linux/mount.h's MOUNT_ATTR_*.
pub(crate) const ATTR_RDONLY: u64 = 0x1;
const ATTR_NOSUID: u64 = 0x2;
const ATTR_NODEV: u64 = 0x4;
const ATTR_NOEXEC: u64 = 0x8;
const ATTR_RELATIME: u64 = 0x0;
const ATTR_NOATIME: u64 = 0x10;
const ATTR_STRICTATIME: u64 = 0x20;
const ATTR_ATIME_MASK: u64 = 0x70;
const ATTR_NODIRATIME: u64 = 0x80;
const ATTR_NOSYMFOLLOW: u64 = 0x0020_0000;

/// The runtime-spec's recursive mount options (runc's names): (set, attribute).
fn recursive_attr(opt: &str) -> Option<(bool, u64)> {
    Some(match opt {
        "rro" => (true, ATTR_RDONLY),
        "rrw" => (false, ATTR_RDONLY),
        "rnosuid" => (true, ATTR_NOSUID),
        "rsuid" => (false, ATTR_NOSUID),
        "rnodev" => (true, ATTR_NODEV),
        "rdev" => (false, ATTR_NODEV),
        "rnoexec" => (true, ATTR_NOEXEC),
        "rexec" => (false, ATTR_NOEXEC),
        "rnodiratime" => (true, ATTR_NODIRATIME),
        "rdiratime" => (false, ATTR_NODIRATIME),
        "rrelatime" => (true, ATTR_RELATIME),
        "rnorelatime" => (false, ATTR_RELATIME),
        "rnoatime" => (true, ATTR_NOATIME),
        "ratime" => (false, ATTR_NOATIME),
        "rstrictatime" => (true, ATTR_STRICTATIME),
        "rnostrictatime" => (false, ATTR_STRICTATIME),
        "rnosymfollow" => (true, ATTR_NOSYMFOLLOW),
        "rsymfollow" => (false, ATTR_NOSYMFOLLOW),
        _ => return None,
    })
}

fn flag(opt: &str) -> Option<(bool, MsFlags)> {
    use MsFlags as F;
    Some(match opt {
        "ro" => (true, F::MS_RDONLY),
        "rw" => (false, F::MS_RDONLY),
        "nosuid" => (true, F::MS_NOSUID),
        "suid" => (false, F::MS_NOSUID),
        "nodev" => (true, F::MS_NODEV),
        "dev" => (false, F::MS_NODEV),
        "noexec" => (true, F::MS_NOEXEC),
        "exec" => (false, F::MS_NOEXEC),
        "sync" => (true, F::MS_SYNCHRONOUS),
        "async" => (false, F::MS_SYNCHRONOUS),
        "dirsync" => (true, F::MS_DIRSYNC),
        "remount" => (true, F::MS_REMOUNT),
        "mand" => (true, F::MS_MANDLOCK),
        "nomand" => (false, F::MS_MANDLOCK),
        "noatime" => (true, F::MS_NOATIME),
        "atime" => (false, F::MS_NOATIME),
        "nodiratime" => (true, F::MS_NODIRATIME),
        "diratime" => (false, F::MS_NODIRATIME),
        "relatime" => (true, F::MS_RELATIME),
        "norelatime" => (false, F::MS_RELATIME),
        "strictatime" => (true, F::MS_STRICTATIME),
        "nostrictatime" => (false, F::MS_STRICTATIME),
        "silent" => (true, F::MS_SILENT),
        "loud" => (false, F::MS_SILENT),
        "bind" => (true, F::MS_BIND),
        "rbind" => (true, F::MS_BIND | F::MS_REC),
        "defaults" => (false, F::empty()),
        _ => return None,
    })
}

fn propagation(opt: &str) -> Option<MsFlags> {
    use MsFlags as F;
    Some(match opt {
        "private" => F::MS_PRIVATE,
        "rprivate" => F::MS_PRIVATE | F::MS_REC,
        "shared" => F::MS_SHARED,
        "rshared" => F::MS_SHARED | F::MS_REC,
        "slave" => F::MS_SLAVE,
        "rslave" => F::MS_SLAVE | F::MS_REC,
        "unbindable" => F::MS_UNBINDABLE,
        "runbindable" => F::MS_UNBINDABLE | F::MS_REC,
        _ => return None,
    })
}

/// A path to mount on, with the fd that keeps a /proc/self/fd/N path valid.
pub struct MountTarget {
    pub path: PathBuf,
    pub _fd: Option<OwnedFd>,
}

impl MountTarget {
    pub fn plain(path: &Path) -> MountTarget {
        MountTarget { path: path.to_path_buf(), _fd: None }
    }
}

/// Mount `source` on `target` (which may be a /proc/self/fd/N magic link).
/// `reopen` gives the *new* mount for the follow-up calls (bind remount,
/// propagation), since a magic link opened before the mount still points at the
/// covered directory.
pub(crate) fn mount_with(
    sys: &dyn Sys,
    typ: &str,
    source: &Path,
    target: &Path,
    opts: &MountOptions,
    reopen: &dyn Fn() -> io::Result<MountTarget>,
) -> io::Result<()> {
    let data = opts.data_string();
    if opts.is_bind() {
        let bind = opts.flags & (MsFlags::MS_BIND | MsFlags::MS_REC);
        sys.mount(Some(source), target, None, bind, data.as_deref())?;
    } else {
        sys.mount(Some(source), target, Some(typ), opts.flags, data.as_deref())?;
    }
    finish_mount(sys, opts, reopen)
}

/// What a new mount gets after mount(2) (or after a detached copy was
/// attached): a bind's read-only and other flags by remount, then the
/// propagation and the recursive attributes.
pub(crate) fn finish_mount(sys: &dyn Sys, opts: &MountOptions, reopen: &dyn Fn() -> io::Result<MountTarget>) -> io::Result<()> {
    let remount = opts.is_bind() && !opts.bind_remount_flags().is_empty();
    if remount || !opts.propagation.is_empty() || !opts.recursive.is_empty() {
        let top = reopen()?;
        if remount {
            let flags =
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | opts.bind_remount_flags() | sys.locked_flags(&top.path);
            sys.mount(None, &top.path, None, flags, None)?;
        }
        for p in &opts.propagation {
            sys.mount(None, &top.path, None, *p, None)?;
        }
        if !opts.recursive.is_empty() {
            sys.set_tree_attrs(&top.path, opts.recursive)?;
        }
    }
    Ok(())
}

/// Flags of an existing mount that a bind remount must repeat, or the kernel
/// refuses it (EPERM) when they are locked.
pub(crate) fn locked_flags(path: &Path) -> MsFlags {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let Ok(st) = statvfs(path) else { return MsFlags::empty() };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            out |= ms;
        }
    }
    out
}

/// One mount of a container's root filesystem, as a snapshotter describes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RootfsMount {
    pub typ: String,
    pub source: String,
    pub options: Vec<String>,
}

/// Where containerd's rootfs mounts go: `<bundle>/rootfs`, the directory
/// containerd makes in every bundle (and runc-v2's shim mounts on).
pub fn rootfs_target(bundle: &Path) -> PathBuf {
    bundle.join("rootfs")
}

/// Mount containerd's rootfs layers on `rootfs_target(bundle)`, which is
/// returned. The error names the layer that failed, and how.
pub fn mount_rootfs(bundle: &Path, mounts: &[RootfsMount]) -> io::Result<PathBuf> {
    let target = rootfs_target(bundle);
    mount_layers(mounts, &target)?;
    Ok(target)
}

/// mount(2) takes at most a page of options.
const MAX_MOUNT_DATA: usize = 4095;

/// Mount the layers of a root filesystem on `target`, in order.
fn mount_layers(mounts: &[RootfsMount], target: &Path) -> io::Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        mount_layer(m, target).map_err(|e| {
            let _ = unmount_all(target);
            io::Error::new(
                e.kind(),
                format!("mount rootfs layer {i} ({} {} {:?}) on {}: {e}", m.typ, m.source, m.options, target.display()),
            )
        })?;
    }
    Ok(())
}

/// One rootfs mount; with containerd's `uidmap=`/`gidmap=` its layers idmapped
/// (see `idmap::take_layer_maps`).
fn mount_layer(m: &RootfsMount, target: &Path) -> io::Result<()> {
    let mut options = m.options.clone();
    let userns = crate::idmap::take_layer_maps(&mut options)?;
    let typ = if m.typ == "bind" { "none" } else { m.typ.as_str() };
    let _lowers = match &userns {
        Some(userns) if typ == "overlay" => Some(crate::idmap::IdmappedLowers::attach(&mut options, userns, target)?),
        _ => None,
    };
    let opts = MountOptions::parse(&options);
    let too_long = opts.data_string().is_some_and(|d| d.len() > MAX_MOUNT_DATA);
    if typ == "overlay" && too_long {
        mount_overlay_by_parts(&opts, target)?;
    } else {
        mount_with(&Kernel, typ, Path::new(&m.source), target, &opts, &|| Ok(MountTarget::plain(target)))?;
    }
    match &userns {
        Some(userns) if typ != "overlay" => crate::idmap::idmap_in_place(target, userns),
        _ => Ok(()),
    }
}

/// An overlay of many layers (a 128-layer image's lowerdir list exceeds the
/// page mount(2) takes): hand the layers to the kernel one by one with
/// fsconfig's "lowerdir+" (Linux 6.8+), with no limit on their number.
fn mount_overlay_by_parts(opts: &MountOptions, target: &Path) -> io::Result<()> {
    use crate::new_mount_api::*;
    let fs = FsContext::open("overlay")?;
    for option in &opts.data {
        match option.split_once('=') {
            Some(("lowerdir", layers)) => {
                for layer in layers.split(':') {
                    fs.set("lowerdir+", layer)?;
                }
            }
            Some((key, value)) => fs.set(key, value)?,
            None => fs.flag(option)?,
        }
    }
    attach(&fs.mount(mount_attrs(opts.flags))?, target)
}

/// Unmount everything stacked on `target` (lazily, so a busy mount cannot wedge
/// a delete). Not mounted is not an error.
pub fn unmount_all(target: &Path) -> io::Result<()> {
    loop {
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_data_and_propagation_are_split() {
        let o = MountOptions::parse(&["nosuid", "noexec", "mode=755", "size=65536k", "rslave", "ro"]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY);
        assert_eq!(o.data, ["mode=755", "size=65536k"]);
        assert_eq!(o.propagation, [MsFlags::MS_SLAVE | MsFlags::MS_REC]);
    }

    #[test]
    fn later_options_win() {
        let o = MountOptions::parse(&["ro", "rw"]);
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn rbind_is_recursive_bind_and_ro_needs_remount() {
        let o = MountOptions::parse(&["rbind", "ro"]);
        assert!(o.is_bind() && o.flags.contains(MsFlags::MS_REC));
        assert_eq!(o.bind_remount_flags(), MsFlags::MS_RDONLY);
        assert_eq!(MountOptions::parse(&["rbind", "rw"]).bind_remount_flags(), MsFlags::empty());
    }

    #[test]
    fn an_overlay_of_many_layers_mounts() {
        if !crate::test_support::have_root("mounting an overlay") {
            return;
        }
        let base = std::env::temp_dir().join(format!("ferrum-many-layers-{}", std::process::id()));
        let layer = |i: usize| base.join(format!("layer-with-a-long-name-to-fill-the-option-page-{i:04}"));
        let mut lowers = Vec::new();
        for i in 0..140 {
            std::fs::create_dir_all(layer(i)).unwrap();
            std::fs::write(layer(i).join(format!("f{i}")), "x").unwrap();
            lowers.push(layer(i).display().to_string());
        }
        let (upper, work, target) = (base.join("upper"), base.join("work"), base.join("target"));
        for d in [&upper, &work, &target] {
            std::fs::create_dir_all(d).unwrap();
        }
        let options = vec![
            format!("workdir={}", work.display()),
            format!("upperdir={}", upper.display()),
            format!("lowerdir={}", lowers.join(":")),
        ];
        assert!(options[2].len() > MAX_MOUNT_DATA);
        let m = RootfsMount { typ: "overlay".into(), source: "overlay".into(), options };
        let mounted = mount_layers(&[m], &target);
        let seen = (0..140).all(|i| target.join(format!("f{i}")).exists());
        unmount_all(&target).unwrap();
        std::fs::remove_dir_all(&base).unwrap();
        mounted.unwrap();
        assert!(seen, "every layer is visible");
    }

    #[test]
    fn containerds_id_maps_make_the_lower_layers_idmapped() {
        use std::os::unix::fs::MetadataExt;
        if !crate::test_support::have_root("mounting an idmapped overlay") {
            return;
        }
        let base = std::env::temp_dir().join(format!("ferrum-idmapped-layers-{}", std::process::id()));
        let (lower, upper, work, target) = (base.join("lower"), base.join("upper"), base.join("work"), base.join("rootfs"));
        for d in [&lower, &upper, &work, &target] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(lower.join("f"), "x").unwrap();
        let options = ["uidmap=0:327680:65536", "gidmap=0:327680:65536", "index=off"]
            .iter()
            .map(|o| o.to_string())
            .chain([
                format!("workdir={}", work.display()),
                format!("upperdir={}", upper.display()),
                format!("lowerdir={}", lower.display()),
            ])
            .collect();
        let m = RootfsMount { typ: "overlay".into(), source: "overlay".into(), options };
        let mounted = mount_layers(&[m], &target);
        let owner = std::fs::metadata(target.join("f")).map(|m| (m.uid(), m.gid()));
        let left: Vec<_> = std::fs::read_dir(&base).unwrap().flatten().map(|e| e.file_name()).collect();
        unmount_all(&target).unwrap();
        std::fs::remove_dir_all(&base).unwrap();
        mounted.unwrap();
        assert_eq!(owner.unwrap(), (327680, 327680), "root's file as the pod's root");
        assert_eq!(left.len(), 4, "the idmapped lower dirs are gone: {left:?}");
    }

    #[test]
    fn recursive_options_are_attributes_of_the_whole_tree() {
        let o = MountOptions::parse(&["rbind", "rro", "rnosuid", "rdev"]);
        assert_eq!(o.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert_eq!(o.recursive, RecursiveAttrs { set: ATTR_RDONLY | ATTR_NOSUID, clear: ATTR_NODEV });
        assert!(o.data.is_empty());
        // An access-time mode clears the whole access-time field first.
        let o = MountOptions::parse(&["rnoatime"]);
        assert_eq!(o.recursive, RecursiveAttrs { set: ATTR_NOATIME, clear: ATTR_ATIME_MASK });
    }

    #[test]
    fn overlay_options_are_data() {
        let o = MountOptions::parse(&["index=off", "workdir=/w", "upperdir=/u", "lowerdir=/a:/b"]);
        assert_eq!(o.flags, MsFlags::empty());
        assert_eq!(o.data_string().unwrap(), "index=off,workdir=/w,upperdir=/u,lowerdir=/a:/b");
    }
}
