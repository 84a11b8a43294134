//! Running ferrum-snapshotter: its config file, the root's lock, SIGTERM with
//! calls in flight, and overlay options chosen for a user namespace.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use ferrum_tests::labels;
use ferrum_tests::snapshots::{lower_dirs, overlay_dir, read_tree, Mounted, SnapshotClient};
use ferrum_tests::{ferrum_binary, Env, Options};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const SNAPSHOTTER: &str = "ferrum-snapshotter";

/// A ferrum-snapshotter of the test's own, SIGKILLed and reaped on drop.
struct Daemon {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Runs `prefix… ferrum-snapshotter args…` and waits until `socket` answers.
    fn start(prefix: &[&str], args: &[&str], socket: &Path, log: &Path) -> Daemon {
        let binary = ferrum_binary(SNAPSHOTTER);
        let mut command = match prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        let out = fs::File::create(log).unwrap();
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut daemon = Daemon {
            child,
            socket: socket.to_owned(),
            log: log.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(socket).is_err() {
            let exited = daemon.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "{SNAPSHOTTER} did not come up ({exited:?}):\n{}",
                daemon.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    fn client(&self) -> SnapshotClient {
        SnapshotClient::connect(&self.socket, "ferrum", None).unwrap()
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An Env only for its temp dir and its leftover checks: no proxy snapshotter.
fn env() -> Env {
    Env::start_with(Options {
        ferrum_snapshotter: false,
        ..Options::default()
    })
    .expect("starting containerd")
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap()
}

#[test]
fn config_file_sets_root_socket_and_mount_options() {
    let env = env();
    let dir = env.root_dir();
    let (root, socket) = (dir.join("snap-root"), dir.join("snap.sock"));
    let config = dir.join("snapshotter.toml");
    fs::write(
        &config,
        format!(
            "root = {root:?}\naddress = {socket:?}\n\n[socket]\nmode = 0o600\ngroup = \"adm\"\n\n\
             [mount]\noptions = [\"redirect_dir=on\"]\n"
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let daemon = Daemon::start(&[], &["--config", config_arg], &socket, &dir.join("log"));

    let meta = fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.gid(), 4, "group adm");
    assert!(root.join("metadata.redb").is_file());

    let mut c = daemon.client();
    let m = c.prepare("base-extract", "", labels! {}).unwrap();
    fs::create_dir(Path::new(&m[0].source).join("dir")).unwrap();
    c.commit("base", "base-extract", labels! {}).unwrap();
    let m = c.prepare("ctr", "base", labels! {}).unwrap();
    assert!(m[0].options.iter().any(|o| o == "redirect_dir=on"), "{m:?}");
    // The option takes effect: with redirect_dir a lower dir can be renamed
    // (the parity test shows EXDEV without it).
    let target = dir.join("mnt");
    {
        let mounted = Mounted::new(&m, &target).unwrap();
        fs::rename(mounted.path().join("dir"), mounted.path().join("moved")).unwrap();
    }
    let upper = overlay_dir(&m[0], "upperdir").unwrap();
    assert!(upper.join("moved").is_dir());

    // A bad config file names the file and the problem, and nothing starts.
    fs::write(&config, "[mount]\noptions = [\"lowerdir=/etc\"]\n").unwrap();
    let out = run(
        ferrum_binary(SNAPSHOTTER).to_str().unwrap(),
        &["--config", config_arg],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(config_arg) && stderr.contains("\"lowerdir=/etc\""),
        "{stderr}"
    );
    drop(daemon);
    assert_eq!(env.leftovers(), Vec::<String>::new(), "left behind");
}

#[test]
fn a_second_instance_on_the_same_root_is_refused() {
    let env = env();
    let dir = env.root_dir();
    let root = dir.join("snap-root");
    let root_arg = root.to_str().unwrap();
    let first_socket = dir.join("first.sock");
    let _first = Daemon::start(
        &[],
        &[
            "--root",
            root_arg,
            "--address",
            first_socket.to_str().unwrap(),
        ],
        &first_socket,
        &dir.join("first.log"),
    );
    let second_socket = dir.join("second.sock");
    let out = run(
        ferrum_binary(SNAPSHOTTER).to_str().unwrap(),
        &[
            "--root",
            root_arg,
            "--address",
            second_socket.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second instance ran: {stderr}");
    assert!(
        stderr.contains("in use by another ferrum-snapshotter"),
        "{stderr}"
    );
    assert!(
        !second_socket.exists(),
        "the second instance bound its socket"
    );
}

#[test]
fn sigterm_lets_an_in_flight_commit_finish_and_closes_the_store() {
    let env = env();
    let dir = env.root_dir();
    let (root, socket) = (dir.join("snap-root"), dir.join("snap.sock"));
    // On tmpfs: the many files below take minutes to create and delete on a
    // busy disk, and only their count matters.
    fs::create_dir(&root).unwrap();
    let tmpfs = mount(
        Some("tmpfs"),
        &root,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0700"),
    );
    tmpfs.expect("mounting a tmpfs");
    let args = [
        "--root",
        root.to_str().unwrap(),
        "--address",
        socket.to_str().unwrap(),
    ];
    let mut daemon = Daemon::start(&[], &args, &socket, &dir.join("log"));
    let mut c = daemon.client();
    let m = c.prepare("big-extract", "", labels! {}).unwrap();
    // Enough files that measuring the layer at Commit takes a while.
    let layer = Path::new(&m[0].source);
    for d in 0..40 {
        let sub = layer.join(d.to_string());
        fs::create_dir(&sub).unwrap();
        for f in 0..1000 {
            fs::write(sub.join(f.to_string()), "x").unwrap();
        }
    }
    let committer = thread::spawn(move || {
        let started = Instant::now();
        let result = c.commit("big", "big-extract", labels! {});
        (result, started.elapsed())
    });
    thread::sleep(Duration::from_millis(30));
    kill(Pid::from_raw(daemon.pid() as i32), Signal::SIGTERM).unwrap();
    let (result, took) = committer.join().unwrap();
    result.unwrap_or_else(|e| panic!("the in-flight Commit failed: {e}"));
    assert!(
        took > Duration::from_millis(30),
        "the Commit finished before SIGTERM ({took:?})"
    );
    let status = daemon.child.wait().unwrap();
    assert!(status.success(), "{status}\n{}", daemon.log());
    assert!(!socket.exists(), "the socket was left behind");

    // The store was closed cleanly and kept the commit.
    let daemon = Daemon::start(&[], &args, &socket, &dir.join("log2"));
    let mut c = daemon.client();
    let (_, inodes) = c.usage("big").unwrap();
    assert_eq!(inodes, 1 + 40 + 40 * 1000);
    drop(daemon);
    umount2(&root, MntFlags::MNT_DETACH).unwrap();
    assert_eq!(env.leftovers(), Vec::<String>::new(), "left behind");
}

#[test]
fn in_a_user_namespace_overlay_mounts_get_userxattr() {
    let env = env();
    let dir = env.root_dir();
    let (root, socket) = (dir.join("snap-root"), dir.join("snap.sock"));
    let args = [
        "--root",
        root.to_str().unwrap(),
        "--address",
        socket.to_str().unwrap(),
    ];
    let unshare = [
        "unshare",
        "--user",
        "--map-root-user",
        "--mount",
        "--propagation",
        "private",
    ];
    let daemon = Daemon::start(&unshare, &args, &socket, &dir.join("log"));
    let mut c = daemon.client();
    let m = c.prepare("base-extract", "", labels! {}).unwrap();
    assert!(
        !m[0].options.iter().any(|o| o == "userxattr"),
        "bind mounts take no overlay options"
    );
    let base = Path::new(&m[0].source);
    fs::create_dir(base.join("opq")).unwrap();
    fs::write(base.join("opq/old"), "old").unwrap();
    c.commit("base", "base-extract", labels! {}).unwrap();
    let m = c.prepare("ctr", "base", labels! {}).unwrap();
    assert!(m[0].options.iter().any(|o| o == "userxattr"), "{m:?}");

    // Mount it where the snapshotter runs, as a rootless containerd would, and
    // make an opaque dir: overlay marks it with user.overlay.opaque, which an
    // unprivileged user may set, instead of trusted.overlay.opaque.
    let target = dir.join("mnt");
    fs::create_dir(&target).unwrap();
    let script = format!(
        "mount -t overlay overlay -o {} {t} && rm -r {t}/opq && mkdir {t}/opq && umount {t}",
        m[0].options.join(","),
        t = target.display()
    );
    let pid = daemon.pid().to_string();
    // unshare forks nothing with these flags: the daemon's pid is unshare's.
    let out = run(
        "nsenter",
        &["--target", &pid, "--user", "--mount", "sh", "-c", &script],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let upper = overlay_dir(&m[0], "upperdir").unwrap();
    let tree = read_tree(&upper).unwrap();
    let attrs = &tree["./opq"].xattrs;
    assert_eq!(
        attrs.get("user.overlay.opaque").map(Vec::as_slice),
        Some(&b"y"[..]),
        "{attrs:?}"
    );
    assert!(
        !attrs.keys().any(|k| k.starts_with("trusted.")),
        "{attrs:?}"
    );
    assert_eq!(lower_dirs(&m[0]).len(), 1);
    drop(daemon);
    assert_eq!(env.leftovers(), Vec::<String>::new(), "left behind");
}
