//! What a private dockerd can leave that the rest of a Footprint does not
//! see. dockerd runs in a network namespace of its own, so its bridges, veths,
//! iptables chains and sysctls live and die with that namespace; what could
//! outlive it is a process still in it (docker-proxy survives a killed
//! dockerd), anything it made on the host's network instead (which would be a
//! harness bug: nothing may), and /run/docker/plugins, which dockerd creates
//! whatever its --exec-root.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use crate::procfs;

/// dockerd's plugin socket directory: a constant in moby, not under --exec-root.
const RUN_DOCKER: &str = "/run/docker";

/// The dockerds of this process, for /run/docker: shared by all of them, it
/// may go (and is a leftover) only once the last one has stopped, and only if
/// it was not there before the first started.
struct Dockerds {
    live: usize,
    run_docker_was_there: bool,
}

static DOCKERDS: Mutex<Dockerds> = Mutex::new(Dockerds {
    live: 0,
    run_docker_was_there: false,
});

fn dockerds() -> std::sync::MutexGuard<'static, Dockerds> {
    DOCKERDS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The links, iptables chains and forwarding switch of the host's network
/// namespace (this process's) that Docker would make there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostNetwork {
    entries: BTreeSet<String>,
}

impl HostNetwork {
    pub(crate) fn now() -> HostNetwork {
        let mut entries = BTreeSet::new();
        let links = fs::read_dir("/sys/class/net").into_iter().flatten().flatten();
        for name in links.filter_map(|e| e.file_name().into_string().ok()) {
            if name == "docker0" || name.starts_with("br-") || name.starts_with("veth") {
                entries.insert(format!("host link {name}"));
            }
        }
        for (tool, table) in [("iptables", "filter"), ("iptables", "nat"), ("ip6tables", "filter"), ("ip6tables", "nat")] {
            let out = Command::new(tool).args(["-w", "-t", table, "-S"]).output();
            let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
            for line in text.lines().filter(|l| l.contains("DOCKER")) {
                entries.insert(format!("host {tool} -t {table}: {line}"));
            }
        }
        let forward = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
        entries.insert(format!("host net.ipv4.ip_forward = {}", forward.trim()));
        HostNetwork { entries }
    }
}

/// One dockerd's traces: its network namespace and the host's network as it
/// was before it started. Made before dockerd starts ([`DockerTraces::begin`])
/// and ended once it has stopped ([`DockerTraces::end`]).
#[derive(Debug, Clone)]
pub struct DockerTraces {
    host_before: HostNetwork,
    /// dockerd's network namespace, by inode, once it runs.
    netns: Option<u64>,
}

impl DockerTraces {
    /// Before dockerd starts: snapshots the host's network and counts the dockerd.
    pub(crate) fn begin() -> DockerTraces {
        let mut dockerds = dockerds();
        if dockerds.live == 0 {
            dockerds.run_docker_was_there = Path::new(RUN_DOCKER).exists();
        }
        dockerds.live += 1;
        DockerTraces {
            host_before: HostNetwork::now(),
            netns: None,
        }
    }

    /// dockerd runs, as `pid`, in the network namespace it will keep.
    pub(crate) fn started(&mut self, pid: i32) {
        self.netns = procfs::net_namespace(pid);
    }

    /// Once dockerd has stopped and its namespace's processes are killed: the
    /// last dockerd of the process takes /run/docker with it if it made it.
    pub(crate) fn end(&self, note: impl Fn(&str)) {
        let mut dockerds = dockerds();
        dockerds.live -= 1;
        if dockerds.live > 0 || dockerds.run_docker_was_there {
            return;
        }
        for dir in [format!("{RUN_DOCKER}/plugins"), RUN_DOCKER.to_string()] {
            // rmdir only: a directory with something in it is not ours to empty.
            match fs::remove_dir(&dir) {
                Ok(()) => note(&format!("removed {dir}")),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => note(&format!("cannot remove {dir}: {e}")),
            }
        }
    }

    /// Every process still in dockerd's network namespace.
    pub(crate) fn processes(&self) -> Vec<procfs::Process> {
        self.netns.map(procfs::processes_in_net_namespace).unwrap_or_default()
    }

    pub(crate) fn leftovers(&self) -> Vec<String> {
        let processes = self.processes().into_iter().map(|p| format!("process in dockerd's network namespace: {}", p.describe()));
        let now = HostNetwork::now();
        let network = now.entries.difference(&self.host_before.entries).map(|e| format!("new since dockerd started: {e}"));
        let mut left: Vec<String> = processes.chain(network).collect();
        let dockerds = dockerds();
        if dockerds.live == 0 && !dockerds.run_docker_was_there && Path::new(RUN_DOCKER).exists() {
            left.push(format!("dir {RUN_DOCKER} (dockerd's plugin sockets)"));
        }
        left
    }
}
