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
