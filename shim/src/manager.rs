//! The `start` and `delete` subcommands: what containerd runs before it can talk
//! to a shim, and after a shim died.
//!
//! `start` decides which shim serves the container (one per pod: containers with
//! the same sandbox id share one), starts the daemon when there is none yet, and
//! answers with its address in the form the calling containerd understands.

use crate::args::Flags;
use crate::options::{self, RuntimeOptions};
use runtime_core::cgroup::Cgroup;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::types::introspection::{RuntimeInfo, RuntimeVersion};
use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Names a directory for ferrum's sockets and state other than /run/ferrum,
/// in the environment containerd starts its shims with: a private containerd
/// (scripts/demo's, a test's) keeps everything of ferrum's in its own tree.
pub const RUN_DIR_ENV: &str = "FERRUM_RUN_DIR";

/// An absolute FERRUM_RUN_DIR; rootless, $XDG_RUNTIME_DIR/ferrum (where runc
/// keeps its state then: a rootless containerd's /run holds the host's
/// root-owned dirs); else /run/ferrum.
pub fn run_dir() -> PathBuf {
    let absolute = |var| std::env::var_os(var).map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(dir) = absolute(RUN_DIR_ENV) {
        return dir;
    }
    match absolute("XDG_RUNTIME_DIR") {
        Some(dir) if runtime_core::is_rootless() => dir.join("ferrum"),
        _ => PathBuf::from("/run/ferrum"),
    }
}

/// Where shim sockets live. Paths are hashed: a Unix socket path has 108 bytes.
fn socket_dir() -> PathBuf {
    run_dir().join("s")
}

/// Annotations that put containers in one group (one shim): the CRI's sandbox
/// id, or our own label for users outside Kubernetes.
const GROUP_ANNOTATIONS: [&str; 2] = ["io.kubernetes.cri.sandbox-id", "io.ferrum.shim.group"];

/// The daemon finds its listening socket as fd 3, as containerd's own shims do.
pub const LISTENER_FD: i32 = 3;
/// Tells the daemon which socket file to remove when it exits.
pub const SOCKET_ENV: &str = "FERRUM_SHIM_SOCKET";

/// Runtime-core's state for a namespace (like runc's /run/containerd/runc/<ns>).
pub fn state_root(namespace: &str) -> PathBuf {
    run_dir().join("containers").join(namespace)
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

fn socket_name(flags: &Flags, group: &str) -> String {
    let mut h = Sha256::new();
    for part in [flags.address.as_str(), flags.namespace.as_str(), group] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// How the calling containerd bootstraps its shims.
enum Bootstrap {
    /// containerd 1.x: a bare address on stdout, task API v2.
    Address,
    /// containerd 2.0–2.2 (sets MAX_SHIM_VERSION): JSON on stdout.
    Json,
    /// containerd 2.3+: BootstrapParams on stdin, BootstrapResult on stdout.
    Params(Box<BootstrapParams>),
}

impl Bootstrap {
    /// Which protocol the caller speaks, and the runtime options it passed.
    ///
    /// Before 2.3, stdin holds the runtime options as an Any (or nothing). An
    /// Any also parses as BootstrapParams (protobuf ignores unknown fields), so
    /// BootstrapParams are recognised by naming the same id and namespace as the
    /// command line, as containerd's own shims do.
    fn detect(flags: &Flags) -> Result<(Bootstrap, Option<Any>)> {
        let mut input = Vec::new();
        // Older containerds give /dev/null (or an empty pipe); never wait on a terminal.
        if !std::io::stdin().is_terminal() {
            std::io::stdin().read_to_end(&mut input).context("read bootstrap parameters from stdin")?;
        }
        if let Ok(params) = BootstrapParams::parse_from_bytes(&input) {
            if !input.is_empty() && params.instance_id == flags.id && params.namespace == flags.namespace {
                let options = params.extensions.iter().filter_map(|e| e.value.as_ref()).find(|a| options::is_options(a)).cloned();
                return Ok((Bootstrap::Params(Box::new(params)), options));
            }
        }
        let options = if input.is_empty() {
            None
        } else {
            Some(Any::parse_from_bytes(&input).context("stdin holds neither BootstrapParams nor runtime options")?)
        };
        let bootstrap = if std::env::var_os("MAX_SHIM_VERSION").is_some() { Bootstrap::Json } else { Bootstrap::Address };
        Ok((bootstrap, options))
    }

    /// Tell containerd where the shim is. Versions 3 mean task API v3.
    fn reply(&self, address: &str) -> Result<()> {
        let out = match self {
            Bootstrap::Address => address.as_bytes().to_vec(),
            Bootstrap::Json => {
                serde_json::json!({ "version": 3, "address": address, "protocol": "ttrpc" }).to_string().into_bytes()
            }
            Bootstrap::Params(_) => {
                BootstrapResult { version: 3, address: address.into(), protocol: "ttrpc".into(), ..Default::default() }
                    .write_to_bytes()?
            }
        };
        let mut stdout = std::io::stdout();
        stdout.write_all(&out)?;
        stdout.flush()?;
        Ok(())
    }
}

pub fn start(flags: &Flags) -> Result<()> {
    let (bootstrap, options) = Bootstrap::detect(flags)?;
    // Bad options fail here, where containerd shows our message to the user.
    let options = match &options {
        Some(any) => RuntimeOptions::from_any(any)?,
        None => RuntimeOptions::default(),
    };
    let mut flags = flags.clone();
    let mut socket_dir = socket_dir();
    let mut ttrpc_address = None;
    if let Bootstrap::Params(p) = &bootstrap {
        // The parameters win over flags and environment where they say something.
        // The level is an open enum, INFO = 0 and more verbose below: DEBUG is -4.
        if p.log_level.value() <= -4 {
            flags.debug = true;
        }
        if !p.namespace.is_empty() {
            flags.namespace = p.namespace.clone();
        }
        if !p.containerd_grpc_address.is_empty() {
            flags.address = p.containerd_grpc_address.trim_start_matches("unix://").into();
        }
        if !p.containerd_ttrpc_address.is_empty() {
            ttrpc_address = Some(p.containerd_ttrpc_address.trim_start_matches("unix://").to_string());
        }
        if let Some(dir) = p.socket_dir.as_deref().filter(|d| !d.is_empty()) {
            socket_dir = dir.into();
        }
    }
    let flags = &flags;
    let bundle = std::env::current_dir().context("bundle (working directory)")?;
    let group = group_of(&bundle, &flags.id);
    let socket = socket_dir.join(socket_name(flags, &group));
    let address = format!("unix://{}", socket.display());

    let shim_cgroup = find_shim_cgroup(&options.shim_cgroup)?;
    let running = UnixStream::connect(&socket).is_ok();
    if !running {
        // A dead shim's socket file; bind would fail on it.
        let _ = std::fs::remove_file(&socket);
        // Rootless without XDG_RUNTIME_DIR lands on /run/ferrum: say what to set.
        let hint = if runtime_core::is_rootless() && std::env::var_os(RUN_DIR_ENV).is_none() {
            " (running rootless: set XDG_RUNTIME_DIR or FERRUM_RUN_DIR to a directory the user owns)"
        } else {
            ""
        };
        std::fs::create_dir_all(&socket_dir).with_context(|| format!("create {}{hint}", socket_dir.display()))?;
        let listener = UnixListener::bind(&socket).with_context(|| format!("listen on {}{hint}", socket.display()))?;
        let spawned = spawn_daemon(flags, &bundle, &listener, &socket, ttrpc_address.as_deref())
            .and_then(|daemon| join_shim_cgroup(daemon, shim_cgroup.as_ref()));
        if let Err(e) = spawned {
            let _ = std::fs::remove_file(&socket);
            return Err(e);
        }
    }
    std::fs::write(bundle.join("address"), &address).context("write address file")?;
    bootstrap.reply(&address)
}

fn spawn_daemon(
    flags: &Flags,
    bundle: &Path,
    listener: &UnixListener,
    socket: &Path,
    ttrpc_address: Option<&str>,
) -> Result<Child> {
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
    if let Some(address) = ttrpc_address {
        cmd.env("TTRPC_ADDRESS", address);
    }
    cmd.env("GLIBC_TUNABLES", daemon_tunables(std::env::var("GLIBC_TUNABLES").ok()));
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
    let mut daemon = cmd.spawn().context("start shim daemon")?;
    if let Err(e) = adjust_oom_score(daemon.id()) {
        // containerd gets the error and will not talk to this daemon.
        let _ = daemon.kill();
        let _ = daemon.wait();
        return Err(e);
    }
    Ok(daemon)
}

/// The daemon's threads come and go (the blocking pool's, one per container
/// start that enters cgroups, see runtime-core's cgroup/birth.rs), and glibc
/// would keep each one's stack and malloc arena for a next thread: ~25 kB
/// resident apiece in every idle shim. Kept to none, the caller's own
/// tunables first.
fn daemon_tunables(callers: Option<String>) -> String {
    const OURS: &str = "glibc.pthread.stack_cache_size=0:glibc.malloc.arena_max=1";
    match callers.filter(|t| !t.is_empty()) {
        Some(t) => format!("{t}:{OURS}"),
        None => OURS.to_string(),
    }
}

/// ShimCgroup: the (existing) cgroup to move a new daemon into, in every
/// hierarchy where it exists, as runc's shim does. Checked even when the
/// group's shim runs already, so a wrong path is an error for every container.
/// Our containers' inits are placed in their own cgroups, so they do not
/// inherit it.
fn find_shim_cgroup(path: &str) -> Result<Option<Cgroup>> {
    if path.is_empty() {
        return Ok(None);
    }
    // Relative or not, the path is from each hierarchy's root.
    let dirs = Cgroup::resolve(Some(&Path::new("/").join(path)), "")?.dirs().to_vec();
    let existing: Vec<PathBuf> = dirs.into_iter().filter(|d| d.is_dir()).collect();
    if existing.is_empty() {
        anyhow::bail!("runtime options: ShimCgroup {path:?}: no such cgroup in any hierarchy");
    }
    Ok(Some(Cgroup::from_dirs(existing)))
}

fn join_shim_cgroup(mut daemon: Child, cgroup: Option<&Cgroup>) -> Result<()> {
    let Some(cgroup) = cgroup else { return Ok(()) };
    // Its message names the cgroup and the error already: not its source again.
    cgroup.add(daemon.id() as i32).map_err(|e| {
        // A shim that is not where it was asked to be must not serve.
        let _ = daemon.kill();
        let _ = daemon.wait();
        anyhow::anyhow!("runtime options: ShimCgroup: {e}")
    })
}

/// As containerd's own shims do: one above containerd's (our parent's)
/// oom_score_adj, so the kernel's OOM killer picks a shim before containerd.
/// Containers inherit it when their spec sets no oomScoreAdj, as under runc.
fn adjust_oom_score(daemon: u32) -> Result<()> {
    let containerd = std::os::unix::process::parent_id();
    let path = format!("/proc/{containerd}/oom_score_adj");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let score: i32 = text.trim().parse().with_context(|| format!("parse {path}: {text:?}"))?;
    let path = format!("/proc/{daemon}/oom_score_adj");
    std::fs::write(&path, (score + 1).min(1000).to_string()).with_context(|| format!("adjust OOM score of the shim: {path}"))
}

/// `-info` (containerd 2.x's runtime introspection, `ctr plugins
/// inspect-runtime`): the runtime options on stdin, checked as Create would,
/// and a RuntimeInfo on stdout naming ferrum and echoing them.
pub fn info() -> Result<()> {
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input).context("read runtime options from stdin")?;
    let options = Any::parse_from_bytes(&input).context("stdin is not runtime options")?;
    RuntimeOptions::from_any(&options)?;
    let info = RuntimeInfo {
        name: crate::RUNTIME_NAME.into(),
        version: protobuf::MessageField::some(RuntimeVersion {
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        }),
        options: if input.is_empty() { protobuf::MessageField::none() } else { protobuf::MessageField::some(options) },
        // containerd decodes this with typeurl (JSON); it checks e.g. idmap support.
        features: protobuf::MessageField::some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/features/Features".into(),
            value: serde_json::to_vec(&runtime_core::features())?,
            ..Default::default()
        }),
        ..Default::default()
    };
    std::io::stdout().write_all(&info.write_to_bytes()?)?;
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
    match runtime_core::Container::load(&options::remembered_state_root(&bundle, &flags.namespace), &flags.id) {
        Ok(c) => {
            pid = c.pid();
            for warning in c.delete().with_context(|| format!("delete container {}", flags.id))? {
                crate::warn!(&flags.id, "{warning}");
            }
        }
        Err(runtime_core::Error::NotFound { .. }) => {}
        Err(e) => return Err(e).context("load container state"),
    }
    runtime_core::mount::unmount_all(&runtime_core::mount::rootfs_target(&bundle)).context("unmount rootfs")?;
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
    fn the_daemon_keeps_the_callers_tunables_and_adds_ours() {
        let ours = "glibc.pthread.stack_cache_size=0:glibc.malloc.arena_max=1";
        assert_eq!(daemon_tunables(None), ours);
        assert_eq!(daemon_tunables(Some(String::new())), ours);
        assert_eq!(daemon_tunables(Some("glibc.malloc.check=3".into())), format!("glibc.malloc.check=3:{ours}"));
    }

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
        let a = socket_dir().join(socket_name(&f, "x"));
        f.address = "/b".into();
        assert_ne!(a, socket_dir().join(socket_name(&f, "x")));
        assert!(a.as_os_str().len() < 108);
    }
}
