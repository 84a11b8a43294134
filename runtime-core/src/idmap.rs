//! Idmapped bind mounts (a mount's uidMappings/gidMappings): made by the
//! runtime, in the host's user namespace (only there may a host filesystem be
//! idmapped), as detached mounts that init attaches inside the rootfs; in a
//! user namespace, plain bind sources the same way. Also
//! the idmapped layers of a rootfs that containerd asks for with `uidmap=`
//! and `gidmap=` (pods with user namespaces).

use crate::clone3::{clone3, CloneArgs};
use crate::mount::MountOptions;
use crate::new_mount_api;
use crate::procfs::{self, Base};
use pathrs::flags::OpenFlags;
use nix::mount::MsFlags;
use nix::mount::{umount2, MntFlags};
use oci_spec::runtime::{LinuxIdMapping, LinuxIdMappingBuilder, LinuxNamespaceType, Mount, Spec};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// For each mount of the spec that has id mappings: its index and a detached,
/// idmapped mount of its source. In a user namespace (made or joined), every
/// other bind mount's source too, as a detached copy of its tree: root in
/// there may not reach it (containerd keeps a pod's /dev/shm, hosts and
/// resolv.conf below a directory of mode 0700 that is host root's).
pub(crate) fn prepare(spec: &Spec) -> Result<Vec<(usize, OwnedFd)>, String> {
    let in_user_namespace = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|n| n.iter().any(|n| n.typ() == LinuxNamespaceType::User));
    let mut out = Vec::new();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let (Some(uids), Some(gids)) = (m.uid_mappings(), m.gid_mappings()) else {
            if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
                return Err(format!("mount {}: uidMappings and gidMappings go together", m.destination().display()));
            }
            if in_user_namespace {
                let source = bind_source(m).map_err(|e| {
                    format!("mount bind on {}: bind source {}: {e}", m.destination().display(), source_of(m))
                })?;
                out.extend(source.map(|fd| (i, fd)));
            }
            continue;
        };
        let fd = idmapped(m, uids, gids).map_err(|e| format!("idmapped mount {}: {e}", m.destination().display()))?;
        out.push((i, fd));
    }
    Ok(out)
}

fn source_of(m: &Mount) -> String {
    m.source().as_ref().map_or_else(String::new, |s| s.display().to_string())
}

/// A bind mount's source as a detached copy of its tree (the whole subtree
/// for `rbind`), which init attaches as it would bind it; None for any other mount.
fn bind_source(m: &Mount) -> io::Result<Option<OwnedFd>> {
    let opts = MountOptions::parse(m.options().as_deref().unwrap_or(&[]));
    if !opts.is_bind() && m.typ().as_deref() != Some("bind") {
        return Ok(None);
    }
    let source = m.source().as_ref().ok_or_else(|| io::Error::other("no source"))?;
    new_mount_api::clone_tree(source, opts.flags.contains(MsFlags::MS_REC)).map(Some)
}

fn idmapped(m: &Mount, uids: &[LinuxIdMapping], gids: &[LinuxIdMapping]) -> io::Result<OwnedFd> {
    let opts = MountOptions::parse(m.options().as_deref().unwrap_or(&[]));
    if !opts.is_bind() && m.typ().as_deref() != Some("bind") {
        return Err(io::Error::other("only bind mounts can carry id mappings"));
    }
    let source = m.source().as_ref().ok_or_else(|| io::Error::other("no source"))?;
    let recursive = opts.flags.contains(MsFlags::MS_REC);
    let userns = user_namespace(uids, gids)?;
    let tree = new_mount_api::clone_tree(source, recursive)?;
    new_mount_api::set_idmap(&tree, &userns, new_mount_api::mount_attrs(opts.flags), recursive)?;
    Ok(tree)
}

/// A user namespace with these maps, held by an fd: a child is cloned into a
/// new one, its maps written, its namespace opened, and the child let go.
fn user_namespace(uids: &[LinuxIdMapping], gids: &[LinuxIdMapping]) -> io::Result<OwnedFd> {
    let (hold_r, hold_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (hold, held) = (hold_r.as_raw_fd(), hold_w.as_raw_fd());
    let mut args = CloneArgs { flags: libc::CLONE_NEWUSER as u64, exit_signal: libc::SIGCHLD as u64, ..Default::default() };
    // SAFETY: see clone3; the child only reads from a pipe and exits.
    let pid = unsafe { clone3(&mut args)? };
    if pid == 0 {
        unsafe {
            // Our copy of the write end would keep the read from ever ending.
            libc::close(held);
            let mut byte = 0u8;
            libc::read(hold, (&mut byte as *mut u8).cast(), 1);
            libc::_exit(0);
        }
    }
    let result = (|| {
        for (file, maps) in [("uid_map", uids), ("gid_map", gids)] {
            let text: String = maps.iter().map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size())).collect();
            procfs::write(Base::Pid(pid), file, text.as_bytes())?;
        }
        Ok(procfs::open_link(Base::Pid(pid), "ns/user", OpenFlags::O_RDONLY)?.into())
    })();
    drop((hold_r, hold_w));
    // A subreaping caller may reap it first: then this finds no child, fine.
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    result
}

/// containerd's `uidmap=` and `gidmap=` options on a snapshot's mounts, which
/// no filesystem knows: containerd's own mount code makes the layers idmapped
/// mounts instead (an overlay's lower dirs, any other mount as a whole).
/// Taken out of `options`; the user namespace of those maps when given.
pub(crate) fn take_layer_maps(options: &mut Vec<String>) -> io::Result<Option<OwnedFd>> {
    let mut take = |key: &str| {
        let i = options.iter().position(|o| o.starts_with(key))?;
        Some(options.remove(i).split_off(key.len()))
    };
    match (take("uidmap="), take("gidmap=")) {
        (None, None) => Ok(None),
        (Some(uids), Some(gids)) => user_namespace(&parse_maps(&uids)?, &parse_maps(&gids)?).map(Some),
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "uidmap= and gidmap= go together")),
    }
}

/// `container:host:size[,…]`, as containerd writes them.
fn parse_maps(text: &str) -> io::Result<Vec<LinuxIdMapping>> {
    text.split(',')
        .map(|map| {
            let bad = || io::Error::new(io::ErrorKind::InvalidInput, format!("id map {map:?} is not container:host:size"));
            let ids: Vec<u32> = map.split(':').map(|n| n.parse().map_err(|_| bad())).collect::<io::Result<_>>()?;
            let [container, host, size] = ids[..] else { return Err(bad()) };
            LinuxIdMappingBuilder::default().container_id(container).host_id(host).size(size).build().map_err(io::Error::other)
        })
        .collect()
}

/// The lower dirs of an overlay, each bound idmapped through `userns` on a
/// dir of its own next to `target`, and `lowerdir=` rewritten to those, as
/// containerd does (a detached mount is no overlay layer before Linux 6.15).
/// Dropped once the overlay is mounted: it holds its own references.
pub(crate) struct IdmappedLowers(Vec<PathBuf>);

impl IdmappedLowers {
    pub(crate) fn attach(options: &mut [String], userns: &OwnedFd, target: &Path) -> io::Result<IdmappedLowers> {
        let lower = options
            .iter_mut()
            .find(|o| o.starts_with("lowerdir="))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "an overlay with id maps but no lowerdir"))?;
        let mut made = IdmappedLowers(Vec::new());
        let mut dirs = Vec::new();
        for (i, layer) in lower["lowerdir=".len()..].split(':').enumerate() {
            let dir = PathBuf::from(format!("{}.lower{i}", target.display()));
            match std::fs::create_dir(&dir) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => made.0.push(dir.clone()),
            }
            let tree = new_mount_api::clone_tree(Path::new(layer), false)?;
            new_mount_api::set_idmap(&tree, userns, 0, false)?;
            new_mount_api::attach(&tree, &dir)?;
            dirs.push(dir.display().to_string());
        }
        *lower = format!("lowerdir={}", dirs.join(":"));
        Ok(made)
    }
}

impl Drop for IdmappedLowers {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = umount2(dir, MntFlags::MNT_DETACH);
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Stack an idmapped copy of the mount at `target` on it.
pub(crate) fn idmap_in_place(target: &Path, userns: &OwnedFd) -> io::Result<()> {
    let tree = new_mount_api::clone_tree(target, false)?;
    new_mount_api::set_idmap(&tree, userns, 0, false)?;
    new_mount_api::attach(&tree, target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerds_maps_are_parsed() {
        let maps = parse_maps("0:327680:65536,65536:1000:1").unwrap();
        let triples: Vec<_> = maps.iter().map(|m| (m.container_id(), m.host_id(), m.size())).collect();
        assert_eq!(triples, [(0, 327680, 65536), (65536, 1000, 1)]);
        for bad in ["0:1", "0:x:1", "", "0:1:2:3"] {
            assert!(parse_maps(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_both_maps_are_taken() {
        let mut options = vec!["index=off".to_string()];
        assert!(take_layer_maps(&mut options).unwrap().is_none());
        let mut options = vec!["uidmap=0:1:1".to_string(), "lowerdir=/a".to_string()];
        assert!(take_layer_maps(&mut options).is_err());
    }
}
