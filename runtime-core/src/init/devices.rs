//! /dev inside the container: the devices every container gets, the spec's
//! devices, and the conventional links.

use super::paths::{create_in_root, fd_path, open_in_root, Leaf};
use super::{Describe, Result};
use crate::namespaces::Namespaces;
use crate::sys::Sys;
use nix::mount::MsFlags;
use oci_spec::runtime::{LinuxDeviceType, LinuxNamespaceType, Spec};
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

struct Device {
    path: PathBuf,
    kind: libc::mode_t,
    major: i64,
    minor: i64,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// What runc gives every container, whatever the spec lists.
const DEFAULT_DEVICES: [(&str, i64, i64); 6] =
    [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)];

const LINKS: [(&str, &str); 4] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

pub(super) fn setup(sys: &dyn Sys, root: &OwnedFd, spec: &Spec, ns: &Namespaces) -> Result<()> {
    let mut devices: Vec<Device> = DEFAULT_DEVICES
        .iter()
        .map(|(name, major, minor)| Device {
            path: Path::new("/dev").join(name),
            kind: libc::S_IFCHR,
            major: *major,
            minor: *minor,
            mode: 0o666,
            uid: 0,
            gid: 0,
        })
        .collect();
    for d in spec.linux().as_ref().and_then(|l| l.devices().clone()).unwrap_or_default() {
        let kind = match d.typ() {
            LinuxDeviceType::B => libc::S_IFBLK,
            LinuxDeviceType::P => libc::S_IFIFO,
            _ => libc::S_IFCHR,
        };
        devices.retain(|x| x.path != *d.path());
        devices.push(Device {
            path: d.path().clone(),
            kind,
            major: d.major(),
            minor: d.minor(),
            mode: d.file_mode().unwrap_or(0o666),
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        });
    }
    let in_userns = ns.has(LinuxNamespaceType::User);
    for d in &devices {
        create(sys, root, d, in_userns)?;
    }
    links(sys, root)
}

fn cname(name: &std::ffi::OsStr) -> Result<CString> {
    CString::new(name.as_bytes()).describe(|| "device name".into())
}

fn create(sys: &dyn Sys, root: &OwnedFd, d: &Device, in_userns: bool) -> Result<()> {
    let what = || format!("create device {}", d.path.display());
    let parent_path = d.path.parent().unwrap_or(Path::new("/dev"));
    let parent = create_in_root(root.as_fd(), parent_path, Leaf::Dir, 0o755).describe(what)?;
    let name = cname(d.path.file_name().unwrap_or_default())?;
    let dev = libc::makedev(d.major as u32, d.minor as u32);
    if let Err(err) = sys.mknodat(parent.as_fd(), &name, d.kind | d.mode, dev) {
        return match err.raw_os_error() {
            Some(libc::EEXIST) => Ok(()),
            // A user namespace may not mknod: bind the host's node instead, as
            // runc does. The container's own, or the runtime's (rootless):
            // asked only once refused, off the usual start path.
            Some(libc::EPERM) if in_userns || crate::rootless::in_user_namespace() => bind_host_device(sys, root, d),
            _ => Err(format!("{}: {err}", what())),
        };
    }
    sys.fchownat(parent.as_fd(), &name, d.uid, d.gid).describe(what)
}

fn bind_host_device(sys: &dyn Sys, root: &OwnedFd, d: &Device) -> Result<()> {
    let what = || format!("bind host device {}", d.path.display());
    let target = create_in_root(root.as_fd(), &d.path, Leaf::File, 0o600).describe(what)?;
    sys.mount(Some(&d.path), &fd_path(&target), None, MsFlags::MS_BIND, None).describe(what)
}

fn links(sys: &dyn Sys, root: &OwnedFd) -> Result<()> {
    let dev = open_in_root(root.as_fd(), Path::new("/dev")).describe(|| "open /dev".into())?;
    let symlink = |target: &str, name: &str| -> Result<()> {
        let (t, n) = (CString::new(target).expect("static"), CString::new(name).expect("static"));
        match sys.symlinkat(&t, dev.as_fd(), &n) {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => Err(format!("link /dev/{name} -> {target}: {e}")),
            _ => Ok(()),
        }
    };
    for (name, target) in LINKS {
        symlink(target, name)?;
    }
    // With a devpts instance of the container's own, /dev/ptmx must be its ptmx.
    if open_in_root(root.as_fd(), Path::new("/dev/pts/ptmx")).is_ok() {
        let _ = sys.unlinkat(dev.as_fd(), c"ptmx");
        symlink("pts/ptmx", "ptmx")?;
    }
    Ok(())
}
