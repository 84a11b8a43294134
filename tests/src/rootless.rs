//! `Rootless`: a rootless containerd for one test, set up as
//! containerd-rootless.sh does it — a normal user made for the test (with
//! the subordinate ids useradd gives it), RootlessKit (`--copy-up=/etc
//! --copy-up=/run --propagation=rslave`, the host's network), and
//! inside it, as that user, ferrum-snapshotter and containerd with their
//! root, state and sockets under a temp dir the user owns. ctr runs as the
//! user in RootlessKit's user and mount namespaces (nsenter), as
//! containerd-rootless-setuptool.sh tells users to.
//!
//! Drop stops RootlessKit and containerd, kills whatever of the user is left
//! (ferrum-snapshotter, shims of containers a failed test left), removes the
//! user and the temp dir; `leftovers` says what a test would leave behind.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::binaries::{Binaries, SNAPSHOTTER};
use crate::containerd::{busybox_tar, containerd_config_schema, log_file, render, tail, ConfigPaths, Schema};
use crate::ctr::{run_program, wait_until, CtrOutput, Terminal};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const CTR_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The shim's binary name containerd looks up for io.containerd.ferrum.v2.
const SHIM: &str = "containerd-shim-ferrum-v2";
pub const NAMESPACE: &str = "rootless";

/// useradd and userdel lock /etc/passwd: one at a time in this process.
static USERS: Mutex<()> = Mutex::new(());

/// Where the rootless containerd's containers get their cgroups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Cgroups {
    /// None delegated: the user owns no cgroup (this v1 host).
    #[default]
    None,
    /// A cgroup v2 directory of its own (`/sys/fs/cgroup/<the temp dir's
    /// name>`), made and handed to the user as systemd's `Delegate=yes` does;
    /// RootlessKit starts in its `daemons` child, containers go beside it.
    Delegated,
}

pub struct Rootless {
    user: String,
    uid: u32,
    dir: PathBuf,
    rootlesskit: Option<Child>,
    /// RootlessKit's child: the namespaces ctr enters.
    child_pid: i32,
    ctr: PathBuf,
    busybox: PathBuf,
    path: String,
    /// The delegated cgroup v2 directory, with Cgroups::Delegated.
    delegated: Option<PathBuf>,
}

impl Rootless {
    pub fn start(cgroups: Cgroups) -> Result<Rootless> {
        let binaries = Binaries::locate(true)?;
        for tool in ["rootlesskit", "newuidmap", "setpriv", "nsenter", "useradd"] {
            if crate::binaries::on_path(tool).is_none() {
                bail!("test prerequisite missing: {tool} (Debian packages rootlesskit, uidmap, util-linux, passwd)");
            }
        }
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let user = format!("ferrum-rl{}-{n}", std::process::id());
        let dir = PathBuf::from(format!("/tmp/ferrum-rl-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        let uid = add_user(&user, &dir).inspect_err(|_| {
            let _ = fs::remove_dir_all(&dir);
        })?;
        let delegated = match cgroups {
            Cgroups::Delegated => Some(Path::new("/sys/fs/cgroup").join(dir.file_name().context("temp dir name")?)),
            Cgroups::None => None,
        };
        let mut rl = Rootless {
            user,
            uid,
            dir,
            rootlesskit: None,
            child_pid: 0,
            ctr: binaries.ctr.clone(),
            busybox: binaries.busybox.clone(),
            path: String::new(),
            delegated,
        };
        // From here on, Drop undoes whatever was made.
        rl.prepare(&binaries)?;
        rl.start_rootlesskit(&binaries)?;
        Ok(rl)
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn prepare(&mut self, binaries: &Binaries) -> Result<()> {
        let bin = self.dir.join("bin");
        for sub in ["bin", "run", "root", "state", "snapshotter", "opt", "tmp"] {
            fs::create_dir(self.dir.join(sub))?;
        }
        // The user may not reach a root-only checkout: its own copies.
        for name in [SHIM, SNAPSHOTTER] {
            fs::copy(binaries.ferrum_dir.join(name), bin.join(name))
                .with_context(|| format!("copying {name} from {}", binaries.ferrum_dir.display()))?;
        }
        let schema = containerd_config_schema()?;
        fs::write(self.dir.join("config.toml"), self.config(schema))?;
        fs::write(self.dir.join("busybox.tar"), busybox_tar(&binaries.busybox)?.as_slice())?;
        if let Some(cg) = &self.delegated {
            delegate(cg, self.uid)?;
        }
        chown_tree(&self.dir, self.uid)?;
        let mut dirs = vec![bin.display().to_string()];
        dirs.extend(binaries.containerd_dir.iter().map(|d| d.display().to_string()));
        dirs.push(crate::binaries::SYSTEM_PATH.into());
        self.path = dirs.join(":");
        Ok(())
    }

    /// The Env's config.toml (crate::containerd::config), every path in our dir.
    fn config(&self, schema: Schema) -> String {
        let d = &self.dir;
        let (ttrpc, snapshotter) = (d.join("grpc.sock.ttrpc"), d.join("snapshotter.sock"));
        let paths = ConfigPaths {
            root: &d.join("root"),
            state: &d.join("state"),
            grpc: &d.join("grpc.sock"),
            ttrpc: &ttrpc,
            opt: &d.join("opt"),
            snapshotter: Some(&snapshotter),
        };
        render(schema, &paths, false, "")
    }

    /// `program ARGS…` as the user: setpriv drops to its uid, gid and no
    /// supplementary groups. The environment is a user's: no FERRUM_RUN_DIR,
    /// so ferrum finds its directory as a rootless user's runtime does.
    fn user_command(&self, program: &str, args: &[&str]) -> Command {
        self.user_command_after(&[], program, args)
    }

    /// The same, with `prefix` run first as root (it must exec the rest).
    fn user_command_after(&self, prefix: &[&str], program: &str, args: &[&str]) -> Command {
        let id = self.uid.to_string();
        let setpriv = ["setpriv", "--reuid", &id, "--regid", &id, "--clear-groups", "--", program];
        let argv: Vec<&str> = prefix.iter().chain(setpriv.iter()).chain(args).copied().collect();
        let mut c = Command::new(argv[0]);
        c.args(&argv[1..])
            .env_clear()
            .env("PATH", &self.path)
            .env("HOME", &self.dir)
            .env("USER", &self.user)
            .env("XDG_RUNTIME_DIR", self.dir.join("run"))
            .env("TMPDIR", self.dir.join("tmp"))
            .current_dir(&self.dir);
        c
    }

    fn start_rootlesskit(&mut self, binaries: &Binaries) -> Result<()> {
        let d = &self.dir;
        // As containerd-rootless.sh: the copied-up /run holds links to the
        // host's dirs, /run/containerd must be the user's own.
        let script = format!(
            "rm -rf /run/containerd && mkdir -p /run/containerd && \
             {snap} --root {root} --address {sock} >{slog} 2>&1 & exec {containerd} --config {config}",
            snap = d.join("bin").join(SNAPSHOTTER).display(),
            root = d.join("snapshotter").display(),
            sock = d.join("snapshotter.sock").display(),
            slog = d.join("snapshotter.log").display(),
            containerd = binaries.containerd.display(),
            config = d.join("config.toml").display(),
        );
        let state = format!("--state-dir={}", d.join("rootlesskit").display());
        let args = ["--net=host", "--copy-up=/etc", "--copy-up=/run", "--propagation=rslave", &state, "sh", "-c", &script];
        let procs = self.delegated.as_ref().map(|cg| cg.join("daemons").join("cgroup.procs").display().to_string());
        // Root puts it into the delegated subtree before it becomes the user:
        // moving a process needs write access to the common ancestor's cgroup.procs.
        let prefix: &[&str] = match &procs {
            Some(procs) => &["sh", "-c", "echo $$ > \"$0\" && exec \"$@\"", procs],
            None => &[],
        };
        let mut command = self.user_command_after(prefix, "rootlesskit", &args);
        let log = log_file(&d.join("containerd.log"))?;
        command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = command.spawn().context("spawning rootlesskit")?;
        self.rootlesskit = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.rootlesskit.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("rootlesskit exited with {status}\n{}", tail(&d.join("containerd.log")));
            }
            let child_pid = fs::read_to_string(d.join("rootlesskit/child_pid")).ok().and_then(|s| s.trim().parse().ok());
            if let (Some(pid), true) = (child_pid, d.join("grpc.sock").exists()) {
                self.child_pid = pid;
                if self.ctr(&["version"]).success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the rootless containerd did not answer within {READY_TIMEOUT:?}\n{}\n{}",
                    tail(&d.join("containerd.log")),
                    tail(&d.join("snapshotter.log"))
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ctr` as the user, inside RootlessKit's namespaces.
    pub fn ctr(&self, args: &[&str]) -> CtrOutput {
        self.ctr_with(Terminal::No, args)
    }

    /// `ctr` with a terminal (for `ctr run -t`).
    pub fn ctr_in_terminal(&self, args: &[&str]) -> CtrOutput {
        self.ctr_with(Terminal::Yes, args)
    }

    fn ctr_with(&self, terminal: Terminal, args: &[&str]) -> CtrOutput {
        let mut out = run_program(terminal, self.ctr_command(args), None, CTR_TIMEOUT);
        out.args = args.iter().map(|a| a.to_string()).collect();
        out
    }

    /// `ctr ARGS…` as the user in RootlessKit's namespaces, as a Command.
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let (target, ctr, address) =
            (self.child_pid.to_string(), self.ctr.display().to_string(), self.dir.join("grpc.sock").display().to_string());
        let mut argv = vec!["-U", "--preserve-credentials", "-m", "-t", &target, "--", &ctr];
        argv.extend(["--address", &address, "--namespace", NAMESPACE]);
        argv.extend(args);
        self.user_command("nsenter", &argv)
    }

    /// Run `action` while `ctr events` listens; returns what it returned and
    /// the event lines that name `id`, in order.
    pub fn events_of<T>(&self, id: &str, action: impl FnOnce() -> T) -> (T, Vec<String>) {
        let mut events =
            self.ctr_command(&["events"]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawning ctr events");
        // `ctr events` subscribes asynchronously: a moment before, and one for the last events.
        thread::sleep(Duration::from_millis(500));
        let result = action();
        thread::sleep(Duration::from_millis(500));
        // setpriv and nsenter exec (no fork): the child is ctr itself.
        let _ = events.kill();
        let out = events.wait_with_output().expect("reading ctr events");
        let text = String::from_utf8_lossy(&out.stdout);
        (result, text.lines().filter(|l| l.contains(id)).map(str::to_string).collect())
    }

    /// `ctr run --rm --runtime RUNTIME --config FILE ID` of containerd's
    /// default spec running `args` on a busybox rootfs of the user's, edited
    /// by `edit` (for what ctr has no flag for).
    pub fn run_spec(&self, runtime: &str, id: &str, args: &[&str], edit: impl FnOnce(&mut serde_json::Value)) -> Result<CtrOutput> {
        let out = self.ctr(&["oci", "spec"]);
        anyhow::ensure!(out.success(), "ctr oci spec: {out}");
        let mut spec: serde_json::Value = serde_json::from_str(&out.stdout).context("parse ctr oci spec")?;
        let rootfs = self.dir.join("rootfs").join(format!("{id}-{}", runtime.replace('.', "_")));
        let _ = fs::remove_dir_all(&rootfs);
        crate::spec_file::busybox_rootfs(&self.busybox, &rootfs)?;
        chown_tree(rootfs.parent().context("rootfs dir")?, self.uid)?;
        spec["root"] = serde_json::json!({ "path": rootfs, "readonly": false });
        spec["process"]["args"] = serde_json::json!(args);
        spec["process"]["env"] = serde_json::json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]);
        edit(&mut spec);
        let file = self.dir.join(format!("{id}.json"));
        fs::write(&file, serde_json::to_vec_pretty(&spec)?)?;
        chown_tree(&file, self.uid)?;
        Ok(self.ctr(&["run", "--rm", "--runtime", runtime, "--config", &file.display().to_string(), id]))
    }

    /// The busybox image, unpacked for containerd's own overlayfs (runc's
    /// reference runs use that); `ctr run --snapshotter ferrum` unpacks it
    /// for ferrum-snapshotter on first use.
    pub fn import_busybox(&self) -> Result<String> {
        let tar = self.dir.join("busybox.tar").display().to_string();
        let out = self.ctr(&["images", "import", &tar]);
        if !out.success() {
            bail!("importing busybox\n{out}");
        }
        Ok(crate::image::DEFAULT_IMAGE.to_string())
    }

    /// The delegated cgroup as ctr's `--cgroup` and a spec's cgroupsPath
    /// name it (`/ferrum-rl-…`).
    pub fn delegated_cgroup(&self) -> Option<String> {
        let dir = self.delegated.as_ref()?;
        Some(format!("/{}", dir.strip_prefix("/sys/fs/cgroup").ok()?.display()))
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Host pids of the user's processes whose command is `program`.
    pub fn pids_of(&self, program: &str) -> Vec<i32> {
        self.processes()
            .into_iter()
            .filter(|pid| {
                let argv0 = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let argv0 = argv0.split(|b| *b == 0).next().unwrap_or_default().to_vec();
                Path::new(&String::from_utf8_lossy(&argv0).into_owned()).file_name().is_some_and(|n| n == program)
            })
            .collect()
    }

    /// The processes of the user: RootlessKit, containerd, the snapshotter,
    /// shims and containers (root in RootlessKit's user namespace is the
    /// user; subordinate ids are not looked for: they live only in
    /// containers whose shims are found).
    fn processes(&self) -> Vec<i32> {
        let mut out = Vec::new();
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
            let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else { continue };
            let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok());
            if uid == Some(self.uid) {
                out.push(pid);
            }
        }
        out
    }

    /// What the test left, with containerd still running: shims of deleted
    /// containers (given a moment to exit), and the mounts and cgroups a
    /// rootless stack could leave on the host.
    pub fn leftovers(&self) -> Vec<String> {
        crate::cleanup::poll_leftovers(STOP_GRACE, || self.leftovers_now())
    }

    fn leftovers_now(&self) -> Vec<String> {
        let mut out = Vec::new();
        for shim in [SHIM, "containerd-shim-runc-v2"] {
            out.extend(self.pids_of(shim).into_iter().map(|pid| format!("{shim} pid {pid}")));
        }
        for m in crate::procfs::mounts() {
            if m.mount_point.starts_with(&self.dir) {
                out.push(format!("mount {} ({})", m.mount_point.display(), m.fstype));
            }
        }
        if let Some(cg) = &self.delegated {
            for entry in fs::read_dir(cg).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if entry.path().is_dir() && name != "daemons" {
                    out.push(format!("cgroup {}", entry.path().display()));
                }
            }
        }
        out
    }

    fn stop(&mut self) -> Vec<String> {
        let mut traces = Vec::new();
        if let Some(mut child) = self.rootlesskit.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            if wait_until(&mut child, Instant::now() + STOP_GRACE).is_none() {
                traces.push("rootlesskit did not stop on SIGTERM".to_string());
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            let left = self.processes();
            if left.is_empty() {
                break;
            }
            // containerd's daemons outlive it: the snapshotter, and shims
            // when a test failed before deleting its containers.
            for pid in left {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            if Instant::now() > deadline {
                traces.push(format!("processes of {} survive SIGKILL: {:?}", self.user, self.processes()));
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        traces
    }
}

impl Drop for Rootless {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("rootless containerd log:\n{}", tail(&self.dir.join("containerd.log")));
            eprintln!("rootless {SNAPSHOTTER} log:\n{}", tail(&self.dir.join("snapshotter.log")));
        }
        for trace in self.stop() {
            eprintln!("rootless cleanup: {trace}");
        }
        if let Some(cg) = &self.delegated {
            let mut dirs = Vec::new();
            crate::cleanup::collect_dirs_post_order(cg, &mut dirs);
            for d in dirs {
                let _ = fs::remove_dir(&d);
            }
        }
        remove_user(&self.user);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn add_user(user: &str, home: &Path) -> Result<u32> {
    let _lock = USERS.lock().unwrap_or_else(|p| p.into_inner());
    let out = Command::new("useradd")
        .args(["--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", "--home-dir"])
        .arg(home)
        .arg(user)
        .output()
        .context("running useradd")?;
    if !out.status.success() {
        bail!("useradd {user}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let uid = nix::unistd::User::from_name(user)?.context("the user useradd made")?.uid.as_raw();
    // RootlessKit maps the user's subordinate ids: useradd gives them
    // (login.defs' SUB_UID_COUNT), make sure it did.
    for file in ["/etc/subuid", "/etc/subgid"] {
        let ids = fs::read_to_string(file).unwrap_or_default();
        if !ids.lines().any(|l| l.starts_with(&format!("{user}:"))) {
            remove_user_locked(user);
            bail!("useradd gave {user} no subordinate ids in {file}");
        }
    }
    Ok(uid)
}

fn remove_user(user: &str) {
    let _lock = USERS.lock().unwrap_or_else(|p| p.into_inner());
    remove_user_locked(user);
}

fn remove_user_locked(user: &str) {
    // userdel also drops the user's /etc/subuid and /etc/subgid lines.
    match Command::new("userdel").arg(user).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!("rootless cleanup: userdel {user}: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => eprintln!("rootless cleanup: userdel {user}: {e}"),
    }
}

/// Give `path` and everything under it to `uid` (symlinks themselves, not
/// their targets).
fn chown_tree(path: &Path, uid: u32) -> Result<()> {
    let owner = Some(nix::unistd::Uid::from_raw(uid));
    let group = Some(nix::unistd::Gid::from_raw(uid));
    let flags = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW;
    nix::unistd::fchownat(nix::fcntl::AT_FDCWD, path, owner, group, flags)
        .with_context(|| format!("chown {}", path.display()))?;
    if fs::symlink_metadata(path)?.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid)?;
        }
    }
    Ok(())
}

/// Hand a cgroup v2 directory to `uid` as systemd's Delegate=yes does: the
/// directory and its cgroup.procs, cgroup.threads and cgroup.subtree_control,
/// the controllers enabled for its children, and a `daemons` leaf for the
/// processes of RootlessKit (v2 keeps processes out of inner cgroups).
fn delegate(cg: &Path, uid: u32) -> Result<()> {
    let parent = cg.parent().context("a delegated cgroup has a parent")?;
    let available = fs::read_to_string(parent.join("cgroup.subtree_control"))
        .with_context(|| format!("reading {}", parent.join("cgroup.subtree_control").display()))?;
    fs::create_dir(cg).with_context(|| format!("creating cgroup {}", cg.display()))?;
    let enable: Vec<String> = available.split_whitespace().map(|c| format!("+{c}")).collect();
    fs::write(cg.join("cgroup.subtree_control"), enable.join(" "))
        .with_context(|| format!("enabling {available:?} in {}", cg.display()))?;
    fs::create_dir(cg.join("daemons"))?;
    let owner = Some(nix::unistd::Uid::from_raw(uid));
    let group = Some(nix::unistd::Gid::from_raw(uid));
    for d in [cg.to_path_buf(), cg.join("daemons")] {
        for file in ["", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control"] {
            let path = if file.is_empty() { d.clone() } else { d.join(file) };
            nix::unistd::chown(&path, owner, group).with_context(|| format!("chown {}", path.display()))?;
        }
    }
    Ok(())
}
