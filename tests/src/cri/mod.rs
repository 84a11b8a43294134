//! Kubernetes' view of a runtime: `CriEnv` is an [`Env`] whose containerd has
//! its CRI plugin loaded, with the runtime handlers `ferrum`, `ferrum-features`
//! and `runc` (the reference), a pause image built locally, a test CNI plugin, and a CRI v1
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
use std::time::Duration;

use anyhow::{Context, Result};

use crate::containerd::{containerd_config_schema, Env, Options, Schema};
use crate::image::{busybox_layer, ImageBuilder, DEFAULT_IMAGE};

pub use client::CriClient;
pub use cni::{Network, BRIDGE_SUBNET, POD_ADDRESS};
pub use config::FerrumHandler;
pub use k8s_cri::v1 as api;
pub use pod::{pod_security_context, security_context};

/// The namespace the CRI plugin keeps everything in.
pub const CRI_NAMESPACE: &str = "k8s.io";
/// The sandbox image: busybox whose entrypoint sleeps forever, like pause.
pub const PAUSE_IMAGE: &str = "localhost/ferrum/pause:local";
/// The image app containers run.
pub const APP_IMAGE: &str = DEFAULT_IMAGE;

/// A runtime handler of the private containerd's CRI config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// ferrum's own runtime type, `io.containerd.ferrum.v2`.
    Ferrum,
    /// ferrum's shim under runc's runtime type (`runtime_path`): containerd
    /// 2.0–2.3 read a runtime's features (`-info`) only for that type, and
    /// offer user namespaces and recursive read-only mounts only after.
    FerrumFeatures,
    /// containerd's runc-v2 shim with runc: the reference every check is compared with.
    Runc,
}

impl Handler {
    pub fn name(self) -> &'static str {
        match self {
            Handler::Ferrum => "ferrum",
            Handler::FerrumFeatures => "ferrum-features",
            Handler::Runc => "runc",
        }
    }

    /// The file name of the shim binary containerd starts for the handler.
    pub fn shim_binary(self) -> &'static str {
        match self {
            Handler::Ferrum | Handler::FerrumFeatures => "containerd-shim-ferrum-v2",
            Handler::Runc => "containerd-shim-runc-v2",
        }
    }
}

/// Runs a check `fn(Handler)` under ferrum and under runc, as two tests
/// `<check>::ferrum` and `<check>::runc`.
#[macro_export]
macro_rules! for_each_handler {
    ($($check:ident),* $(,)?) => {
        $crate::for_handlers!([Ferrum => ferrum, Runc => runc] $($check),*);
    };
}

/// Runs each check `fn(Handler)` under the handlers listed, as one test
/// `<check>::<test>` per handler: `for_handlers!([FerrumFeatures =>
/// ferrum_features, Runc => runc] check_a, check_b)`.
#[macro_export]
macro_rules! for_handlers {
    (@one $check:ident [$($handler:ident => $test:ident),*]) => {
        mod $check {$(
            #[test]
            fn $test() {
                super::$check($crate::cri::Handler::$handler)
            }
        )*}
    };
    ($handlers:tt $($check:ident),* $(,)?) => {$(
        $crate::for_handlers!(@one $check $handlers);
    )*};
}

#[derive(Debug, Clone, Default)]
pub struct CriOptions {
    pub ferrum: FerrumHandler,
    /// Also run ferrum-snapshotter (for a handler's own snapshotter).
    pub ferrum_snapshotter: bool,
    /// The pods' network. A bridge puts containerd in a network namespace of
    /// its own (where the bridge is made), so hostNetwork pods get that one.
    pub network: Network,
    /// Run containerd inside a systemd node (`Options::node`).
    pub node: Option<i32>,
    /// CRIU on containerd's PATH (`Options::criu`).
    pub criu: bool,
    /// OCI hooks for every handler's containers: a `base_runtime_spec` of
    /// containerd's default spec (`ctr oci spec`) with these `hooks`.
    /// Sandboxes may not get them (1.6's CRI starts a sandbox from its own spec).
    pub base_spec_hooks: Option<serde_json::Value>,
}

pub struct CriEnv {
    /// Some until drop, which drops it first: containerd and the shims must be
    /// gone before the dir holding their state is removed.
    env: Option<Env>,
    client: CriClient,
    cni: cni::Cni,
    dir: PathBuf,
    /// The `Root` option of runc and ferrum: `<root>/k8s.io/<id>` is a container's state.
    state_roots: [PathBuf; 2],
    next_pod: AtomicU32,
    schema: Schema,
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
            let cni = cni::Cni::install(&dir, options.network)?;
            let state_roots = [dir.join("runc"), dir.join("ferrum")];
            let options_file = dir.join("ferrum-options.toml");
            let lines = options.ferrum.option_lines(&state_roots[1]);
            fs::write(&options_file, lines.join("\n") + "\n")
                .with_context(|| format!("writing {}", options_file.display()))?;
            let shim = crate::ferrum_binary(Handler::Ferrum.shim_binary());
            // containerd takes only an absolute runtime_path.
            let shim = shim.canonicalize().unwrap_or(shim);
            let base_spec = match &options.base_spec_hooks {
                Some(hooks) => Some(write_base_spec(&dir, hooks)?),
                None => None,
            };
            let paths = config::CriPaths {
                pause_image: PAUSE_IMAGE,
                runc_root: &state_roots[0],
                ferrum_root: &state_roots[1],
                ferrum_options_file: &options_file,
                ferrum_shim: &shim,
                cni_bin: &cni.bin,
                cni_conf: &cni.conf,
                base_runtime_spec: base_spec.as_deref(),
            };
            let env = Env::start_with(Options {
                ferrum_snapshotter: options.ferrum_snapshotter,
                cri: true,
                extra_config: config::render(schema, &paths, &options.ferrum),
                private_network: options.network == Network::Bridge,
                node: options.node,
                criu: options.criu,
            })?;
            Ok::<_, anyhow::Error>((cni, state_roots, env))
        })();
        let (cni, state_roots, env) = match built {
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
            state_roots,
            next_pod: AtomicU32::new(0),
            schema,
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

    /// What the runtimes keep per container, in either handler's state root.
    fn runtime_state(&self) -> Vec<String> {
        self.state_roots
            .iter()
            .flat_map(|root| {
                fs::read_dir(root.join(CRI_NAMESPACE))
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .map(|e| format!("runtime state {}", e.path().display()))
            .collect()
    }

    /// `Root` of the handler's runtime options: its state is `<root>/k8s.io/<id>`.
    pub fn state_root(&self, handler: Handler) -> &Path {
        match handler {
            Handler::Runc => &self.state_roots[0],
            Handler::Ferrum | Handler::FerrumFeatures => &self.state_roots[1],
        }
    }

    /// The handler whose shim containerd really starts for `handler`'s pods:
    /// containerd 1.6's CRI reads `runtime_path` but never hands it on, so
    /// there `ferrum-features` runs runc's shim (io.containerd.runc.v2).
    pub fn served_by(&self, handler: Handler) -> Handler {
        match (handler, self.schema) {
            (Handler::FerrumFeatures, Schema::V2) => Handler::Runc,
            _ => handler,
        }
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

/// containerd's default spec with `hooks`, as `<dir>/base-spec.json`.
fn write_base_spec(dir: &Path, hooks: &serde_json::Value) -> Result<PathBuf> {
    let ctr = crate::binaries::Binaries::locate(false)?.ctr;
    let out = std::process::Command::new(&ctr).args(["oci", "spec"]).output().with_context(|| format!("run {}", ctr.display()))?;
    anyhow::ensure!(out.status.success(), "ctr oci spec: {}", String::from_utf8_lossy(&out.stderr));
    let mut spec: serde_json::Value = serde_json::from_slice(&out.stdout).context("parse ctr oci spec")?;
    spec["hooks"] = hooks.clone();
    let path = dir.join("base-spec.json");
    fs::write(&path, serde_json::to_vec_pretty(&spec)?).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
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
