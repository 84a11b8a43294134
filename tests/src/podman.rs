//! `Podman`: Debian's Podman 4.3 (with conmon) for one test, its image store
//! and run root under `/tmp/ferrum-pm-<pid>-<n>/` and a cgroup parent of its
//! own, with the busybox image loaded. The runtimes keep their state in
//! their default roots, where containers are told apart by their bundles. Drop removes every container, then
//! the mounts, cgroups and the dir.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::containerd::busybox_tar;
use crate::ctr::{run_program, CtrOutput, Terminal};

const TIMEOUT: Duration = Duration::from_secs(60);
/// The runtimes' default state roots, which Podman's calls use.
const FERRUM_ROOT: &str = "/run/ferrum-runtime";
const RUNC_ROOT: &str = "/run/runc";

/// What Podman runs as its runtime: ferrum, or runc as the reference
/// (bookworm's crun refuses this hybrid cgroup layout).
pub fn runtime_path(runtime: &str) -> PathBuf {
    match runtime {
        "ferrum" => crate::ferrum_binary("ferrum"),
        other => crate::binaries::on_path(other).unwrap_or_else(|| PathBuf::from(other)),
    }
}

pub struct Podman {
    dir: PathBuf,
    cgroup_parent: String,
}

impl Podman {
    pub fn start() -> Result<Podman> {
        if crate::binaries::on_path("podman").is_none() || crate::binaries::on_path("conmon").is_none() {
            bail!("test prerequisite missing: podman and conmon (Debian packages podman, conmon)");
        }
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("ferrum-pm-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = PathBuf::from("/tmp").join(&name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("tmp")).with_context(|| format!("creating {}", dir.display()))?;
        let podman = Podman { dir, cgroup_parent: format!("/{name}") };
        let binaries = crate::binaries::Binaries::locate(false)?;
        let tar = podman.dir.join("busybox.tar");
        fs::write(&tar, busybox_tar(&binaries.busybox)?.as_slice())?;
        let load = podman.podman("runc", &["load", "-i", &tar.display().to_string()]);
        if !load.success() {
            bail!("podman load\n{load}");
        }
        Ok(podman)
    }

    /// `podman ARGS…` with `runtime` ("ferrum" or "runc").
    pub fn podman(&self, runtime: &str, args: &[&str]) -> CtrOutput {
        run_program(Terminal::No, self.command(runtime, args), None, TIMEOUT)
    }

    /// The same with a terminal (`run -it`).
    pub fn podman_in_terminal(&self, runtime: &str, args: &[&str]) -> CtrOutput {
        run_program(Terminal::Yes, self.command(runtime, args), None, TIMEOUT)
    }

    /// `podman run --rm`-style flags every container here gets: no network,
    /// our cgroup parent, and limits this machine's hard limits allow
    /// (Podman's default nofile/nproc of 1048576 are above them).
    pub fn run_flags(&self) -> Vec<String> {
        ["--network", "none", "--cgroup-parent", &self.cgroup_parent, "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn command(&self, runtime: &str, args: &[&str]) -> Command {
        let d = &self.dir;
        let mut c = Command::new("podman");
        c.arg("--root").arg(d.join("storage"));
        c.arg("--runroot").arg(d.join("run"));
        c.arg("--tmpdir").arg(d.join("tmp"));
        // The runtime keeps its default --root: Podman 4.3 passes its
        // --runtime-flag to conmon's create but not to its own delete.
        c.args(["--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime"]).arg(runtime_path(runtime));
        c.args(args);
        c
    }

    /// What containers left: their cgroups (Podman's own conmon cgroup and
    /// the parent stay until Drop), runtime state, processes of a conmon
    /// of ours — after a moment: conmon cleans up `--rm` containers on its
    /// own, through a `podman container cleanup` it starts at the exit.
    pub fn leftovers(&self) -> Vec<String> {
        crate::cleanup::poll_leftovers(Duration::from_secs(15), || self.leftovers_now())
    }

    fn leftovers_now(&self) -> Vec<String> {
        let mut out = Vec::new();
        for hierarchy in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let parent = hierarchy.path().join(self.cgroup_parent.trim_start_matches('/'));
            for entry in fs::read_dir(&parent).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if entry.path().is_dir() && name != "conmon" {
                    out.push(format!("cgroup {}", entry.path().display()));
                }
            }
        }
        // Runtime state of containers whose bundle is in our store.
        let ours = self.dir.display().to_string();
        for root in [Path::new(FERRUM_ROOT), Path::new(RUNC_ROOT)] {
            for entry in fs::read_dir(root).into_iter().flatten().flatten() {
                if fs::read_to_string(entry.path().join("state.json")).is_ok_and(|s| s.contains(&ours)) {
                    out.push(format!("runtime state {}", entry.path().display()));
                }
            }
        }
        for p in crate::procfs::processes() {
            if p.cmdline.first().is_some_and(|c| c.ends_with("conmon")) && p.cmdline.iter().any(|a| a.starts_with(self.dir.to_str().unwrap_or("-"))) {
                out.push(format!("conmon {}", p.describe()));
            }
        }
        out
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for runtime in ["ferrum", "runc"] {
            let _ = self.podman(runtime, &["rm", "--all", "--force", "--time", "0"]);
        }
        let mut mounts: Vec<PathBuf> =
            crate::procfs::mounts().into_iter().map(|m| m.mount_point).filter(|m| m.starts_with(&self.dir)).collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
        for m in mounts {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        for hierarchy in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let parent = hierarchy.path().join(self.cgroup_parent.trim_start_matches('/'));
            let mut dirs = Vec::new();
            crate::cleanup::collect_dirs_post_order(&parent, &mut dirs);
            for d in dirs {
                let _ = fs::remove_dir(&d);
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
