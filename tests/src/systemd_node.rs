//! A systemd host for the systemd cgroup driver's tests, on a machine whose
//! init is not systemd: systemd runs as PID 1 of private pid, mount, UTS, IPC
//! and network namespaces, as in a systemd container (`container=ferrum`),
//! below a cgroup of its own in every hierarchy. Its unit path holds a single
//! empty target, so it starts nothing of the distribution's (no udev, no
//! tmpfiles, no sysctl): it only manages cgroups, which is what the driver
//! needs. containerd then runs inside it (`Options::node`), where
//! `/run/systemd/private` is the node's, and so do the shims and containers.
//!
//! Drop kills systemd, which takes every process of its pid namespace (and
//! the mounts of its mount namespace) with it, then removes its cgroups.

use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

const BOOT_TIMEOUT: Duration = Duration::from_secs(20);

/// Nodes of this process alive (booting, running or being dropped): the last
/// one to go cleans the hierarchies nodes make that the host does not mount.
static LIVE: Mutex<usize> = Mutex::new(0);

pub struct SystemdNode {
    /// util-linux's unshare, parent of systemd.
    unshare: Child,
    /// systemd, in the host's pid namespace.
    pid: i32,
    dir: PathBuf,
    /// The node's cgroup name, directly below each hierarchy's root.
    cgroup: String,
}

/// The script that becomes systemd: private mounts of /run and /proc, then
/// the node's own cgroup in every hierarchy (only the root one on pure v2).
///
/// On v1, systemd makes mount points and symlinks in the /sys/fs/cgroup tmpfs
/// and remounts it read-only: done to the host's tmpfs (this mount table is a
/// copy, the superblock is the same) that would change the host. So the node
/// gets a tmpfs of its own, with the host's hierarchies bound into it.
const BOOT: &str = r#"set -e
mount --make-rprivate /
mount -t tmpfs tmpfs /run
mount -t proc proc /proc
if [ ! -e /sys/fs/cgroup/cgroup.procs ]; then
  mkdir /run/host-cgroup
  mount --rbind /sys/fs/cgroup /run/host-cgroup
  mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
  for h in /run/host-cgroup/*; do
    if mountpoint -q "$h"; then
      mkdir "/sys/fs/cgroup/${h##*/}" && mount --bind "$h" "/sys/fs/cgroup/${h##*/}"
    fi
  done
  umount -l /run/host-cgroup && rmdir /run/host-cgroup
fi
if [ -e /sys/fs/cgroup/cgroup.procs ]; then roots=/sys/fs/cgroup; else roots=$(ls -d /sys/fs/cgroup/*/); fi
for root in $roots; do
  [ -e "$root/cgroup.procs" ] || continue
  mkdir -p "$root/$CGROUP"
  # A new v1 cpuset cgroup has no cpus or mems, and takes no process until it does.
  if [ -e "$root/cpuset.cpus" ] && [ ! -e "$root/cgroup.controllers" ]; then
    cat "$root/cpuset.cpus" > "$root/$CGROUP/cpuset.cpus"
    cat "$root/cpuset.mems" > "$root/$CGROUP/cpuset.mems"
  fi
  echo $$ > "$root/$CGROUP/cgroup.procs"
done
exec "$SYSTEMD" --unit=ferrum-node.target --log-target=console --show-status=no
"#;

impl SystemdNode {
    /// Boot a node and wait until systemd answers on its private socket.
    pub fn boot() -> Result<SystemdNode> {
        let systemd = ["/usr/lib/systemd/systemd", "/lib/systemd/systemd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .context("systemd is not installed (scripts/install-deps installs it)")?;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ferrum-node-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = PathBuf::from("/tmp").join(&name);
        fs::create_dir_all(dir.join("units"))
            .with_context(|| format!("creating {}", dir.display()))?;
        fs::write(
            dir.join("units/ferrum-node.target"),
            "[Unit]\nDescription=ferrum test node\n",
        )?;
        fs::write(dir.join("boot.sh"), BOOT)?;
        let log = fs::File::create(dir.join("systemd.log"))?;
        *live() += 1;
        let unshare = Command::new("unshare")
            .args([
                "--pid",
                "--mount",
                "--uts",
                "--ipc",
                "--net",
                "--fork",
                "--kill-child",
                "--",
                "sh",
            ])
            .arg(dir.join("boot.sh"))
            .env("CGROUP", &name)
            .env("SYSTEMD", &systemd)
            .env("container", "ferrum")
            // Transient units are files too, read again on a reload: without
            // their directory a reload would strip their properties.
            .env(
                "SYSTEMD_UNIT_PATH",
                format!("{}:/run/systemd/transient", dir.join("units").display()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .inspect_err(|_| *live() -= 1)
            .context("spawning unshare for the systemd node")?;
        // From here on, dropping `node` cleans up.
        let mut node = SystemdNode {
            pid: 0,
            unshare,
            dir,
            cgroup: name,
        };
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            if let Ok(Some(status)) = node.unshare.try_wait() {
                bail!(
                    "the systemd node exited with {status} while booting\n{}",
                    node.log()
                );
            }
            if node.pid == 0 {
                // unshare's only child is the node's init.
                node.pid = crate::procfs::first_child(node.unshare.id() as i32).unwrap_or(0);
            }
            if node.pid != 0 && node.path("/run/systemd/private").exists() {
                let state = node.systemctl(&["is-system-running"]);
                let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
                if state == "running" || state == "degraded" {
                    return Ok(node);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the systemd node did not come up within {BOOT_TIMEOUT:?}\n{}",
                    node.log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// systemd's pid, in the host's pid namespace.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// `path` as the node sees it (through its root in /proc).
    pub fn path(&self, path: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{path}", self.pid))
    }

    /// `systemctl ARGS…` inside the node.
    pub fn systemctl(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args([
                "-t",
                &self.pid.to_string(),
                "-m",
                "-p",
                "--",
                "systemctl",
                "--no-pager",
            ])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running systemctl in the node: {e}"))
    }

    /// One property of a unit (`systemctl show -p NAME --value`).
    pub fn unit_property(&self, unit: &str, property: &str) -> String {
        let out = self.systemctl(&["show", "-p", property, "--value", unit]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The cgroup systemd gives the node itself, from each hierarchy's root.
    pub fn cgroup(&self) -> String {
        format!("/{}", self.cgroup)
    }

    /// The node's mounts (its mount namespace's) whose mount point is under `dir`.
    pub fn mounts_under(&self, dir: &Path) -> Vec<String> {
        let info = fs::read_to_string(format!("/proc/{}/mountinfo", self.pid)).unwrap_or_default();
        info.lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .filter(|m| Path::new(m).starts_with(dir))
            .map(str::to_string)
            .collect()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("systemd.log")).unwrap_or_default()
    }

    /// Remove the node's cgroups below each hierarchy root in `roots`.
    fn remove_cgroups(&self, roots: &[PathBuf]) {
        let mut dirs = Vec::new();
        for root in roots {
            crate::cleanup::collect_dirs_post_order(&root.join(&self.cgroup), &mut dirs);
        }
        remove_all(&dirs);
    }
}

fn live() -> std::sync::MutexGuard<'static, usize> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// systemd mounts the v1 controllers this host leaves unmounted (here
/// net_cls,net_prio and perf_event) in a node, and runc and the shims make
/// cgroups there — runc at the root, as systemd's PID 1 is there. Such a
/// hierarchy outlives the nodes while it holds a cgroup, and one that
/// /proc/self/cgroup lists but nothing mounts breaks other cgroup users (runc's
/// shim). With no node left, mount each, remove every cgroup in it and
/// unmount: unmounting an empty hierarchy ends it.
fn remove_unmounted_hierarchies(at: &Path) {
    let mounted = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mounted: Vec<Vec<&str>> = mounted
        .lines()
        .filter(|l| l.contains(" - cgroup "))
        .filter_map(|l| l.split_whitespace().last())
        .map(|opts| opts.split(',').collect())
        .collect();
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let unmounted: Vec<String> = own
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .filter(|c| {
            !c.is_empty()
                && !mounted
                    .iter()
                    .any(|opts| c.split(',').all(|one| opts.contains(&one)))
        })
        .map(str::to_string)
        .collect();
    for controllers in unmounted {
        let options = if controllers.starts_with("name=") {
            format!("none,{controllers}")
        } else {
            controllers
        };
        let _ = fs::create_dir_all(at);
        let mount = || {
            Command::new("mount")
                .args(["-t", "cgroup", "-o", &options, "none"])
                .arg(at)
                .status()
        };
        if !mount().is_ok_and(|s| s.success()) {
            eprintln!("systemd node: cannot mount the {options} hierarchy to clean it");
            continue;
        }
        let mut dirs = Vec::new();
        crate::cleanup::collect_dirs_post_order(at, &mut dirs);
        dirs.pop(); // the root itself
        remove_all(&dirs);
        // Removed cgroups linger a moment as children, and an unmount then
        // leaves the hierarchy be: once they are gone, mount and unmount again.
        let first = options.split(',').next().unwrap_or_default().to_string();
        let _ = Command::new("umount").arg(at).status();
        for _ in 0..3 {
            let deadline = Instant::now() + Duration::from_millis(500);
            while hierarchy_alive(&first) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            if !hierarchy_alive(&first) || !mount().is_ok_and(|s| s.success()) {
                break;
            }
            let _ = Command::new("umount").arg(at).status();
        }
        if hierarchy_alive(&first) {
            eprintln!("systemd node: the {options} hierarchy outlived the nodes");
        }
    }
}

/// rmdir each of `dirs` (children first), waiting a moment for busy ones.
fn remove_all(dirs: &[PathBuf]) {
    for dir in dirs {
        let deadline = Instant::now() + Duration::from_secs(5);
        while dir.exists() && fs::remove_dir(dir).is_err() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if dir.exists() {
            eprintln!("systemd node: cannot remove cgroup {}", dir.display());
        }
    }
}

/// Whether /proc/cgroups puts `controller` in a hierarchy (a named one is
/// not listed there: assumed gone).
fn hierarchy_alive(controller: &str) -> bool {
    let table = fs::read_to_string("/proc/cgroups").unwrap_or_default();
    table.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 1 && f[0] == controller && f[1] != "0"
    })
}

/// Every hierarchy root the host mounts: the v1 ones and hybrid's unified, or the v2 root.
pub fn hierarchy_roots() -> Vec<PathBuf> {
    if Path::new("/sys/fs/cgroup/cgroup.procs").exists() {
        return vec![PathBuf::from("/sys/fs/cgroup")];
    }
    fs::read_dir("/sys/fs/cgroup")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

impl Drop for SystemdNode {
    fn drop(&mut self) {
        // SIGTERM would make systemd re-execute itself; SIGKILL of a pid
        // namespace's init kills everything in it.
        let _ = self.unshare.kill();
        if self.pid != 0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.unshare.wait();
        self.remove_cgroups(&hierarchy_roots());
        let mut live = live();
        *live -= 1;
        if *live == 0 {
            remove_unmounted_hierarchies(&self.dir.join("hierarchy"));
        }
        drop(live);
        let _ = fs::remove_dir_all(&self.dir);
    }
}
