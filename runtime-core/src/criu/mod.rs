//! CRIU's command lines for a container's checkpoint and restore, and running
//! them.
//!
//! CRIU is driven over its RPC (`criu swrk`, see swrk and rpc), one request
//! per dump or restore, from a runner (our binary re-executed, single-threaded,
//! in the runtime's namespaces): the runner is CRIU's only reaper, as a
//! subreaping caller's waitpid(-1) could otherwise take CRIU's status first.
//! The RPC rather than CRIU's command line because only it hands a restored
//! terminal's new master back (orphan-pts-master), as runc restores consoles;
//! everything else has a flag of the same meaning.
//!
//! What CRIU cannot see for itself is declared to it as runc declares it: the
//! spec's bind mounts and (without a cgroup namespace) the container's v1
//! cgroup binds as external mounts keyed by their destination; init's stdio
//! that leads outside the container (the caller's FIFOs, /dev/null) as
//! external files, whose keys are kept in the images (`ferrum-checkpoint.json`)
//! so that a restore hands the new stdio in their place; a network namespace
//! joined by path as external, its fd handed back at restore.

pub(crate) mod rpc;
pub(crate) mod swrk;

use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The oldest CRIU asked for: cgroup v2 and the options used here.
pub(crate) const MIN_VERSION: (u32, u32) = (3, 14);

/// Where a restore's inherited fds are placed in CRIU's process.
pub(crate) const FIRST_INHERITED_FD: i32 = 10;

/// The key CRIU gives a network namespace declared external.
pub(crate) const EXTERNAL_NETNS_KEY: &str = "extRootNetNS";

/// File of our own in the images: how they were made and what to hand back.
pub(crate) const CHECKPOINT_FILE: &str = "ferrum-checkpoint.json";

/// How a checkpoint is made; the same CRIU flags must be given at restore.
#[derive(Debug, Clone, Default)]
pub struct CheckpointOptions {
    /// CRIU's program: a path, or a name looked up on PATH ("criu").
    pub criu: PathBuf,
    pub image_dir: PathBuf,
    /// CRIU's logs and scratch files; the container's state dir by default.
    pub work_dir: Option<PathBuf>,
    /// Keep the container running once dumped (else CRIU kills it).
    pub leave_running: bool,
    pub tcp_established: bool,
    pub ext_unix_sockets: bool,
    pub file_locks: bool,
    /// Dump the container's network namespace empty (containerd's
    /// empty_namespaces "network"): its setup is someone else's to redo.
    pub empty_network: bool,
}

/// How a container is brought back from a checkpoint's images.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub criu: PathBuf,
    pub image_dir: PathBuf,
    pub work_dir: Option<PathBuf>,
}

/// What the images say beyond CRIU's own files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Recorded {
    /// Init's stdio fds (0-2) that CRIU must be handed at restore, with the
    /// key CRIU knows each by (`file[mnt:ino]` or `pipe:[ino]`).
    pub stdio: Vec<(i32, String)>,
    /// The network namespace was joined by path (a pod's): external.
    pub external_netns: bool,
    pub tcp_established: bool,
    pub ext_unix_sockets: bool,
    pub file_locks: bool,
    #[serde(default)]
    pub empty_network: bool,
}

impl Recorded {
    pub(crate) fn save(&self, image_dir: &Path) -> std::io::Result<()> {
        std::fs::write(image_dir.join(CHECKPOINT_FILE), serde_json::to_vec(self)?)
    }

    pub(crate) fn load(image_dir: &Path) -> Result<Recorded, String> {
        let file = image_dir.join(CHECKPOINT_FILE);
        let bytes = std::fs::read(&file).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!("{} holds no {CHECKPOINT_FILE}: not a checkpoint ferrum made", image_dir.display())
            }
            _ => format!("read {}: {e}", file.display()),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", file.display()))
    }

    /// What a dump was made with, and a restore must be given again.
    fn apply(&self, opts: &mut rpc::Opts) {
        opts.tcp_established = self.tcp_established;
        opts.ext_unix_sk = self.ext_unix_sockets;
        opts.file_locks = self.file_locks;
        opts.empty_ns = if self.empty_network { libc::CLONE_NEWNET as u32 } else { 0 };
    }
}

/// An fd of a process as CRIU will see it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OpenFile {
    pub fd: i32,
    /// What /proc/PID/fd/N reads ("pipe:[123]", "/run/x/fifo", "/dev/null").
    pub link: String,
    pub mnt_id: u64,
    pub inode: u64,
}

/// CRIU's key for one of init's stdio fds, and whether the dump must be told
/// it is external: files on a mount outside the container are; pipes are
/// CRIU's own and only need a new end at restore; sockets and anonymous
/// inodes are dumped (or refused) by CRIU itself.
pub(crate) fn stdio_key(file: &OpenFile, container_mounts: &[u64]) -> Option<(String, bool)> {
    if file.link.starts_with("pipe:") {
        return Some((file.link.clone(), false));
    }
    if file.link.starts_with("socket:") || file.link.starts_with("anon_inode:") {
        return None;
    }
    if container_mounts.contains(&file.mnt_id) {
        return None;
    }
    Some((format!("file[{:x}:{:x}]", file.mnt_id, file.inode), true))
}

/// The mount ids of a mountinfo text.
pub(crate) fn mount_ids(mountinfo: &str) -> Vec<u64> {
    mountinfo.lines().filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect()
}

/// The `mnt_id:` of a /proc/PID/fdinfo/N text.
pub(crate) fn fdinfo_mnt_id(fdinfo: &str) -> Option<u64> {
    fdinfo.lines().find_map(|l| l.strip_prefix("mnt_id:")).and_then(|v| v.trim().parse().ok())
}

/// An external mount: CRIU's key (the destination in the container) and,
/// at restore, the host path to mount there.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ExternalMount {
    pub destination: PathBuf,
    pub source: PathBuf,
}

/// The spec's bind mounts: their sources are outside the container.
pub(crate) fn bind_mounts(spec: &oci_spec::runtime::Spec) -> Vec<ExternalMount> {
    spec.mounts()
        .iter()
        .flatten()
        .filter(|m| {
            m.typ().as_deref() == Some("bind")
                || m.options().iter().flatten().any(|o| o == "bind" || o == "rbind")
        })
        .filter_map(|m| Some(ExternalMount { destination: m.destination().clone(), source: m.source().clone()? }))
        .collect()
}

/// A dump of the tree of `pid`.
pub(crate) struct Dump<'a> {
    pub pid: i32,
    pub root: &'a Path,
    pub leave_running: bool,
    /// The cgroup CRIU freezes the container with (a paused one stays so).
    pub freezer: Option<&'a Path>,
    pub mounts: &'a [ExternalMount],
    /// Files (CRIU keys) outside the container.
    pub external_files: &'a [String],
    /// The inode of a network namespace joined by path.
    pub external_netns: Option<u64>,
    pub recorded: &'a Recorded,
}

impl Dump<'_> {
    pub(crate) fn opts(&self) -> rpc::Opts {
        let mut opts = rpc::Opts {
            pid: Some(self.pid),
            log_file: "dump.log".into(),
            root: path(self.root),
            leave_running: self.leave_running,
            // A terminal's master is the caller's, outside the container:
            // CRIU makes a new one at restore and hands it back.
            orphan_pts_master: true,
            freeze_cgroup: self.freezer.map(path),
            ..Default::default()
        };
        for m in self.mounts {
            let key = path(&m.destination);
            opts.external.push(format!("mnt[{key}]:{key}"));
        }
        opts.external.extend(self.external_files.iter().cloned());
        if let Some(inode) = self.external_netns {
            opts.external.push(format!("net[{inode}]:{EXTERNAL_NETNS_KEY}"));
        }
        self.recorded.apply(&mut opts);
        opts
    }
}

/// A restore of the images into a new container.
pub(crate) struct Restore<'a> {
    pub root: &'a Path,
    pub mounts: &'a [ExternalMount],
    /// Keys of the inherited fds, in the order they are placed from
    /// FIRST_INHERITED_FD on.
    pub inherited: &'a [String],
    /// Namespaces joined rather than made ("ipc", "uts"), by path.
    pub joins: &'a [(&'static str, PathBuf)],
    pub recorded: &'a Recorded,
}

impl Restore<'_> {
    pub(crate) fn opts(&self) -> rpc::Opts {
        let mut opts = rpc::Opts {
            log_file: "restore.log".into(),
            root: path(self.root),
            // The restored init is born the runner's child, and the caller's
            // (a subreaper) once the runner is gone.
            rst_sibling: true,
            orphan_pts_master: true,
            ..Default::default()
        };
        for m in self.mounts {
            opts.external.push(format!("mnt[{}]:{}", path(&m.destination), path(&m.source)));
        }
        for (i, key) in self.inherited.iter().enumerate() {
            opts.inherit_fd.push((key.clone(), FIRST_INHERITED_FD + i as i32));
        }
        for (ns, file) in self.joins {
            opts.join_ns.push((ns.to_string(), path(file)));
        }
        self.recorded.apply(&mut opts);
        opts
    }
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// "Version: 4.2" (first line of `criu --version`) -> (4, 2).
pub(crate) fn parse_version(text: &str) -> Option<(u32, u32)> {
    let v = text.lines().find_map(|l| l.trim().strip_prefix("Version:"))?.trim();
    let mut parts = v.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty());
    Some((parts.next()?.parse().ok()?, parts.next().and_then(|m| m.parse().ok()).unwrap_or(0)))
}

/// What CRIU's log says went wrong: its error lines, the last few. CRIU
/// logs its failure to raise its own fd limit (without CAP_SYS_RESOURCE) as
/// an error on every run, and goes on: not the reason for anything.
pub(crate) fn log_errors(log: &str) -> String {
    let errors: Vec<&str> =
        log.lines().filter(|l| l.contains("Error (") && !l.contains("Can't setup RLIMIT_NOFILE")).collect();
    let tail = &errors[errors.len().saturating_sub(4)..];
    tail.iter().map(|l| l.trim()).collect::<Vec<_>>().join("; ")
}

pub(crate) fn needed(what: impl std::fmt::Display) -> String {
    format!(
        "{what}: checkpoint/restore needs CRIU {}.{} or newer (set the CriuPath runtime option, or put criu on PATH)",
        MIN_VERSION.0, MIN_VERSION.1
    )
}

/// CRIU's program as a path: `criu` is looked up on `path` (the caller's
/// PATH), as a shell would.
pub(crate) fn resolve(criu: &Path, path: &str) -> Result<PathBuf, String> {
    if criu.components().count() > 1 || criu.is_absolute() {
        return Ok(criu.to_path_buf());
    }
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(criu))
        .find(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .ok_or_else(|| needed(format!("{} not found on PATH ({path})", criu.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded() -> Recorded {
        Recorded { tcp_established: true, file_locks: true, ..Default::default() }
    }

    #[test]
    fn dump_declares_what_is_outside() {
        let mounts = [ExternalMount { destination: "/data".into(), source: "/srv/data".into() }];
        let files = ["file[2a:1f]".to_string()];
        let r = recorded();
        let dump = Dump {
            pid: 42,
            root: Path::new("/b/rootfs"),
            leave_running: true,
            freezer: Some(Path::new("/sys/fs/cgroup/freezer/default/c1")),
            mounts: &mounts,
            external_files: &files,
            external_netns: Some(4026532000),
            recorded: &r,
        };
        let o = dump.opts();
        assert_eq!((o.pid, o.root.as_str(), o.log_file.as_str()), (Some(42), "/b/rootfs", "dump.log"));
        assert!(o.leave_running && o.orphan_pts_master && o.tcp_established && o.file_locks && !o.ext_unix_sk);
        assert_eq!(o.freeze_cgroup.as_deref(), Some("/sys/fs/cgroup/freezer/default/c1"));
        assert_eq!(o.external, ["mnt[/data]:/data", "file[2a:1f]", "net[4026532000]:extRootNetNS"]);
        assert!(o.inherit_fd.is_empty() && !o.rst_sibling);
    }

    #[test]
    fn restore_maps_keys_to_new_sources_and_fds() {
        let mounts = [ExternalMount { destination: "/data".into(), source: "/srv/new".into() }];
        let inherited = ["file[2a:1f]".to_string(), "pipe:[77]".to_string()];
        let joins = [("ipc", PathBuf::from("/proc/9/ns/ipc"))];
        let r = recorded();
        let restore = Restore { root: Path::new("/run/r"), mounts: &mounts, inherited: &inherited, joins: &joins, recorded: &r };
        let o = restore.opts();
        assert_eq!((o.root.as_str(), o.log_file.as_str(), o.pid), ("/run/r", "restore.log", None));
        assert!(o.rst_sibling && o.orphan_pts_master && o.tcp_established);
        assert_eq!(o.external, ["mnt[/data]:/srv/new"]);
        assert_eq!(o.inherit_fd, [("file[2a:1f]".to_string(), 10), ("pipe:[77]".to_string(), 11)]);
        assert_eq!(o.join_ns, [("ipc".to_string(), "/proc/9/ns/ipc".to_string())]);
    }

    #[test]
    fn stdio_outside_the_container_is_external() {
        let file = |link: &str, mnt_id| OpenFile { fd: 1, link: link.into(), mnt_id, inode: 0x1f };
        let inside = [30, 31];
        assert_eq!(stdio_key(&file("/run/fifo/c1-stdout", 42), &inside), Some(("file[2a:1f]".into(), true)));
        assert_eq!(stdio_key(&file("pipe:[77]", 12), &inside), Some(("pipe:[77]".into(), false)));
        assert_eq!(stdio_key(&file("/dev/null", 30), &inside), None);
        assert_eq!(stdio_key(&file("socket:[5]", 12), &inside), None);
    }

    #[test]
    fn procfs_texts() {
        assert_eq!(fdinfo_mnt_id("pos:\t0\nflags:\t02\nmnt_id:\t42\nino:\t7\n"), Some(42));
        assert_eq!(mount_ids("30 1 0:5 / / rw - overlay o rw\n31 30 0:6 / /proc rw - proc proc rw\n"), vec![30, 31]);
        assert_eq!(parse_version("Version: 4.2\nGitID: v4.2\n"), Some((4, 2)));
        assert_eq!(parse_version("Version: 3.17.1\n"), Some((3, 17)));
        assert_eq!(parse_version("hello"), None);
        let log = "(00.0) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted\n(00.1) a\n(00.2) Error (criu/mount.c:1): mnt: no\n(00.3) b\n(00.4) Error (criu/cr-dump.c:2): Dumping FAILED.\n";
        assert_eq!(log_errors(log), "(00.2) Error (criu/mount.c:1): mnt: no; (00.4) Error (criu/cr-dump.c:2): Dumping FAILED.");
    }

    #[test]
    fn bind_mounts_by_type_or_option() {
        let spec: oci_spec::runtime::Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"mounts":[
                {"destination":"/proc","type":"proc","source":"proc"},
                {"destination":"/a","type":"bind","source":"/srv/a","options":["rbind"]},
                {"destination":"/b","type":"none","source":"/srv/b","options":["bind","ro"]}]}"#,
        )
        .unwrap();
        let dests: Vec<_> = bind_mounts(&spec).into_iter().map(|m| m.destination).collect();
        assert_eq!(dests, [PathBuf::from("/a"), PathBuf::from("/b")]);
    }
}
