//! CRIU's command lines for a container's checkpoint and restore, and running
//! them.
//!
//! CRIU is driven through its command line, one `criu dump` or `criu restore`
//! per request, from a runner (our binary re-executed, single-threaded, in the
//! runtime's namespaces): the runner is CRIU's only reaper, as a subreaping
//! caller's waitpid(-1) could otherwise take CRIU's status first.
//!
//! What CRIU cannot see for itself is declared to it as runc declares it: the
//! spec's bind mounts and (without a cgroup namespace) the container's v1
//! cgroup binds as external mounts keyed by their destination; init's stdio
//! that leads outside the container (the caller's FIFOs, /dev/null) as
//! external files, whose keys are kept in the images (`ferrum-checkpoint.json`)
//! so that a restore hands the new stdio in their place; a network namespace
//! joined by path as external, its fd handed back at restore.

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

    fn flags(&self, args: &mut Vec<String>) {
        for (set, flag) in [
            (self.tcp_established, "--tcp-established"),
            (self.ext_unix_sockets, "--ext-unix-sk"),
            (self.file_locks, "--file-locks"),
        ] {
            if set {
                args.push(flag.into());
            }
        }
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

/// `criu dump` of the tree of `pid`.
pub(crate) struct Dump<'a> {
    pub pid: i32,
    pub root: &'a Path,
    pub image_dir: &'a Path,
    pub work_dir: &'a Path,
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
    pub(crate) fn args(&self) -> Vec<String> {
        let mut args = common("dump", self.image_dir, self.work_dir);
        args.extend(["--tree".into(), self.pid.to_string(), "--root".into(), path(self.root)]);
        // CRIU's cgroup images are not used: a restore makes the container's
        // cgroup itself and moves CRIU in first.
        args.push("--manage-cgroups=ignore".into());
        if self.leave_running {
            args.push("--leave-running".into());
        }
        if let Some(dir) = self.freezer {
            args.extend(["--freeze-cgroup".into(), path(dir)]);
        }
        for m in self.mounts {
            let key = path(&m.destination);
            args.extend(["--external".into(), format!("mnt[{key}]:{key}")]);
        }
        for key in self.external_files {
            args.extend(["--external".into(), key.clone()]);
        }
        if let Some(inode) = self.external_netns {
            args.extend(["--external".into(), format!("net[{inode}]:{EXTERNAL_NETNS_KEY}")]);
        }
        self.recorded.flags(&mut args);
        args
    }
}

/// `criu restore` of the images into a new container.
pub(crate) struct Restore<'a> {
    pub root: &'a Path,
    pub image_dir: &'a Path,
    pub work_dir: &'a Path,
    pub pidfile: &'a Path,
    pub mounts: &'a [ExternalMount],
    /// Keys of the inherited fds, in the order they are placed from
    /// FIRST_INHERITED_FD on.
    pub inherited: &'a [String],
    /// Namespaces joined rather than made ("ipc", "uts"), by path.
    pub joins: &'a [(&'static str, PathBuf)],
    pub recorded: &'a Recorded,
}

impl Restore<'_> {
    pub(crate) fn args(&self) -> Vec<String> {
        let mut args = common("restore", self.image_dir, self.work_dir);
        args.extend([
            "--root".into(),
            path(self.root),
            // The restored init is left to CRIU's parent's reaper.
            "--restore-detached".into(),
            "--pidfile".into(),
            path(self.pidfile),
            "--manage-cgroups=ignore".into(),
        ]);
        for m in self.mounts {
            args.extend(["--external".into(), format!("mnt[{}]:{}", path(&m.destination), path(&m.source))]);
        }
        for (i, key) in self.inherited.iter().enumerate() {
            args.extend(["--inherit-fd".into(), format!("fd[{}]:{key}", FIRST_INHERITED_FD + i as i32)]);
        }
        for (ns, file) in self.joins {
            args.extend(["--join-ns".into(), format!("{ns}:{}", path(file))]);
        }
        self.recorded.flags(&mut args);
        args
    }
}

fn common(action: &str, image_dir: &Path, work_dir: &Path) -> Vec<String> {
    vec![
        action.into(),
        "--images-dir".into(),
        path(image_dir),
        "--work-dir".into(),
        path(work_dir),
        "--log-file".into(),
        format!("{action}.log"),
        "-v4".into(),
    ]
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

fn needed(what: impl std::fmt::Display) -> String {
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

/// The runner's side: check CRIU's version, then run it with `args` and the
/// inherited fds (already at their numbers), and say what failed.
pub(crate) fn run(criu: &Path, path: &str, args: &[String], work_dir: &Path) -> Result<(), String> {
    let missing = |e: std::io::Error| needed(format!("{}: {e}", criu.display()));
    let out = std::process::Command::new(criu).env("PATH", path).arg("--version").output().map_err(missing)?;
    let text = String::from_utf8_lossy(&out.stdout);
    match parse_version(&text) {
        Some(v) if v >= MIN_VERSION => {}
        Some((major, minor)) => {
            return Err(format!(
                "{} is CRIU {major}.{minor}: checkpoint/restore needs {}.{} or newer",
                criu.display(),
                MIN_VERSION.0,
                MIN_VERSION.1
            ))
        }
        None => return Err(format!("{} --version said {:?}: not CRIU?", criu.display(), text.trim())),
    }
    let action = args.first().cloned().unwrap_or_default();
    let out = std::process::Command::new(criu)
        .env("PATH", path)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("run {}: {e}", criu.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let log_file = work_dir.join(format!("{action}.log"));
    let log = std::fs::read_to_string(&log_file).unwrap_or_default();
    let mut why = log_errors(&log);
    if why.is_empty() {
        why = String::from_utf8_lossy(&out.stderr).trim().to_string();
    }
    Err(format!("criu {action} failed ({}): {why} (log: {})", out.status, log_file.display()))
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
            image_dir: Path::new("/img"),
            work_dir: Path::new("/work"),
            leave_running: true,
            freezer: Some(Path::new("/sys/fs/cgroup/freezer/default/c1")),
            mounts: &mounts,
            external_files: &files,
            external_netns: Some(4026532000),
            recorded: &r,
        };
        let args = dump.args().join(" ");
        for want in [
            "dump --images-dir /img --work-dir /work --log-file dump.log",
            "--tree 42 --root /b/rootfs",
            "--leave-running",
            "--freeze-cgroup /sys/fs/cgroup/freezer/default/c1",
            "--external mnt[/data]:/data",
            "--external file[2a:1f]",
            "--external net[4026532000]:extRootNetNS",
            "--tcp-established",
            "--file-locks",
        ] {
            assert!(args.contains(want), "{want:?} not in {args}");
        }
        assert!(!args.contains("--ext-unix-sk"), "{args}");
    }

    #[test]
    fn restore_maps_keys_to_new_sources_and_fds() {
        let mounts = [ExternalMount { destination: "/data".into(), source: "/srv/new".into() }];
        let inherited = ["file[2a:1f]".to_string(), "pipe:[77]".to_string()];
        let joins = [("ipc", PathBuf::from("/proc/9/ns/ipc"))];
        let r = recorded();
        let restore = Restore {
            root: Path::new("/run/r"),
            image_dir: Path::new("/img"),
            work_dir: Path::new("/work"),
            pidfile: Path::new("/work/pid"),
            mounts: &mounts,
            inherited: &inherited,
            joins: &joins,
            recorded: &r,
        };
        let args = restore.args().join(" ");
        for want in [
            "restore --images-dir /img",
            "--root /run/r --restore-detached --pidfile /work/pid --manage-cgroups=ignore",
            "--external mnt[/data]:/srv/new",
            "--inherit-fd fd[10]:file[2a:1f] --inherit-fd fd[11]:pipe:[77]",
            "--join-ns ipc:/proc/9/ns/ipc",
            "--tcp-established",
        ] {
            assert!(args.contains(want), "{want:?} not in {args}");
        }
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
