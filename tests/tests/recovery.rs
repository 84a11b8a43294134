//! Surviving restarts: containerd restarting under running ferrum tasks, and a
//! ferrum shim killed outright (containerd then runs `shim delete`).

use std::thread;
use std::time::{Duration, Instant};

use ferrum_tests::Env;

const GRACE: Duration = Duration::from_secs(5);

fn running(env: &Env) {
    let image = env.import_busybox().expect("importing busybox");
    env.run_on_ferrum(&["-d"], &image, "c1", &["sleep", "600"]).assert_ok();
}

fn task_line(env: &Env) -> Option<String> {
    env.ctr(&["tasks", "ls"]).stdout.lines().find(|l| l.starts_with("c1 ")).map(String::from)
}

#[test]
fn containerd_restarts_under_a_running_task() {
    let mut env = Env::start().expect("starting containerd with ferrum");
    running(&env);
    let shim = env.shim_pid("c1").expect("a shim serves c1");
    let before = task_line(&env).expect("c1 is listed");

    env.restart_containerd().expect("restarting containerd");
    // The same task, still running, on the same shim, and every RPC works on it.
    assert_eq!(task_line(&env).as_deref(), Some(before.as_str()));
    assert_eq!(env.shim_pid("c1"), Some(shim), "the shim survived");
    let out = env.ctr(&["tasks", "exec", "--exec-id", "after", "c1", "echo", "still-here"]);
    out.assert_ok();
    assert_eq!(out.stdout, "still-here\n", "{out}");
    env.remove_task("c1");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

#[test]
fn a_killed_shim_is_cleaned_up_by_shim_delete() {
    let env = Env::start().expect("starting containerd with ferrum");
    running(&env);
    let shim = env.shim_pid("c1").expect("a shim serves c1");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim), nix::sys::signal::Signal::SIGKILL).unwrap();

    // containerd notices, runs `containerd-shim-ferrum-v2 … delete`, which finds
    // the container from its state on disk and kills, unmounts and removes it.
    let deadline = Instant::now() + Duration::from_secs(15);
    while task_line(&env).is_some() {
        assert!(Instant::now() < deadline, "the task outlived its shim: {:?}", task_line(&env));
        thread::sleep(Duration::from_millis(100));
    }
    env.ctr(&["containers", "rm", "c1"]).assert_ok();
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}
