//! `Env`: one private containerd (and, by default, ferrum-snapshotter) per test,
//! everything under `/tmp/ferrum-it-<pid>-<n>/`, all of it removed on drop.

mod config;

use std::fs::{self, File};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::binaries::{Binaries, SNAPSHOTTER};
use crate::cleanup::Footprint;
use crate::ctr::{run_ctr, wait_until, CtrOutput};
use crate::image::{busybox_image, DEFAULT_IMAGE};
use crate::snapshots::SnapshotClient;
pub(crate) use config::{quoted, render, ConfigPaths};
pub use config::Schema;

const CTR_TIMEOUT: Duration = Duration::from_secs(60);
const CONTAINERD_READY_TIMEOUT: Duration = Duration::from_secs(20);
const SNAPSHOTTER_READY_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_GRACE: Duration = Duration::from_secs(5);
const LOG_TAIL_LINES: usize = 40;

/// What an Env runs besides a plain containerd. Add fields here as tests need
/// them; callers write `Options { cri: true, ..Options::default() }`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Start ferrum-snapshotter and register it as proxy snapshotter `ferrum`
    /// (`ctr run --snapshotter ferrum`). Default on.
    pub ferrum_snapshotter: bool,
    /// Load containerd's CRI plugin. Default off: it needs more configuration
    /// (pass it in `extra_config`) and touches host state the tests do not need.
    pub cri: bool,
    /// TOML appended verbatim to config.toml. Must consist of whole tables
    /// (`[plugins."…"]`), since bare keys would land in the table before them.
    pub extra_config: String,
    /// Run containerd (and so its shims and CNI plugins) in a network namespace
    /// of its own, so a CNI bridge and its routes never touch the host's.
    pub private_network: bool,
    /// Run containerd — and so its shims and containers — inside the pid and
    /// mount namespaces of this process: a [`crate::SystemdNode`]'s systemd.
    pub node: Option<i32>,
    /// Put CRIU (scripts/install-criu's, FERRUM_CRIU_DIR) first on
    /// containerd's PATH, where runc and ferrum both look for `criu`.
    pub criu: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            ferrum_snapshotter: true,
            cri: false,
            extra_config: String::new(),
            private_network: false,
            node: None,
            criu: false,
        }
    }
}

/// Paths inside the Env's temp dir. Kept short: Unix socket paths max out at 108 bytes.
struct Layout {
    containerd_root: PathBuf,
    state: PathBuf,
    grpc: PathBuf,
    config: PathBuf,
    opt: PathBuf,
    tmp: PathBuf,
    fifo: PathBuf,
    snapshotter_root: PathBuf,
    snapshotter_socket: PathBuf,
    containerd_log: PathBuf,
    snapshotter_log: PathBuf,
}

impl Layout {
    fn new(dir: &Path) -> Layout {
        Layout {
            containerd_root: dir.join("root"),
            state: dir.join("state"),
            grpc: dir.join("grpc.sock"),
            config: dir.join("config.toml"),
            opt: dir.join("opt"),
            tmp: dir.join("tmp"),
            fifo: dir.join("fifo"),
            snapshotter_root: dir.join("snapshotter"),
            snapshotter_socket: dir.join("snapshotter.sock"),
            containerd_log: dir.join("containerd.log"),
            snapshotter_log: dir.join("snapshotter.log"),
        }
    }
}

/// containerd's name for ferrum's runtime (the shim binary containerd-shim-ferrum-v2).
pub const FERRUM_RUNTIME: &str = "io.containerd.ferrum.v2";
/// containerd's own Go shim over runc: the reference the differential tests compare with.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
/// A `--runtime` for an Env's ctr calls, spelled out for ctr as the runc-v2
/// shim with the ferrum CLI as its binary (`--runc-binary`), through a
/// wrapper that logs each call ([`Env::cli_calls`]): ctr's task options (from
/// `--no-pivot`, `--uidmap`) replace the binary silently, and runc would run.
pub const FERRUM_CLI: &str = "ferrum-cli";

/// A private containerd for one test. Its containers are found again for cleanup
/// by their cgroups, so keep ctr's default cgroup path (`/<namespace>/<id>`). Drop
/// kills every task and shim, stops the daemons and removes every mount, cgroup
/// and file the Env made, also when the test panicked.
pub struct Env {
    footprint: Footprint,
    layout: Layout,
    binaries: Binaries,
    containerd: Option<Child>,
    snapshotter: Option<Child>,
    private_network: bool,
    node: Option<i32>,
    criu_dir: Option<PathBuf>,
}

impl Env {
    pub fn start() -> Result<Env> {
        Env::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Result<Env> {
        let binaries = Binaries::locate(options.ferrum_snapshotter)?;
        let criu_dir = options.criu.then(crate::binaries::criu_dir).transpose()?;
        let schema = containerd_schema(&binaries.containerd)?;
        let (dir, namespace) = create_temp_dir()?;
        let layout = Layout::new(&dir);
        let footprint = Footprint::new(dir, namespace, layout.grpc.clone());
        // From here on, dropping `env` on an error cleans up whatever was started.
        let mut env = Env {
            footprint,
            layout,
            binaries,
            containerd: None,
            snapshotter: None,
            private_network: options.private_network,
            node: options.node,
            criu_dir,
        };
        for dir in [&env.layout.tmp, &env.layout.fifo] {
            fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        if let Some(snapshotter) = env.binaries.snapshotter.clone() {
            env.start_snapshotter(&snapshotter)?;
        }
        env.write_config(schema, &options)?;
        env.start_containerd()?;
        Ok(env)
    }

    /// For tests: an Env with the busybox image imported, or a panic saying why not.
    pub fn with_busybox() -> (Env, String) {
        let env = Env::start().expect("starting containerd with ferrum");
        let image = env.import_busybox().expect("importing busybox");
        (env, image)
    }

    /// `ctr run --runtime <ferrum> --snapshotter ferrum FLAGS… IMAGE ID ARGS…`
    pub fn run_on_ferrum(&self, flags: &[&str], image: &str, id: &str, args: &[&str]) -> CtrOutput {
        let mut all = vec!["--snapshotter", "ferrum"];
        all.extend_from_slice(flags);
        self.run_on(FERRUM_RUNTIME, &all, image, id, args)
    }

    /// `ctr run --runtime RUNTIME FLAGS… IMAGE ID ARGS…`
    pub fn run_on(&self, runtime: &str, flags: &[&str], image: &str, id: &str, args: &[&str]) -> CtrOutput {
        let mut a = vec!["run", "--runtime", runtime];
        a.extend_from_slice(flags);
        a.extend_from_slice(&[image, id]);
        a.extend_from_slice(args);
        self.ctr_timeout(&a, Duration::from_secs(120))
    }

    /// The host pid of task `id`, as `ctr tasks ls` shows it (None: no such task).
    pub fn task_pid(&self, id: &str) -> Option<i32> {
        let out = self.ctr(&["tasks", "ls"]);
        // TASK PID STATUS
        out.stdout.lines().find_map(|line| match line.split_whitespace().collect::<Vec<_>>()[..] {
            [task, pid, _] if task == id => pid.parse().ok(),
            _ => None,
        })
    }

    /// Task `id`'s status as `ctr tasks ls` shows it (RUNNING, PAUSED,
    /// STOPPED…), or "" without such a task.
    pub fn task_status(&self, id: &str) -> String {
        let out = self.ctr(&["tasks", "ls"]);
        // TASK PID STATUS
        out.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or("")
            .to_string()
    }

    /// Our own ttrpc client on the shim serving task `id`, at the address
    /// containerd keeps in the task's bundle: for the Task calls ctr has no
    /// command for.
    pub fn task_client(&self, id: &str) -> containerd_shim_protos::TaskClient {
        let bundle = self.root_dir().join("state/io.containerd.runtime.v2.task").join(self.namespace()).join(id);
        let address = fs::read_to_string(bundle.join("address")).expect("the task's shim address");
        containerd_shim_protos::TaskClient::new(ttrpc::Client::connect(address.trim()).expect("connect to the shim"))
    }

    /// SIGKILL task `id`, delete it once it has stopped and remove its
    /// container; panics if any step fails.
    pub fn remove_task(&self, id: &str) {
        self.ctr(&["tasks", "kill", "--signal", "SIGKILL", id]).assert_ok();
        self.remove_killed_task(id);
    }

    /// Delete task `id`, which was killed, once it has stopped, and remove
    /// its container; panics if either fails.
    pub fn remove_killed_task(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let deleted = self.ctr(&["tasks", "delete", id]);
            if deleted.success() {
                break;
            }
            assert!(Instant::now() < deadline, "task {id} could not be deleted: {deleted}");
            thread::sleep(Duration::from_millis(50));
        }
        self.ctr(&["containers", "rm", id]).assert_ok();
    }

    /// Stop containerd (SIGTERM, by PID) and start it again on the same root,
    /// state and sockets, as a node's containerd restarts under running tasks.
    pub fn restart_containerd(&mut self) -> Result<()> {
        self.stop_containerd();
        self.start_containerd()
    }

    pub fn namespace(&self) -> &str {
        self.footprint.namespace()
    }

    /// containerd's gRPC socket.
    pub fn address(&self) -> &Path {
        self.footprint.address()
    }

    pub fn root_dir(&self) -> &Path {
        self.footprint.root()
    }

    /// What identifies this Env's traces on the host; clone it to check after drop.
    pub fn footprint(&self) -> &Footprint {
        &self.footprint
    }

    /// `ctr -a SOCK -n NS ARGS…`, killed after 60 s. For `run`, `tasks start` and
    /// `tasks exec`, `--fifo-dir` is pointed into the temp dir unless given.
    pub fn ctr(&self, args: &[&str]) -> CtrOutput {
        self.ctr_timeout(args, CTR_TIMEOUT)
    }

    pub fn ctr_timeout(&self, args: &[&str], timeout: Duration) -> CtrOutput {
        self.ctr_with(crate::ctr::Terminal::No, args, timeout)
    }

    fn ctr_with(&self, terminal: crate::ctr::Terminal, args: &[&str], timeout: Duration) -> CtrOutput {
        let args = self.spell_runtime(args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_ctr(terminal, &self.binaries.ctr, self.address(), self.namespace(), &self.layout.fifo, &args, timeout)
    }

    /// `ctr` in containerd namespace `namespace` rather than the Env's own
    /// (the CRI plugin's is `k8s.io`).
    pub fn ctr_in(&self, namespace: &str, args: &[&str]) -> CtrOutput {
        run_ctr(crate::ctr::Terminal::No, &self.binaries.ctr, self.address(), namespace, &self.layout.fifo, args, CTR_TIMEOUT)
    }

    /// `ctr -a SOCK -n NS ARGS…` unstarted, for a test that needs ctr's stdin or
    /// must run it in the background; the test waits for (or kills) it.
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let args = self.spell_runtime(args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::ctr::command(&self.binaries.ctr, self.address(), self.namespace(), &self.layout.fifo, &args)
    }

    /// `args` with `--runtime FERRUM_CLI` as ctr needs it.
    fn spell_runtime(&self, args: &[&str]) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(args.len() + 2);
        for (i, arg) in args.iter().enumerate() {
            if *arg == FERRUM_CLI && i > 0 && args[i - 1] == "--runtime" {
                let wrapper = self.cli_wrapper().expect("writing the ferrum CLI's wrapper");
                out.extend([RUNC_RUNTIME.to_string(), "--runc-binary".into(), wrapper.display().to_string()]);
            } else {
                out.push(arg.to_string());
            }
        }
        out
    }

    /// A script that logs its arguments and runs the ferrum CLI with them.
    fn cli_wrapper(&self) -> Result<PathBuf> {
        let path = self.root_dir().join("ferrum-cli");
        if !path.exists() {
            let log = self.root_dir().join("ferrum-cli.log");
            let cli = crate::ferrum_binary("ferrum");
            let script = format!("#!/bin/sh\necho \"$*\" >> '{}'\nexec '{}' \"$@\"\n", log.display(), cli.display());
            let tmp = path.with_extension("tmp");
            fs::write(&tmp, script)?;
            fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
            fs::rename(&tmp, &path)?;
        }
        Ok(path)
    }

    /// Every call containerd's runc shim made of the ferrum CLI ([`FERRUM_CLI`]), a line each.
    pub fn cli_calls(&self) -> String {
        fs::read_to_string(self.root_dir().join("ferrum-cli.log")).unwrap_or_default()
    }

    /// Run `action` while `ctr events` listens, and return what it returned
    /// with the event lines that name `id`, in order.
    pub fn events_of<T>(&self, id: &str, action: impl FnOnce() -> T) -> (T, Vec<String>) {
        let mut events = self
            .ctr_command(&["events"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning ctr events");
        // `ctr events` subscribes asynchronously: give it a moment before, and
        // the last events a moment to arrive after.
        thread::sleep(Duration::from_millis(500));
        let result = action();
        thread::sleep(Duration::from_millis(500));
        let _ = events.kill();
        let out = events.wait_with_output().expect("reading ctr events");
        let lines = String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(id)).map(str::to_string).collect();
        (result, lines)
    }

    /// `ctr` with a terminal as its stdio (for `run -t`, `tasks exec -t`).
    pub fn ctr_in_terminal(&self, args: &[&str]) -> CtrOutput {
        self.ctr_with(crate::ctr::Terminal::Yes, args, Duration::from_secs(60))
    }

    /// Imports the busybox image (built once per process) into this Env's
    /// namespace, unpacked for the default snapshotter; `ctr run --snapshotter X`
    /// unpacks for X on first use. Returns the image reference.
    pub fn import_busybox(&self) -> Result<String> {
        self.import_busybox_into(self.namespace())
    }

    /// `import_busybox` into containerd namespace `namespace`.
    pub fn import_busybox_into(&self, namespace: &str) -> Result<String> {
        let tar = busybox_tar(&self.binaries.busybox)?;
        self.import_tar_into(namespace, "busybox", &tar)?;
        Ok(DEFAULT_IMAGE.to_string())
    }

    /// Imports an image made with [`crate::image::ImageBuilder`] (named by its
    /// builder); `file` names the tar in the temp dir.
    pub fn import_image(&self, file: &str, image: &crate::image::ImageBuilder) -> Result<()> {
        self.import_image_into(self.namespace(), file, image)
    }

    /// Where the image builder finds busybox on this machine.
    pub fn busybox_path(&self) -> &Path {
        &self.binaries.busybox
    }

    /// Imports an image into containerd namespace `namespace` rather than the
    /// Env's own: the CRI plugin sees only `k8s.io`.
    pub fn import_image_into(&self, namespace: &str, file: &str, image: &crate::image::ImageBuilder) -> Result<()> {
        self.import_tar_into(namespace, file, &image.to_tar()?)
    }

    fn import_tar_into(&self, namespace: &str, file: &str, tar: &[u8]) -> Result<()> {
        let path = self.root_dir().join(format!("{file}.tar"));
        fs::write(&path, tar).with_context(|| format!("writing {}", path.display()))?;
        let out = self.ctr_in(namespace, &["images", "import", &path.display().to_string()]);
        if !out.success() {
            bail!("importing {file} failed\n{out}");
        }
        Ok(())
    }

    /// containerd's pid, while it runs.
    pub fn containerd_pid(&self) -> Option<i32> {
        self.containerd.as_ref().map(|c| c.id() as i32)
    }

    /// Mounts under the temp dir, live shims of this containerd, container cgroups
    /// and runtime state of this namespace; empty when nothing leaked.
    pub fn leftovers(&self) -> Vec<String> {
        self.footprint.leftovers()
    }

    /// `leftovers()`, giving exiting shims up to `grace` to go away.
    pub fn leftovers_after(&self, grace: Duration) -> Vec<String> {
        self.footprint.leftovers_after(grace)
    }

    /// Pid of the live shim (any runtime) serving task `id` of this containerd.
    pub fn shim_pid(&self, id: &str) -> Option<i32> {
        self.footprint
            .shims()
            .into_iter()
            .find(|p| p.cmdline.windows(2).any(|w| w[0] == "-id" && w[1] == id))
            .map(|p| p.pid)
    }

    /// A Snapshots client on containerd's socket, in this Env's namespace, for
    /// the snapshotter called `snapshotter` ("overlayfs", "ferrum", …). Its
    /// calls run under a lease of their own, as an unpacker's do: without one,
    /// containerd's garbage collector removes snapshots nothing refers to.
    pub fn snapshots(&self, snapshotter: &str) -> Result<SnapshotClient> {
        let lease = format!("snapshots-{snapshotter}");
        let created = self.ctr(&["leases", "create", "--expires", "0", "--id", &lease]);
        if !created.success() && !created.stderr.contains("already exists") {
            bail!("creating lease {lease}\n{created}");
        }
        Ok(
            SnapshotClient::connect(self.address(), snapshotter, Some(self.namespace()))?
                .with_lease(&lease),
        )
    }

    /// A Snapshots client on ferrum-snapshotter's own socket, bypassing containerd.
    pub fn ferrum_snapshots(&self) -> Result<SnapshotClient> {
        SnapshotClient::connect(&self.layout.snapshotter_socket, "ferrum", None)
    }

    /// ferrum-snapshotter's `--root`.
    pub fn snapshotter_root(&self) -> &Path {
        &self.layout.snapshotter_root
    }

    /// SIGKILLs ferrum-snapshotter (by pid) and reaps it.
    pub fn kill_snapshotter(&mut self) {
        if let Some(mut child) = self.snapshotter.take() {
            let _ = child.kill();
            let status = child.wait();
            self.footprint.note(&format!(
                "killed {SNAPSHOTTER} pid {}: {status:?}",
                child.id()
            ));
        }
    }

    /// Starts ferrum-snapshotter again on the same root and socket, after
    /// [`Env::kill_snapshotter`].
    pub fn restart_snapshotter(&mut self) -> Result<()> {
        let binary = self
            .binaries
            .snapshotter
            .clone()
            .context("this Env runs no ferrum-snapshotter")?;
        self.kill_snapshotter();
        self.start_snapshotter(&binary)
    }

    fn start_snapshotter(&mut self, binary: &Path) -> Result<()> {
        let log = log_file(&self.layout.snapshotter_log)?;
        let child = Command::new(binary)
            .arg("--root")
            .arg(&self.layout.snapshotter_root)
            .arg("--address")
            .arg(&self.layout.snapshotter_socket)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        self.footprint
            .note(&format!("started {SNAPSHOTTER} pid {}", child.id()));
        let child = self.snapshotter.insert(child);

        let deadline = Instant::now() + SNAPSHOTTER_READY_TIMEOUT;
        // Connect rather than look for the file: a killed instance leaves its socket behind.
        while UnixStream::connect(&self.layout.snapshotter_socket).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "{SNAPSHOTTER} exited with {status} before listening\n{}",
                    tail(&self.layout.snapshotter_log)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{SNAPSHOTTER} did not answer on {} within {SNAPSHOTTER_READY_TIMEOUT:?}\n{}",
                    self.layout.snapshotter_socket.display(),
                    tail(&self.layout.snapshotter_log)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn write_config(&self, schema: Schema, options: &Options) -> Result<()> {
        let layout = &self.layout;
        let ttrpc = self.footprint.ttrpc_address();
        let paths = ConfigPaths {
            root: &layout.containerd_root,
            state: &layout.state,
            grpc: &layout.grpc,
            ttrpc: &ttrpc,
            opt: &layout.opt,
            snapshotter: self
                .snapshotter
                .as_ref()
                .map(|_| layout.snapshotter_socket.as_path()),
        };
        let toml = config::render(schema, &paths, options.cri, &options.extra_config);
        fs::write(&layout.config, toml)
            .with_context(|| format!("writing {}", layout.config.display()))
    }

    /// SIGTERM containerd — not the nsenter in front of it in a node — and wait.
    fn stop_containerd(&mut self) {
        let child = self.containerd.take();
        let daemon = match (&child, self.node) {
            (Some(c), Some(_)) => crate::procfs::first_child(c.id() as i32),
            _ => None,
        };
        stop(&self.footprint, child, daemon, "containerd");
    }

    fn start_containerd(&mut self) -> Result<()> {
        let log = log_file(&self.layout.containerd_log)?;
        let mut command = if let Some(node) = self.node {
            // nsenter forks into the pid namespace and waits: containerd is its child.
            let mut c = Command::new("nsenter");
            c.args(["-t", &node.to_string(), "-m", "-p", "--"]).arg(&self.binaries.containerd);
            c
        } else if self.private_network {
            // util-linux's unshare execs containerd in the new namespace (no fork),
            // so the child's pid is containerd's.
            let mut c = Command::new("unshare");
            c.args(["--net", "--"]).arg(&self.binaries.containerd);
            c
        } else {
            Command::new(&self.binaries.containerd)
        };
        let child = command
            .arg("--config")
            .arg(&self.layout.config)
            .env("PATH", match &self.criu_dir {
                Some(dir) => format!("{}:{}", dir.display(), self.binaries.containerd_path()),
                None => self.binaries.containerd_path(),
            })
            // containerd mounts snapshots for unpacking under a temp dir; keep those
            // inside the Env so a killed containerd cannot leak mounts into /tmp.
            .env("TMPDIR", &self.layout.tmp)
            .env("XDG_RUNTIME_DIR", &self.layout.tmp)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", self.binaries.containerd.display()))?;
        self.footprint.note(&format!(
            "started containerd pid {} ({})",
            child.id(),
            self.root_dir().display()
        ));
        self.containerd = Some(child);

        let deadline = Instant::now() + CONTAINERD_READY_TIMEOUT;
        let mut last_try = None;
        loop {
            let exited = self
                .containerd
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                bail!(
                    "containerd exited with {status} during startup\n{}",
                    tail(&self.layout.containerd_log)
                );
            }
            // ctr waits for a socket that does not exist yet: only ask once it does.
            if self.layout.grpc.exists() {
                let version = self.ctr_timeout(&["version"], Duration::from_secs(2));
                if version.success() {
                    return Ok(());
                }
                last_try = Some(version);
            }
            if Instant::now() >= deadline {
                let last_try = last_try.map_or("(its socket never appeared)".to_string(), |out| {
                    out.to_string()
                });
                bail!(
                    "containerd did not answer `ctr version` within {CONTAINERD_READY_TIMEOUT:?}\n{last_try}\n{}",
                    tail(&self.layout.containerd_log)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // The logs go with the temp dir; a failing test is when they are wanted.
        if thread::panicking() {
            self.footprint.note(&format!(
                "containerd log:\n{}",
                tail(&self.layout.containerd_log)
            ));
            if self.snapshotter.is_some() {
                self.footprint.note(&format!(
                    "{SNAPSHOTTER} log:\n{}",
                    tail(&self.layout.snapshotter_log)
                ));
            }
        }
        self.footprint.kill_tasks();
        self.stop_containerd();
        self.footprint.kill_shims();
        let snapshotter = self.snapshotter.take();
        let pid = snapshotter.as_ref().map(|c| c.id() as i32);
        stop(&self.footprint, snapshotter, pid, SNAPSHOTTER);
        self.footprint.remove_residue();
    }
}

/// SIGTERM to `daemon` (the child itself, or the daemon nsenter started),
/// then SIGKILL after STOP_GRACE; always reaps.
pub(crate) fn stop(footprint: &Footprint, child: Option<Child>, daemon: Option<i32>, name: &str) {
    let Some(mut child) = child else { return };
    let pid = daemon.unwrap_or(child.id() as i32);
    if let Ok(Some(status)) = child.try_wait() {
        footprint.note(&format!("{name} pid {pid} had already exited: {status}"));
        return;
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let status = match wait_until(&mut child, Instant::now() + STOP_GRACE) {
        Some(status) => status.to_string(),
        None => {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
            format!("SIGKILLed after {STOP_GRACE:?}")
        }
    };
    footprint.note(&format!("stopped {name} pid {pid}: {status}"));
}

/// `/tmp/ferrum-it-<pid>-<n>` and namespace `ferrum-t<pid>-<n>`, `n` counting the
/// Envs of this process; a stale dir from an earlier process with our pid is skipped.
fn create_temp_dir() -> Result<(PathBuf, String)> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let pid = std::process::id();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!("/tmp/ferrum-it-{pid}-{n}"));
        match fs::create_dir(&dir) {
            Ok(()) => return Ok((dir, format!("ferrum-t{pid}-{n}"))),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
}

/// The config schema the containerd the tests run (FERRUM_CONTAINERD_DIR or
/// PATH) reads, for callers that write config sections of their own.
pub fn containerd_config_schema() -> Result<Schema> {
    containerd_schema(&Binaries::locate(false)?.containerd)
}

fn containerd_schema(containerd: &Path) -> Result<Schema> {
    let out = Command::new(containerd)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", containerd.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Schema::from_version_output(&text).with_context(|| {
        format!(
            "cannot tell the version of {} from {text:?}",
            containerd.display()
        )
    })
}

/// The busybox image tar, built on first use and shared by every Env of the process.
pub(crate) fn busybox_tar(busybox: &Path) -> Result<Arc<Vec<u8>>> {
    static CACHE: Mutex<Option<Arc<Vec<u8>>>> = Mutex::new(None);
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(tar) = cache.as_ref() {
        return Ok(Arc::clone(tar));
    }
    let tar = Arc::new(busybox_image(DEFAULT_IMAGE, busybox)?.to_tar()?);
    *cache = Some(Arc::clone(&tar));
    Ok(tar)
}

/// Appends, so that a restarted daemon's log follows its previous run's.
pub(crate) fn log_file(path: &Path) -> Result<File> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

pub(crate) fn tail(log: &Path) -> String {
    let text =
        fs::read_to_string(log).unwrap_or_else(|e| format!("(cannot read {}: {e})", log.display()));
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    format!(
        "--- last lines of {} ---\n{}",
        log.display(),
        lines[start..].join("\n")
    )
}
