//! Terminals: `ctr run -t` and `ctr tasks exec -t` through ferrum, with the pty
//! made inside the container's own devpts.

use std::time::Duration;

use ferrum_tests::{Env, FERRUM_RUNTIME};

const GRACE: Duration = Duration::from_secs(5);

#[test]
fn run_with_a_terminal() {
    let (env, image) = Env::with_busybox();
    let script = "tty; test -t 0 && test -t 1 && echo both-ttys; ls -l /dev/console; exit 4";
    let out = env.ctr_in_terminal(&[
        "run", "--rm", "-t", "--runtime", FERRUM_RUNTIME, "--snapshotter", "ferrum", &image, "t1", "sh", "-c", script,
    ]);
    out.assert_exit(4);
    assert!(out.stdout.contains("/dev/pts/0"), "the console is the container's pts 0: {out}");
    assert!(out.stdout.contains("both-ttys"), "{out}");
    // /dev/console is the console's slave (devpts major 136), not the host's console.
    assert!(out.stdout.contains("136,"), "{out}");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

#[test]
fn exec_with_a_terminal_in_a_container_without_one() {
    let (env, image) = Env::with_busybox();
    env.run_on_ferrum(&["-d"], &image, "c1", &["sleep", "600"]).assert_ok();
    let out = env.ctr_in_terminal(&["tasks", "exec", "-t", "--exec-id", "e1", "c1", "sh", "-c", "tty; exit 3"]);
    out.assert_exit(3);
    assert!(out.stdout.contains("/dev/pts/"), "{out}");
    // Without -t the same container still has no terminal.
    let plain = env.ctr(&["tasks", "exec", "--exec-id", "e2", "c1", "sh", "-c", "tty || echo no-tty"]);
    assert!(plain.stdout.contains("no-tty"), "{plain}");

    env.remove_task("c1");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

/// ctr sends ResizePty when the terminal changes, and once right after start:
/// for a process that has exited by then (`ctr run --rm -t … echo hi`), or
/// one without a terminal, a resize is no error (as runc-v2: there is nothing
/// to resize), so ctr prints none.
#[test]
fn a_resize_after_the_terminal_process_exited_is_no_error() {
    use containerd_shim_protos::api;
    let (env, image) = Env::with_busybox();
    let ctx = || ttrpc::context::with_timeout(Duration::from_secs(10).as_nanos() as i64);
    let resize = |id: &str, exec_id: &str| {
        let request = api::ResizePtyRequest { id: id.into(), exec_id: exec_id.into(), width: 100, height: 40, ..Default::default() };
        env.task_client(id).resize_pty(ctx(), &request)
    };
    env.ctr_in_terminal(&["run", "-d", "-t", "--runtime", FERRUM_RUNTIME, "--snapshotter", "ferrum", &image, "done", "true"])
        .assert_ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !env.ctr(&["tasks", "ls"]).stdout.lines().any(|l| l.starts_with("done ") && l.contains("STOPPED")) {
        assert!(std::time::Instant::now() < deadline, "the task never stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
    resize("done", "").expect("a resize of an exited terminal process");
    env.run_on_ferrum(&["-d"], &image, "plain", &["sleep", "600"]).assert_ok();
    resize("plain", "").expect("a resize of a process without a terminal");
    for i in 0..10 {
        let out = env.ctr_in_terminal(&[
            "run", "--rm", "-t", "--runtime", FERRUM_RUNTIME, "--snapshotter", "ferrum", &image, &format!("e{i}"), "echo", "hi",
        ]);
        out.assert_ok();
        assert!(!format!("{}{}", out.stdout, out.stderr).contains("resize"), "{out}");
    }
    env.ctr(&["tasks", "delete", "done"]).assert_ok();
    env.ctr(&["containers", "rm", "done"]).assert_ok();
    env.remove_task("plain");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}
