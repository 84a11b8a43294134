//! The harness itself, proven against the reference runtime (runc via
//! containerd's own runc-v2 shim and overlayfs snapshotter), so a failure in the
//! ferrum tests can be blamed on ferrum rather than on the harness.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use ferrum_tests::{Env, Footprint, Options};

const GRACE: Duration = Duration::from_secs(5);

fn reference_env() -> Env {
    let options = Options {
        ferrum_snapshotter: false,
        ..Options::default()
    };
    Env::start_with(options).expect("starting containerd")
}

#[test]
fn run_rm_prints_output_and_leaves_nothing() {
    let env = reference_env();
    let image = env.import_busybox().expect("importing busybox");
    let out = env.ctr(&["run", "--rm", &image, "c1", "echo", "hello"]);
    out.assert_ok();
    assert_eq!(out.stdout, "hello\n", "{out}");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new());
    env.ctr(&["containers", "ls", "-q"]).assert_ok();
    assert_eq!(env.ctr(&["containers", "ls", "-q"]).stdout, "");
}

#[test]
fn ctr_run_exits_with_the_task_status() {
    let env = reference_env();
    let image = env.import_busybox().expect("importing busybox");
    env.ctr(&["run", "--rm", &image, "c1", "sh", "-c", "exit 7"])
        .assert_exit(7);

    // A task killed by signal N exits 128+N, and so does `ctr run`.
    thread::scope(|s| {
        let run = s.spawn(|| env.ctr(&["run", "--rm", &image, "c2", "sleep", "600"]));
        wait_for_task(&env, "c2");
        env.ctr(&["tasks", "kill", "--signal", "SIGKILL", "c2"])
            .assert_ok();
        run.join().unwrap().assert_exit(137);
    });
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new());
}

#[test]
fn drop_cleans_up_after_a_panic() {
    let mut seen: Option<(Footprint, i32)> = None;
    let result = catch_unwind(AssertUnwindSafe(|| {
        let env = reference_env();
        let image = env.import_busybox().expect("importing busybox");
        env.ctr(&["run", "-d", &image, "c1", "sleep", "600"])
            .assert_ok();
        let pid = wait_for_task(&env, "c1");
        seen = Some((env.footprint().clone(), pid));
        let left = env.leftovers();
        assert!(
            left.iter().any(|l| l.starts_with("mount ")),
            "a running task has its rootfs mounted: {left:?}"
        );
        assert!(
            left.iter().any(|l| l.starts_with("shim ")),
            "a running task has its shim: {left:?}"
        );
        panic!("deliberate panic with a running container");
    }));
    assert!(result.is_err(), "the closure was meant to panic");

    let (footprint, pid) = seen.expect("the container was started before the panic");
    assert_eq!(footprint.leftovers(), Vec::<String>::new());
    assert!(
        !footprint.root().exists(),
        "{} still exists",
        footprint.root().display()
    );
    assert!(!is_running(pid), "container process {pid} survived");
    let cgroups: Vec<PathBuf> = fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|hierarchy| hierarchy.path().join(footprint.namespace()))
        .chain([PathBuf::from("/sys/fs/cgroup").join(footprint.namespace())])
        .filter(|dir| dir.exists())
        .collect();
    assert!(cgroups.is_empty(), "namespace cgroups remain: {cgroups:?}");
}

#[test]
fn startup_failure_reports_the_log_and_cleans_up() {
    let options = Options {
        ferrum_snapshotter: false,
        extra_config: "[plugins\n this is not toml".to_string(),
        ..Options::default()
    };
    let error = format!(
        "{:#}",
        Env::start_with(options)
            .err()
            .expect("containerd cannot parse its config")
    );
    assert!(error.contains("containerd exited"), "{error}");
    let log = error
        .split_whitespace()
        .find(|word| word.ends_with("/containerd.log"))
        .unwrap_or_else(|| panic!("the error names containerd's log: {error}"));
    let dir = PathBuf::from(log).parent().unwrap().to_path_buf();
    assert!(!dir.exists(), "{} still exists", dir.display());
}

/// Waits until `ctr tasks ls` shows `id` RUNNING and returns its host pid.
fn wait_for_task(env: &Env, id: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = env.ctr(&["tasks", "ls"]);
        // TASK PID STATUS
        let running = out.stdout.lines().find_map(|line| {
            match line.split_whitespace().collect::<Vec<_>>()[..] {
                [task, pid, "RUNNING"] if task == id => pid.parse().ok(),
                _ => None,
            }
        });
        if let Some(pid) = running {
            return pid;
        }
        assert!(Instant::now() < deadline, "task {id} never ran\n{out}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Exists and is not a zombie: an orphaned container process whose shim was
/// killed may stay a zombie when PID 1 does not reap, which holds nothing.
fn is_running(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    stat.rsplit_once(") ")
        .is_some_and(|(_, rest)| !rest.starts_with('Z'))
}
