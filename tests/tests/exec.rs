//! Exec into a running container through ctr -> containerd -> ferrum's shim ->
//! runtime-core: a new process in all of the container's namespaces and cgroup.

use std::thread;
use std::time::{Duration, Instant};

use ferrum_tests::Env;

const GRACE: Duration = Duration::from_secs(5);

/// A running container `c1` (sleep) on ferrum.
fn running() -> Env {
    let (env, image) = Env::with_busybox();
    env.run_on_ferrum(&["-d"], &image, "c1", &["sleep", "600"]).assert_ok();
    env
}

fn stop_and_remove(env: &Env) {
    env.remove_task("c1");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

#[test]
fn exec_joins_the_containers_namespaces_and_cgroup() {
    let env = running();
    let script = "echo pid=$$; cat /proc/1/comm; grep memory /proc/self/cgroup";
    let out = env.ctr(&["tasks", "exec", "--exec-id", "e1", "c1", "sh", "-c", script]);
    out.assert_ok();
    // Not pid 1: it shares the container's pid namespace, where sleep is init.
    assert!(out.stdout.starts_with("pid=2\n"), "{out}");
    assert!(out.stdout.contains("\nsleep\n"), "sees the container's init: {out}");
    let ns = env.namespace();
    assert!(out.stdout.contains(&format!("/{ns}/c1")), "in the container's cgroup: {out}");
    stop_and_remove(&env);
}

#[test]
fn exec_exit_codes_users_and_errors_reach_ctr() {
    let env = running();
    env.ctr(&["tasks", "exec", "--exec-id", "e1", "c1", "sh", "-c", "exit 5"]).assert_exit(5);

    let out = env.ctr(&["tasks", "exec", "--exec-id", "e2", "--user", "65534", "c1", "id", "-u"]);
    out.assert_ok();
    assert_eq!(out.stdout, "65534\n", "{out}");

    let missing = env.ctr(&["tasks", "exec", "--exec-id", "e3", "c1", "/no/such/tool"]);
    assert!(!missing.success() && missing.stderr.contains("/no/such/tool"), "{missing}");

    // The container and the shim go on serving after a failed exec.
    let again = env.ctr(&["tasks", "exec", "--exec-id", "e4", "c1", "echo", "still"]);
    again.assert_ok();
    assert_eq!(again.stdout, "still\n", "{again}");
    stop_and_remove(&env);
}

#[test]
fn one_exec_can_be_listed_and_killed_alone() {
    let env = running();
    thread::scope(|s| {
        let exec = s.spawn(|| env.ctr(&["tasks", "exec", "--exec-id", "long", "c1", "sleep", "600"]));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ps = env.ctr(&["tasks", "ps", "c1"]);
            if ps.stdout.contains("long") {
                break;
            }
            assert!(Instant::now() < deadline, "exec never showed up in ps: {ps}");
            thread::sleep(Duration::from_millis(50));
        }
        env.ctr(&["tasks", "kill", "--exec-id", "long", "--signal", "SIGKILL", "c1"]).assert_ok();
        exec.join().unwrap().assert_exit(137);
    });
    // The container's init is untouched.
    let out = env.ctr(&["tasks", "ls"]);
    assert!(out.stdout.lines().any(|l| l.starts_with("c1") && l.contains("RUNNING")), "{out}");
    stop_and_remove(&env);
}
