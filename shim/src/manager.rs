//! The `start` and `delete` subcommands: what containerd runs before it can talk
//! to a shim, and after a shim died.
//!
//! `start` decides which shim serves the container (one per pod: containers with
//! the same sandbox id share one), starts the daemon when there is none yet, and
//! answers with its address in the form the calling containerd understands.

use crate::args::Flags;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where shim sockets live. Paths are hashed: a Unix socket path has 108 bytes.
const SOCKET_DIR: &str = "/run/ferrum/s";

/// Annotations that put containers in one group (one shim): the CRI's sandbox
/// id, or our own label for users outside Kubernetes.
const GROUP_ANNOTATIONS: [&str; 2] = ["io.kubernetes.cri.sandbox-id", "io.ferrum.shim.group"];

/// The daemon finds its listening socket as fd 3, as containerd's own shims do.
pub const LISTENER_FD: i32 = 3;
/// Tells the daemon which socket file to remove when it exits.
pub const SOCKET_ENV: &str = "FERRUM_SHIM_SOCKET";

/// Runtime-core's state for a namespace (like runc's /run/containerd/runc/<ns>).
pub fn state_root(namespace: &str) -> PathBuf {
    Path::new("/run/ferrum/containers").join(namespace)
}

fn group_of(bundle: &Path, id: &str) -> String {
    let annotations = std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("annotations").cloned());
    GROUP_ANNOTATIONS
        .iter()
        .find_map(|k| annotations.as_ref()?.get(*k)?.as_str().map(String::from))
        .unwrap_or_else(|| id.to_string())
}

fn socket_path(flags: &Flags, group: &str) -> PathBuf {
    let mut h = Sha256::new();
    for part in [flags.address.as_str(), flags.namespace.as_str(), group] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    Path::new(SOCKET_DIR).join(name)
}

pub fn start(flags: &Flags) -> Result<()> {
    let bundle = std::env::current_dir().context("bundle (working directory)")?;
    let group = group_of(&bundle, &flags.id);
    let socket = socket_path(flags, &group);
    let address = format!("unix://{}", socket.display());

    let running = UnixStream::connect(&socket).is_ok();
    if !running {
        // A dead shim's socket file; bind would fail on it.
        let _ = std::fs::remove_file(&socket);
        std::fs::create_dir_all(SOCKET_DIR).with_context(|| format!("create {SOCKET_DIR}"))?;
        let listener = UnixListener::bind(&socket).with_context(|| format!("listen on {}", socket.display()))?;
        if let Err(e) = spawn_daemon(flags, &bundle, &listener, &socket) {
            let _ = std::fs::remove_file(&socket);
            return Err(e);
        }
    }
    std::fs::write(bundle.join("address"), &address).context("write address file")?;
    reply(&address)
}

fn spawn_daemon(flags: &Flags, bundle: &Path, listener: &UnixListener, socket: &Path) -> Result<()> {
    let exe = std::env::current_exe().context("find own executable")?;
    let listen_fd = listener.as_raw_fd();
    let mut cmd = Command::new(exe);
    cmd.args(flags.daemon_args())
        .current_dir(bundle)
        .env(SOCKET_ENV, socket)
        // containerd reads start's stdout to EOF: the daemon must not hold it.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: `start` is single-threaded; the closure only makes raw syscalls.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec set: clear it instead.
            let handed_over = if listen_fd == LISTENER_FD {
                libc::fcntl(listen_fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(listen_fd, LISTENER_FD)
            };
            if libc::setsid() < 0 || handed_over < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // The daemon is reparented (setsid, we exit); containerd watches it by address.
    cmd.spawn().context("start shim daemon")?;
    Ok(())
}

/// containerd 1.x wants the bare address; 2.x (which sets MAX_SHIM_VERSION)
/// takes a JSON reply and uses task API v3 when it says version 3.
fn reply(address: &str) -> Result<()> {
    let out = if std::env::var_os("MAX_SHIM_VERSION").is_some() {
        serde_json::json!({ "version": 3, "address": address, "protocol": "ttrpc" }).to_string()
    } else {
        address.to_string()
    };
    let mut stdout = std::io::stdout();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// `shim delete`: the daemon is gone (crashed or killed); clean up what it left
/// and tell containerd how the container ended.
pub fn delete(flags: &Flags) -> Result<()> {
    let bundle = match &flags.bundle {
        Some(b) => b.clone(),
        None => std::env::current_dir().context("bundle (working directory)")?,
    };
    let mut pid = 0;
    match runtime_core::Container::load(&state_root(&flags.namespace), &flags.id) {
        Ok(c) => {
            pid = c.pid();
            c.delete().with_context(|| format!("delete container {}", flags.id))?;
        }
        Err(runtime_core::Error::NotFound { .. }) => {}
        Err(e) => return Err(e).context("load container state"),
    }
    runtime_core::mount::unmount_all(&bundle.join("rootfs")).context("unmount rootfs")?;
    if let Ok(address) = std::fs::read_to_string(bundle.join("address")) {
        // Only a socket nobody answers on; a grouped shim may still serve others.
        if let Some(path) = address.trim().strip_prefix("unix://") {
            if UnixStream::connect(path).is_err() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    let response = containerd_shim_protos::api::DeleteResponse {
        pid: pid as u32,
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: protobuf::MessageField::some(crate::events::now()),
        ..Default::default()
    };
    let bytes = protobuf::Message::write_to_bytes(&response)?;
    std::io::stdout().write_all(&bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_annotation_groups_containers() {
        let dir = std::env::temp_dir().join(format!("ferrum-group-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}"#,
        )
        .unwrap();
        assert_eq!(group_of(&dir, "app"), "pod1");
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        assert_eq!(group_of(&dir, "app"), "app");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn socket_paths_fit_and_differ_per_containerd() {
        let mut f = Flags::parse(["-namespace", "n", "-id", "x", "-address", "/a"].map(String::from)).unwrap();
        let a = socket_path(&f, "x");
        f.address = "/b".into();
        assert_ne!(a, socket_path(&f, "x"));
        assert!(a.as_os_str().len() < 108);
    }
}
