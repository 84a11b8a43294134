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
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions { flags: MsFlags::empty(), propagation: Vec::new(), data: Vec::new() }
    }
}

impl MountOptions {
    pub fn parse<S: AsRef<str>>(options: &[S]) -> MountOptions {
        let mut out = MountOptions::default();
        for opt in options {
            let opt = opt.as_ref();
            if let Some(p) = propagation(opt) {
                out.propagation.push(p);
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

/// Every option `flag` and `propagation` know (the rest is filesystem data).
pub(crate) const OPTION_NAMES: [&str; 35] = [
    "ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "sync", "async", "dirsync", "remount", "mand",
    "nomand", "noatime", "atime", "nodiratime", "diratime", "relatime", "norelatime", "strictatime",
    "nostrictatime", "silent", "loud", "bind", "rbind", "defaults", "private", "rprivate", "shared", "rshared",
    "slave", "rslave", "unbindable", "runbindable",
];

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
    let remount = opts.is_bind() && !opts.bind_remount_flags().is_empty();
    if remount || !opts.propagation.is_empty() {
        let top = reopen()?;
        if remount {
            let flags =
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | opts.bind_remount_flags() | sys.locked_flags(&top.path);
            sys.mount(None, &top.path, None, flags, None)?;
        }
        for p in &opts.propagation {
            sys.mount(None, &top.path, None, *p, None)?;
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
#[derive(Debug, Clone, PartialEq)]
pub struct RootfsMount {
    pub typ: String,
    pub source: String,
    pub options: Vec<String>,
}

/// mount(2) takes at most a page of options.
const MAX_MOUNT_DATA: usize = 4095;

/// Mount the layers of a root filesystem on `target`, in order.
pub fn mount_rootfs(mounts: &[RootfsMount], target: &Path) -> io::Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        let opts = MountOptions::parse(&m.options);
        let typ = if m.typ == "bind" { "none" } else { m.typ.as_str() };
        let too_long = opts.data_string().is_some_and(|d| d.len() > MAX_MOUNT_DATA);
        let mounted = if typ == "overlay" && too_long {
            mount_overlay_by_parts(&opts, target)
        } else {
            mount_with(&Kernel, typ, Path::new(&m.source), target, &opts, &|| Ok(MountTarget::plain(target)))
        };
        mounted.map_err(|e| {
            let _ = unmount_all(target);
            io::Error::new(
                e.kind(),
                format!("mount rootfs layer {i} ({} {} {:?}) on {}: {e}", m.typ, m.source, m.options, target.display()),
            )
        })?;
    }
    Ok(())
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
        let mounted = mount_rootfs(&[m], &target);
        let seen = (0..140).all(|i| target.join(format!("f{i}")).exists());
        unmount_all(&target).unwrap();
        std::fs::remove_dir_all(&base).unwrap();
        mounted.unwrap();
        assert!(seen, "every layer is visible");
    }

    #[test]
    fn overlay_options_are_data() {
        let o = MountOptions::parse(&["index=off", "workdir=/w", "upperdir=/u", "lowerdir=/a:/b"]);
        assert_eq!(o.flags, MsFlags::empty());
        assert_eq!(o.data_string().unwrap(), "index=off,workdir=/w,upperdir=/u,lowerdir=/a:/b");
    }
}
