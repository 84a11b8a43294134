//! Finding and removing what one test Env left on the host: processes of its
//! containers and shims, mounts under its temp dir, cgroups of its namespace,
//! and what a dockerd on top of it left (`docker`).
//!
//! Everything is best-effort and logged on stderr: cleanup runs from Drop, often
//! while a failed test unwinds, and must get as far as it can.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::procfs::{self, Process};

mod docker;
pub use docker::DockerTraces;

/// Where runtimes keep per-container state, as `<root>/<namespace>/<id>`: runc
/// under containerd's runc-v2 shim, and ferrum's shim (shim/src/manager.rs).
const RUNTIME_STATE_ROOTS: [&str; 2] = ["/run/containerd/runc", "/run/ferrum/containers"];

/// How to recognise one Env's traces: its temp dir, its containerd namespace (ctr's
/// default cgroup path is `/<namespace>/<container id>`) and its gRPC address,
/// which every shim it starts gets as `-address` and, with `.ttrpc`, as TTRPC_ADDRESS.
#[derive(Debug, Clone)]
pub struct Footprint {
    root: PathBuf,
    namespace: String,
    address: PathBuf,
    /// A dockerd's, when one ran on this Env (crate::docker).
    docker: Option<DockerTraces>,
}

impl Footprint {
    pub(crate) fn new(root: PathBuf, namespace: String, address: PathBuf) -> Footprint {
        Footprint {
            root,
            namespace,
            address,
            docker: None,
        }
    }

    /// This footprint with a dockerd's traces: its `leftovers` then also name
    /// processes in dockerd's network namespace (dockerd itself while it runs),
    /// what it made on the host's network, and the temp dir itself — all gone
    /// only once the Docker harness has been dropped.
    pub(crate) fn with_docker(&self, traces: DockerTraces) -> Footprint {
        Footprint {
            docker: Some(traces),
            ..self.clone()
        }
    }

    /// dockerd runs as `pid`: its network namespace is the one to watch.
    pub(crate) fn docker_started(&mut self, pid: i32) {
        if let Some(traces) = &mut self.docker {
            traces.started(pid);
        }
    }

    /// dockerd has stopped and its namespace's processes are gone.
    pub(crate) fn docker_ended(&self) {
        if let Some(traces) = &self.docker {
            traces.end(|message| self.note(message));
        }
    }

    /// SIGKILLs every process left in dockerd's network namespace.
    pub(crate) fn kill_docker_processes(&self) {
        for process in self.docker.iter().flat_map(DockerTraces::processes) {
            self.signal(process.pid, &format!("process in dockerd's network namespace: {}", process.describe()));
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn address(&self) -> &Path {
        &self.address
    }

    pub fn ttrpc_address(&self) -> PathBuf {
        let mut address = self.address.clone().into_os_string();
        address.push(".ttrpc");
        address.into()
    }

    /// Mounts under the temp dir, live shims of this containerd, container cgroups
    /// and runtime state of the namespace. The namespace's own cgroup and state dirs
    /// are not listed: runtimes leave them behind by design, and Drop removes them.
    pub fn leftovers(&self) -> Vec<String> {
        let mounts = self
            .mounts()
            .into_iter()
            .map(|m| format!("mount {}", m.display()));
        let shims = self
            .shims()
            .into_iter()
            .map(|p| format!("shim {}", p.describe()));
        let tops = self.namespace_cgroups();
        let cgroups = self
            .cgroup_dirs()
            .into_iter()
            .filter(|dir| !tops.contains(dir))
            .map(|dir| format!("cgroup {}", dir.display()));
        let state = self.runtime_state_dirs().into_iter().flat_map(|dir| {
            let entries = fs::read_dir(dir).into_iter().flatten().flatten();
            entries.map(|e| format!("runtime state {}", e.path().display()))
        });
        let docker = self.docker.iter().flat_map(|traces| {
            let dir = self.root.exists().then(|| format!("dir {}", self.root.display()));
            traces.leftovers().into_iter().chain(dir)
        });
        mounts.chain(shims).chain(cgroups).chain(state).chain(docker).collect()
    }

    /// `leftovers()`, polled until empty or `grace` has passed: after `ctr run --rm`
    /// returns, the shim has been told to shut down but exits a moment later.
    pub fn leftovers_after(&self, grace: Duration) -> Vec<String> {
        poll_leftovers(grace, || self.leftovers())
    }

    /// SIGKILLs every process in the namespace's cgroups and every shim of this
    /// containerd, and removes the sockets those shims had bound outside the temp dir.
    pub(crate) fn kill_tasks(&self) {
        let mut pids = BTreeSet::new();
        for dir in self.cgroup_dirs() {
            thaw(&dir);
            let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        for pid in pids {
            self.signal(pid, &format!("container process {pid}"));
        }
        self.kill_shims();
    }

    /// Shims are daemons: they outlive containerd unless killed. containerd also
    /// runs `shim … delete` for shims that died, so this runs again once containerd
    /// has stopped. It sweeps until no shim shows up for a moment: a `shim delete`
    /// containerd forked just before it stopped shows its command line only once
    /// it has exec'd.
    pub(crate) fn kill_shims(&self) {
        let mut quiet_sweeps = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while quiet_sweeps < 3 && std::time::Instant::now() < deadline {
            let shims = self.shims();
            quiet_sweeps = if shims.is_empty() { quiet_sweeps + 1 } else { 0 };
            self.kill_shim_processes(shims);
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn kill_shim_processes(&self, shims: Vec<Process>) {
        for shim in shims {
            let sockets = procfs::bound_socket_paths(shim.pid);
            self.signal(shim.pid, &format!("shim {}", shim.describe()));
            for socket in sockets.iter().filter(|s| !s.starts_with(&self.root)) {
                match fs::remove_file(socket) {
                    Ok(()) => self.note(&format!("removed shim socket {}", socket.display())),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => self.note(&format!(
                        "cannot remove shim socket {}: {e}",
                        socket.display()
                    )),
                }
            }
        }
    }

    /// Unmounts everything under the temp dir, removes the namespace's cgroups and
    /// runtime state, then the temp dir. Run after containerd and the snapshotter stopped.
    pub(crate) fn remove_residue(&self) {
        self.unmount_all();
        self.remove_cgroups();
        for dir in self.runtime_state_dirs() {
            self.remove_tree(&dir);
        }
        self.remove_tree(&self.root);
    }

    fn runtime_state_dirs(&self) -> Vec<PathBuf> {
        RUNTIME_STATE_ROOTS
            .iter()
            .map(|root| Path::new(root).join(&self.namespace))
            .filter(|d| d.exists())
            .collect()
    }

    fn mounts(&self) -> Vec<PathBuf> {
        procfs::mounts()
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|m| m.starts_with(&self.root))
            .collect()
    }

    /// Deepest first, and the newest of stacked mounts first; several passes because
    /// a detached mount can uncover another on the same path.
    fn unmount_all(&self) {
        for _ in 0..8 {
            let mut mounts = self.mounts();
            if mounts.is_empty() {
                return;
            }
            mounts.reverse();
            mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
            for mount in mounts {
                match umount2(&mount, MntFlags::MNT_DETACH) {
                    Ok(()) => self.note(&format!("unmounted {}", mount.display())),
                    Err(e) => self.note(&format!("umount2 {} failed: {e}", mount.display())),
                }
            }
        }
        self.note(&format!(
            "mounts remain after unmounting: {:?}",
            self.mounts()
        ));
    }

    pub(crate) fn shims(&self) -> Vec<Process> {
        let address = self.address.display().to_string();
        let unix_address = format!("unix://{address}");
        let ttrpc_env = format!("TTRPC_ADDRESS={}", self.ttrpc_address().display());
        procfs::processes()
            .into_iter()
            .filter(|p| {
                let program = Path::new(&p.cmdline[0])
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("");
                program.starts_with("containerd-shim")
                    && (p
                        .cmdline
                        .iter()
                        .any(|a| *a == address || *a == unix_address)
                        || p.environ_has(&ttrpc_env))
            })
            .collect()
    }

    /// `<hierarchy>/<namespace>` in every mounted cgroup hierarchy: each v1
    /// controller, the hybrid unified one, or a pure v2 /sys/fs/cgroup.
    fn namespace_cgroups(&self) -> BTreeSet<PathBuf> {
        procfs::mounts()
            .into_iter()
            .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
            .map(|m| m.mount_point.join(&self.namespace))
            .filter(|dir| dir.is_dir())
            .collect()
    }

    /// The namespace cgroups and all cgroups below them, children before parents.
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = Vec::new();
        for top in self.namespace_cgroups() {
            collect_dirs_post_order(&top, &mut dirs);
        }
        dirs
    }

    /// rmdir children first; a cgroup whose processes were just killed stays busy
    /// until the kernel has reaped them, hence the retries.
    fn remove_cgroups(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        for dir in self.cgroup_dirs() {
            loop {
                match fs::remove_dir(&dir) {
                    Ok(()) => {
                        self.note(&format!("removed cgroup {}", dir.display()));
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => {
                        self.note(&format!("cannot remove cgroup {}: {e}", dir.display()));
                        break;
                    }
                }
            }
        }
    }

    fn remove_tree(&self, dir: &Path) {
        match fs::remove_dir_all(dir) {
            Ok(()) => self.note(&format!("removed {}", dir.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => self.note(&format!("cannot remove {}: {e}", dir.display())),
        }
    }

    fn signal(&self, pid: i32, what: &str) {
        match kill(Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) => self.note(&format!("SIGKILL {what}")),
            Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => self.note(&format!("SIGKILL {what} failed: {e}")),
        }
    }

    pub(crate) fn note(&self, message: &str) {
        eprintln!("[ferrum-it {}] {message}", self.namespace);
    }
}

/// `leftovers()` polled until empty or `grace` has passed; what it said last.
pub(crate) fn poll_leftovers(grace: Duration, leftovers: impl Fn() -> Vec<String>) -> Vec<String> {
    let deadline = Instant::now() + grace;
    loop {
        let left = leftovers();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A frozen task cannot act on SIGKILL; thaw first (v1 freezer or v2 cgroup.freeze).
fn thaw(dir: &Path) {
    let _ = fs::write(dir.join("freezer.state"), "THAWED");
    let _ = fs::write(dir.join("cgroup.freeze"), "0");
}

/// `dir` and the directories below it, children before parents.
pub(crate) fn collect_dirs_post_order(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect_dirs_post_order(&entry.path(), out);
        }
    }
    out.push(dir.to_path_buf());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttrpc_address_appends_suffix() {
        let f = Footprint::new("/t".into(), "ns".into(), "/t/grpc.sock".into());
        assert_eq!(f.ttrpc_address(), PathBuf::from("/t/grpc.sock.ttrpc"));
    }

    #[test]
    fn post_order_lists_children_first() {
        let root = std::env::temp_dir().join(format!("ferrum-cleanup-test-{}", std::process::id()));
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::create_dir_all(root.join("c")).unwrap();
        let mut dirs = Vec::new();
        collect_dirs_post_order(&root, &mut dirs);
        fs::remove_dir_all(&root).unwrap();
        let pos = |p: &str| dirs.iter().position(|d| *d == root.join(p)).unwrap();
        assert!(pos("a/b") < pos("a") && pos("a") < pos("") && pos("c") < pos(""));
        assert_eq!(dirs.len(), 4);
    }

    #[test]
    fn unknown_namespace_has_no_leftovers() {
        let f = Footprint::new(
            "/nonexistent/ferrum".into(),
            "ferrum-no-such-ns".into(),
            "/nonexistent/ferrum/g".into(),
        );
        assert!(f.leftovers().is_empty());
    }
}
