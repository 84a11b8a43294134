//! Kubernetes' view of a runtime: `CriEnv` is an [`Env`] whose containerd has
//! its CRI plugin loaded, with the runtime handlers `ferrum` and `runc` (the
//! reference), a pause image built locally, a test CNI plugin, and a CRI v1
//! client on containerd's socket. Everything a pod leaves (shims, mounts,
//! cgroups, network namespaces, runtime state) is found by `leftovers_after`
//! and removed on drop.

mod client;
mod cni;
mod config;
mod lifecycle;
mod pod;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::containerd::{containerd_config_schema, Env, Options};
use crate::image::{busybox_layer, ImageBuilder, DEFAULT_IMAGE};

pub use client::CriClient;
pub use cni::POD_ADDRESS;
pub use config::FerrumHandler;
pub use k8s_cri::v1 as api;
pub use pod::{pod_security_context, security_context};

/// The namespace the CRI plugin keeps everything in.
pub const CRI_NAMESPACE: &str = "k8s.io";
/// The sandbox image: busybox whose entrypoint sleeps forever, like pause.
pub const PAUSE_IMAGE: &str = "localhost/ferrum/pause:local";
/// The image app containers run.
pub const APP_IMAGE: &str = DEFAULT_IMAGE;

/// Where ferrum's shim keeps runtime state for the CRI's namespace (shim/src/manager.rs).
const FERRUM_STATE: &str = "/run/ferrum/containers/k8s.io";

/// A runtime handler of the private containerd's CRI config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    Ferrum,
    /// containerd's runc-v2 shim with runc: the reference every check is compared with.
    Runc,
}

impl Handler {
    pub fn name(self) -> &'static str {
        match self {
            Handler::Ferrum => "ferrum",
            Handler::Runc => "runc",
        }
    }

    /// The file name of the shim binary containerd starts for the handler.
    pub fn shim_binary(self) -> &'static str {
        match self {
            Handler::Ferrum => "containerd-shim-ferrum-v2",
            Handler::Runc => "containerd-shim-runc-v2",
        }
    }
}

/// Runs a check `fn(Handler)` under ferrum and under runc, as two tests
/// `<check>::ferrum` and `<check>::runc`.
#[macro_export]
macro_rules! for_each_handler {
    ($($check:ident),* $(,)?) => {$(
        mod $check {
            #[test]
            fn ferrum() {
                super::$check($crate::cri::Handler::Ferrum)
            }
            #[test]
            fn runc() {
                super::$check($crate::cri::Handler::Runc)
            }
        }
    )*};
}

#[derive(Debug, Clone, Default)]
pub struct CriOptions {
    pub ferrum: FerrumHandler,
    /// Also run ferrum-snapshotter (for a handler's own snapshotter).
    pub ferrum_snapshotter: bool,
}

pub struct CriEnv {
    /// Some until drop, which drops it first: containerd and the shims must be
    /// gone before the runtime state they might still write is removed.
    env: Option<Env>,
    client: CriClient,
    cni: cni::Cni,
    dir: PathBuf,
    runc_root: PathBuf,
    /// Every pod and container id the CRI gave out, for the per-id runtime state.
    ids: Mutex<Vec<String>>,
    next_pod: AtomicU32,
}

impl CriEnv {
    /// For tests: a CriEnv with default options, or a panic saying why not.
    pub fn start() -> CriEnv {
        CriEnv::start_with(CriOptions::default()).expect("starting containerd with the CRI plugin")
    }

    pub fn start_with(options: CriOptions) -> Result<CriEnv> {
        let schema = containerd_config_schema()?;
        // The CRI files live in a dir of their own, made before the Env so the
        // config can point at it, and removed after the Env on drop.
        let dir = tempdir_for_cri()?;
        let built = (|| {
            let cni = cni::Cni::install(&dir)?;
            let runc_root = dir.join("runc");
            let paths = config::CriPaths {
                pause_image: PAUSE_IMAGE,
                runc_root: &runc_root,
                cni_bin: &cni.bin,
                cni_conf: &cni.conf,
            };
            let env = Env::start_with(Options {
                ferrum_snapshotter: options.ferrum_snapshotter,
                cri: true,
                extra_config: config::render(schema, &paths, &options.ferrum),
            })?;
            Ok::<_, anyhow::Error>((cni, runc_root, env))
        })();
        let (cni, runc_root, env) = match built {
            Ok(parts) => parts,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let socket = env.address().to_path_buf();
        let cri = CriEnv {
            client: CriClient::connect(&socket)?,
            env: Some(env),
            cni,
            dir,
            runc_root,
            ids: Mutex::new(Vec::new()),
            next_pod: AtomicU32::new(0),
        };
        cri.import_images()?;
        Ok(cri)
    }

    pub fn env(&self) -> &Env {
        self.env.as_ref().expect("the Env lives until drop")
    }

    pub fn client(&self) -> &CriClient {
        &self.client
    }

    /// Where tests may put files of their own (seccomp profiles, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The test CNI plugin's calls so far (`ADD <id>`, `DEL <id>`).
    pub fn cni_calls(&self) -> Vec<String> {
        self.cni.calls()
    }

    fn import_images(&self) -> Result<()> {
        let env = self.env();
        env.import_busybox_into(CRI_NAMESPACE)?;
        let pause = ImageBuilder::new(PAUSE_IMAGE)
            .layer(busybox_layer(env.busybox_path())?)
            .entrypoint(&["/bin/sleep", "2147483647"]);
        env.import_image_into(CRI_NAMESPACE, "pause", &pause)
    }

    fn remember(&self, id: &str) {
        self.ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id.to_string());
    }

    /// The Env's leftovers plus runtime state of any pod or container of this
    /// CriEnv, polled until empty or `grace` has passed.
    pub fn leftovers_after(&self, grace: Duration) -> Vec<String> {
        let deadline = std::time::Instant::now() + grace;
        loop {
            let mut left = self.env().leftovers_after(Duration::ZERO);
            // A pod's own cgroup (its cgroup_parent) is kubelet's to make and
            // remove, not the runtime's; the Env removes it on drop.
            left.retain(|l| !is_pod_cgroup(l));
            left.extend(self.runtime_state());
            if left.is_empty() || std::time::Instant::now() >= deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn runtime_state(&self) -> Vec<String> {
        let runc = fs::read_dir(self.runc_root.join(CRI_NAMESPACE))
            .into_iter()
            .flatten()
            .flatten();
        let runc = runc.map(|e| format!("runc state {}", e.path().display()));
        let ids = self.ids.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let ferrum = ids
            .into_iter()
            .map(|id| Path::new(FERRUM_STATE).join(id))
            .filter(|p| p.exists())
            .map(|p| format!("ferrum state {}", p.display()));
        runc.chain(ferrum).collect()
    }

    /// Live shims of this containerd whose binary is `handler`'s.
    pub fn shims(&self, handler: Handler) -> Vec<i32> {
        self.env()
            .footprint()
            .shims()
            .into_iter()
            .filter(|p| {
                Path::new(&p.cmdline[0])
                    .file_name()
                    .is_some_and(|n| n == handler.shim_binary())
            })
            .map(|p| p.pid)
            .collect()
    }
}

impl Drop for CriEnv {
    fn drop(&mut self) {
        drop(self.env.take());
        let ids = self.ids.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for id in ids {
            let _ = fs::remove_dir_all(Path::new(FERRUM_STATE).join(id));
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `cgroup <hierarchy>/<env namespace>/pod<n>`, as `pod_config` names them.
fn is_pod_cgroup(leftover: &str) -> bool {
    let Some(path) = leftover.strip_prefix("cgroup ") else {
        return false;
    };
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("pod"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// `/tmp/ferrum-cri-<pid>-<n>`: CNI files and runc's root, next to the Env's dir.
fn tempdir_for_cri() -> Result<PathBuf> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!("/tmp/ferrum-cri-{}-{n}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
}
