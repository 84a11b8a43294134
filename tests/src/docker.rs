//! `Docker`: a private dockerd (Debian sid's Docker 28, scripts/install-docker)
//! on a test [`Env`]'s containerd 2.x, with ferrum as the runtime `ferrum` and
//! ferrum-snapshotter as its storage driver, next to Docker's default runc
//! runtime — or bookworm's Docker 20.10 (scripts/install-docker20) on
//! containerd 1.6 with the `ferrum` CLI as the added runtime `ferrum` (its
//! `path`) and overlay2. Everything is under the Env's temp dir; dockerd runs in a network
//! namespace of its own, with Docker's default networking (bridge, iptables,
//! docker-proxy) inside it, so no link, chain or sysctl of the host's is ever
//! touched. Drop removes it all, also when the test panicked.

mod netns;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::binaries::DockerBinaries;
use crate::cleanup::{poll_leftovers, DockerTraces, Footprint};
use crate::containerd::{busybox_tar, containerd_config_schema, log_file, stop, tail};
use crate::ctr::{run_program, Terminal};
use crate::image::{nginx_image, ImageBuilder, DEFAULT_IMAGE, NGINX_IMAGE};
use crate::{CtrOutput, Env};

/// Docker's name for its default runtime (runc 1.1.5, through containerd's runc-v2 shim).
pub const DOCKER_RUNC: &str = "runc";
/// The name daemon.json gives ferrum (runtimeType io.containerd.ferrum.v2).
pub const DOCKER_FERRUM: &str = "ferrum";
/// The reference first: when ferrum fails a check, runc is known to pass it.
pub const DOCKER_RUNTIMES: [&str; 2] = [DOCKER_RUNC, DOCKER_FERRUM];

const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);
const DOCKERD_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The daemon.json the README tells users to write, tested as shipped: ferrum
/// as the runtime `ferrum`, containerd's image store, and ferrum-snapshotter
/// (the proxy snapshotter `ferrum` of containerd's config) as storage driver.
const DAEMON_JSON: &str = include_str!("../../examples/docker-daemon.json");

/// Paths under the Env's temp dir (`d/`). Short: dockerd makes Unix sockets
/// under its exec root, and their paths may not pass 108 bytes.
struct Layout {
    config: PathBuf,
    data_root: PathBuf,
    exec_root: PathBuf,
    socket: PathBuf,
    pidfile: PathBuf,
    log: PathBuf,
    cli_config: PathBuf,
    tmp: PathBuf,
}

impl Layout {
    fn new(root: &Path) -> Layout {
        let dir = root.join("d");
        Layout {
            config: dir.join("daemon.json"),
            data_root: dir.join("data"),
            exec_root: dir.join("x"),
            socket: dir.join("docker.sock"),
            pidfile: dir.join("dockerd.pid"),
            log: dir.join("dockerd.log"),
            cli_config: dir.join("cli"),
            tmp: dir.join("tmp"),
        }
    }
}

/// Which dockerd a [`Docker`] runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Release {
    /// sid's Docker 28 on containerd 2.x: ferrum's shim and snapshotter.
    Docker28,
    /// bookworm's Docker 20.10 on containerd 1.6: the ferrum CLI, as runc is
    /// driven (containerd's runc-v2 shim with the CLI as its binary).
    Docker20,
}

impl Release {
    /// The daemon.json: for 28 the one the README ships.
    fn daemon_json(self) -> String {
        match self {
            Release::Docker28 => DAEMON_JSON.to_string(),
            Release::Docker20 => serde_json::json!({
                "runtimes": { DOCKER_FERRUM: { "path": crate::ferrum_binary("ferrum") } },
                "storage-driver": "overlay2",
            })
            .to_string(),
        }
    }
}

/// A private dockerd for one test (see the module doc). Its containers live in
/// the Env's containerd namespace and under the cgroup parent `/<namespace>`, so
/// the Env's footprint finds them; [`Docker::footprint`] adds dockerd's own
/// traces for a check after drop.
pub struct Docker {
    footprint: Footprint,
    layout: Layout,
    binaries: DockerBinaries,
    release: Release,
    dockerd: Option<Child>,
    /// Last: dropped after Drop::drop stopped dockerd, it stops containerd.
    env: Env,
}

impl Docker {
    /// containerd 2.x with ferrum-snapshotter (an [`Env`]), then dockerd on it.
    pub fn start() -> Result<Docker> {
        Docker::start_release(Release::Docker28)
    }

    /// An [`Env`] (containerd 2.x for Docker 28, the lane's for 20.10), then
    /// `release`'s dockerd on it.
    pub fn start_release(release: Release) -> Result<Docker> {
        let binaries = match release {
            Release::Docker28 => DockerBinaries::locate(containerd_config_schema()?)?,
            Release::Docker20 => DockerBinaries::locate_20()?,
        };
        let env = Env::start()?;
        let layout = Layout::new(env.root_dir());
        // From here on, dropping `docker` on an error cleans up whatever was started.
        let mut docker = Docker {
            footprint: env.footprint().with_docker(DockerTraces::begin()),
            layout,
            binaries,
            release,
            dockerd: None,
            env,
        };
        docker.start_dockerd()?;
        Ok(docker)
    }

    /// For tests: a Docker with the busybox image loaded, or a panic saying why not.
    pub fn with_busybox() -> (Docker, String) {
        Docker::release_with_busybox(Release::Docker28)
    }

    /// [`Docker::with_busybox`] for `release`.
    pub fn release_with_busybox(release: Release) -> (Docker, String) {
        let docker = Docker::start_release(release).expect("starting dockerd on containerd with ferrum");
        let image = docker.load_busybox().expect("loading busybox");
        (docker, image)
    }

    /// `docker load`s the busybox image (built once per process); returns its reference.
    pub fn load_busybox(&self) -> Result<String> {
        let tar = busybox_tar(self.env.busybox_path())?;
        self.load_tar("busybox", &tar)?;
        Ok(DEFAULT_IMAGE.to_string())
    }

    /// `docker load`s the nginx image, built from Debian's nginx package
    /// (scripts/install-docker); returns its reference.
    pub fn load_nginx(&self) -> Result<String> {
        let image = nginx_image(NGINX_IMAGE, self.env.busybox_path(), &self.binaries.nginx_tree)?;
        self.load(&image, "nginx")?;
        Ok(NGINX_IMAGE.to_string())
    }

    /// `docker load`s an image built by [`ImageBuilder`]; `file` names its tar.
    pub fn load(&self, image: &ImageBuilder, file: &str) -> Result<()> {
        self.load_tar(file, &image.to_tar()?)
    }

    fn load_tar(&self, file: &str, tar: &[u8]) -> Result<()> {
        let path = self.env.root_dir().join(format!("{file}.tar"));
        fs::write(&path, tar).with_context(|| format!("writing {}", path.display()))?;
        let out = self.docker(&["load", "-i", &path.display().to_string()]);
        if !out.success() {
            bail!("docker load of {file} failed\n{out}");
        }
        Ok(())
    }

    /// `docker ARGS…` against this dockerd, killed after 120 s.
    pub fn docker(&self, args: &[&str]) -> CtrOutput {
        run_program(Terminal::No, self.command(args), None, DOCKER_TIMEOUT)
    }

    /// `docker ARGS…` with `input` on its stdin (for `run -i`, `exec -i`).
    pub fn docker_with_stdin(&self, args: &[&str], input: &[u8]) -> CtrOutput {
        run_program(Terminal::No, self.command(args), Some(input), DOCKER_TIMEOUT)
    }

    /// `docker ARGS…` with a terminal as its stdio (for `run -t`, `-it`), and
    /// `input`, if any, typed into it; the output is the terminal's.
    pub fn docker_in_terminal(&self, args: &[&str], input: Option<&[u8]>) -> CtrOutput {
        run_program(Terminal::Yes, self.command(args), input, DOCKER_TIMEOUT)
    }

    /// `docker run --runtime RUNTIME FLAGS… IMAGE ARGS…`
    pub fn run(&self, runtime: &str, flags: &[&str], image: &str, args: &[&str]) -> CtrOutput {
        self.docker(&run_args(runtime, flags, image, args))
    }

    /// `docker run -d --runtime RUNTIME --name NAME FLAGS… IMAGE ARGS…`, which
    /// must succeed; returns the container's id.
    #[track_caller]
    pub fn run_detached(&self, runtime: &str, name: &str, flags: &[&str], image: &str, args: &[&str]) -> String {
        let mut all = vec!["-d", "--name", name];
        all.extend_from_slice(flags);
        let out = self.run(runtime, &all, image, args);
        assert!(out.success(), "docker run -d on {runtime} failed\n{out}");
        out.stdout.trim().to_string()
    }

    /// `docker` unstarted, for a test that drives its stdio and lifetime itself.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binaries.docker);
        command
            .arg("--host")
            .arg(format!("unix://{}", self.layout.socket.display()))
            .args(args)
            // The CLI's config (and so ~/.docker) stays in the temp dir.
            .env("DOCKER_CONFIG", &self.layout.cli_config)
            .env_remove("DOCKER_HOST")
            .env_remove("DOCKER_CONTEXT");
        command
    }

    /// `docker inspect --format FORMAT OBJECT`, trimmed; panics if it fails.
    #[track_caller]
    pub fn inspect(&self, object: &str, format: &str) -> String {
        let out = self.docker(&["inspect", "--format", format, object]);
        assert!(out.success(), "docker inspect {object} failed\n{out}");
        out.stdout.trim().to_string()
    }

    /// Polls `docker inspect --format FORMAT OBJECT` until it prints `want`;
    /// panics with what it printed last after `timeout`.
    #[track_caller]
    pub fn wait_for(&self, object: &str, format: &str, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.inspect(object, format);
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "{object}: {format} is {got:?}, not {want:?}, after {timeout:?}");
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// An HTTP/1.0 GET of `path` from `127.0.0.1:port` as dockerd's network
    /// namespace sees it, where published ports are served (by docker-proxy
    /// and Docker's iptables rules): the whole response, headers and body.
    pub fn http_get(&self, port: u16, path: &str) -> Result<String> {
        let pid = self.dockerd_pid().context("dockerd is not running")?;
        netns::http_get(pid, port, path)
    }

    /// The host port `docker port CONTAINER PORT` reports for an IPv4 binding.
    #[track_caller]
    pub fn published_port(&self, container: &str, port: &str) -> u16 {
        let out = self.docker(&["port", container, port]);
        assert!(out.success(), "docker port failed\n{out}");
        let line = out.stdout.lines().find(|l| l.starts_with("127.0.0.1:") || l.starts_with("0.0.0.0:"));
        let port = line.and_then(|l| l.rsplit(':').next()).and_then(|p| p.parse().ok());
        port.unwrap_or_else(|| panic!("no IPv4 binding in\n{out}"))
    }

    /// `/sys/fs/cgroup/CONTROLLER/<namespace>/<id>/FILE` on a v1 or hybrid
    /// host, or `/sys/fs/cgroup/<namespace>/<id>/FILE` on pure v2, trimmed:
    /// where `--cgroup-parent /<namespace>` puts container `id`.
    pub fn cgroup_file(&self, controller: &str, id: &str, file: &str) -> Result<String> {
        let v1 = Path::new("/sys/fs/cgroup").join(controller);
        let base = if v1.is_dir() { v1 } else { PathBuf::from("/sys/fs/cgroup") };
        let path = base.join(self.env.namespace()).join(id).join(file);
        let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(text.trim().to_string())
    }

    /// Where containerd's runc shim has the runtime keep the state of
    /// dockerd's containers (its `--root`). Docker 20.10 points every runtime
    /// given by path at `<exec-root>/runtime-runc`, runc's own: the shape of
    /// a container's state.json tells which runtime wrote it.
    pub fn runtime_root(&self) -> PathBuf {
        self.layout.exec_root.join("runtime-runc").join(self.env.namespace())
    }

    /// The Env under dockerd (its containerd, namespace, temp dir).
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// Traces of containers: mounts, shims, cgroups and runtime state under the
    /// Env. Empty when every container was removed and nothing leaked. The
    /// bind mount dockerd keeps on its data root while it runs is its own.
    pub fn leftovers_after(&self, grace: Duration) -> Vec<String> {
        let own = format!("mount {}", self.layout.data_root.display());
        poll_leftovers(grace, || self.env.leftovers().into_iter().filter(|l| *l != own).collect())
    }

    /// The Env's footprint plus dockerd's (its network namespace, the host's
    /// network, /run/docker): clone it to check after drop that nothing is left.
    pub fn footprint(&self) -> &Footprint {
        &self.footprint
    }

    fn dockerd_pid(&self) -> Option<i32> {
        self.dockerd.as_ref().map(|c| c.id() as i32)
    }

    fn start_dockerd(&mut self) -> Result<()> {
        let layout = &self.layout;
        for dir in [&layout.cli_config, &layout.tmp] {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        fs::write(&layout.config, self.release.daemon_json())
            .with_context(|| format!("writing {}", layout.config.display()))?;
        let namespace = self.env.namespace().to_string();
        let log = log_file(&layout.log)?;
        // util-linux's unshare execs in the new network namespace (no fork),
        // and sh execs dockerd once loopback is up there (docker-proxy listens
        // on it): the child's pid is dockerd's.
        let child = Command::new("unshare")
            .args(["--net", "--", "sh", "-c", "ip link set lo up && exec \"$@\"", "dockerd"])
            .arg(&self.binaries.dockerd)
            .arg("--config-file")
            .arg(&layout.config)
            .arg("--data-root")
            .arg(&layout.data_root)
            .arg("--exec-root")
            .arg(&layout.exec_root)
            .arg("--host")
            .arg(format!("unix://{}", layout.socket.display()))
            .arg("--pidfile")
            .arg(&layout.pidfile)
            .arg("--containerd")
            .arg(self.env.address())
            // The Env's namespace: its footprint finds the runtimes' state and,
            // with the cgroup parent, the containers' cgroups.
            .args(["--containerd-namespace", &namespace])
            .args(["--containerd-plugins-namespace", &format!("{namespace}-plugins")])
            .args(["--cgroup-parent", &format!("/{namespace}")])
            .arg("--userland-proxy-path")
            .arg(&self.binaries.docker_proxy)
            .arg("--init-path")
            .arg(&self.binaries.docker_init)
            .env("TMPDIR", &layout.tmp)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning unshare --net … dockerd")?;
        let pid = child.id() as i32;
        self.footprint.note(&format!("started dockerd pid {pid}"));
        self.dockerd = Some(child);

        let deadline = Instant::now() + DOCKERD_READY_TIMEOUT;
        let mut last_try = None;
        loop {
            let exited = self.dockerd.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                bail!("dockerd exited with {status} during startup\n{}", tail(&self.layout.log));
            }
            if self.layout.socket.exists() {
                let version = run_program(Terminal::No, self.command(&["version"]), None, Duration::from_secs(5));
                if version.success() {
                    break;
                }
                last_try = Some(version);
            }
            if Instant::now() >= deadline {
                let last_try = last_try.map_or("(its socket never appeared)".to_string(), |o| o.to_string());
                bail!(
                    "dockerd did not answer `docker version` within {DOCKERD_READY_TIMEOUT:?}\n{last_try}\n{}",
                    tail(&self.layout.log)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        // Only now: until `ip` ran, the pid was still in the host's namespace.
        self.footprint.docker_started(pid);
        Ok(())
    }

    /// SIGKILLs dockerd, as a crash would, leaving its containers and
    /// docker-proxies behind for Drop to find.
    pub fn kill_dockerd(&mut self) {
        if let Some(mut child) = self.dockerd.take() {
            let _ = child.kill();
            let status = child.wait();
            self.footprint.note(&format!("killed dockerd pid {}: {status:?}", child.id()));
        }
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if thread::panicking() {
            self.footprint.note(&format!("dockerd log:\n{}", tail(&self.layout.log)));
        }
        // Containers first: a dockerd stopped with containers running stops
        // each of them with its stop timeout.
        self.footprint.kill_tasks();
        stop(&self.footprint, self.dockerd.take(), None, "dockerd");
        self.footprint.kill_docker_processes();
        self.footprint.docker_ended();
        // Then `env` drops: shims, containerd, ferrum-snapshotter, mounts,
        // cgroups and the temp dir.
    }
}

/// `BASE-runc` or `BASE-ferrum`: container, network and volume names.
pub fn name(base: &str, runtime: &str) -> String {
    format!("{base}-{runtime}")
}

/// Runs `check` under runc, then under ferrum: ferrum's result must be
/// runc's. Returns runc's, for the test to say what it must be.
#[track_caller]
pub fn same_on_both<T: PartialEq + std::fmt::Debug>(what: &str, check: impl Fn(&str) -> T) -> T {
    let runc = check(DOCKER_RUNC);
    let ferrum = check(DOCKER_FERRUM);
    assert_eq!(ferrum, runc, "{what}: ferrum (left) differs from runc (right)");
    runc
}

/// Removes every container through Docker; then nothing of them may be left
/// under the Env, and once the harness is dropped nothing at all.
#[track_caller]
pub fn finish(docker: Docker) {
    const GRACE: Duration = Duration::from_secs(10);
    let all = docker.docker(&["ps", "-aq"]);
    for id in all.assert_ok().stdout.split_whitespace() {
        docker.docker(&["rm", "-f", "-v", id]).assert_ok();
    }
    assert_eq!(docker.leftovers_after(GRACE), Vec::<String>::new(), "left behind by Docker's removal of its containers");
    let footprint = docker.footprint().clone();
    drop(docker);
    assert_eq!(footprint.leftovers_after(GRACE), Vec::<String>::new(), "left behind by the Docker harness");
}

/// `run --runtime RUNTIME FLAGS… IMAGE ARGS…`
fn run_args<'a>(runtime: &'a str, flags: &[&'a str], image: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["run", "--runtime", runtime];
    all.extend_from_slice(flags);
    all.push(image);
    all.extend_from_slice(args);
    all
}
