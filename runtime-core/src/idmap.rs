//! Idmapped bind mounts (a mount's uidMappings/gidMappings): made by the
//! runtime, in the host's user namespace (only there may a host filesystem be
//! idmapped), as detached mounts that init attaches inside the rootfs.

use crate::clone3::{clone3, CloneArgs};
use crate::mount::MountOptions;
use crate::new_mount_api;
use nix::mount::MsFlags;
use oci_spec::runtime::{LinuxIdMapping, Mount, Spec};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// For each mount of the spec that has id mappings: its index and a detached,
/// idmapped mount of its source.
pub(crate) fn prepare(spec: &Spec) -> Result<Vec<(usize, OwnedFd)>, String> {
    let mut out = Vec::new();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let (Some(uids), Some(gids)) = (m.uid_mappings(), m.gid_mappings()) else {
            if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
                return Err(format!("mount {}: uidMappings and gidMappings go together", m.destination().display()));
            }
            continue;
        };
        let fd = idmapped(m, uids, gids).map_err(|e| format!("idmapped mount {}: {e}", m.destination().display()))?;
        out.push((i, fd));
    }
    Ok(out)
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
            std::fs::write(format!("/proc/{pid}/{file}"), text).map_err(|e| io::Error::new(e.kind(), format!("write {file}: {e}")))?;
        }
        Ok(std::fs::File::open(format!("/proc/{pid}/ns/user"))?.into())
    })();
    drop((hold_r, hold_w));
    // A subreaping caller may reap it first: then this finds no child, fine.
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    result
}
