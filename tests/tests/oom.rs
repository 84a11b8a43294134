//! OOM kills through ctr -> containerd -> ferrum: one TaskOOM per kill, before
//! the victim's TaskExit (the Go runc shim sends dozens for one kill).

use std::time::Duration;

use ferrum_tests::ctr::assert_ooms_before_exit;
use ferrum_tests::Env;

const GRACE: Duration = Duration::from_secs(5);
/// Doubles a shell variable until the memory limit stops it: busybox has no
/// allocator tool, and its sh keeps the whole string in memory.
const ALLOCATE: &str = "x=0123456789abcdef; while :; do x=$x$x; done";

#[test]
fn an_oom_kill_is_one_oom_event_before_the_exit() {
    let (env, image) = Env::with_busybox();
    let (run, events) = env.events_of("o1", || {
        env.run_on_ferrum(&["--rm", "--memory-limit", "33554432"], &image, "o1", &["sh", "-c", ALLOCATE])
    });
    assert_eq!(run.status, Some(137), "not killed by the OOM killer: {run}");
    assert_ooms_before_exit(&events, 1);
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

#[test]
fn each_oom_kill_is_one_event() {
    let (env, image) = Env::with_busybox();
    let script = format!("for i in 1 2 3; do sh -c '{ALLOCATE}'; done; exit 0");
    let (run, events) = env.events_of("o3", || {
        env.run_on_ferrum(&["--rm", "--memory-limit", "33554432"], &image, "o3", &["sh", "-c", &script])
    });
    run.assert_ok();
    assert_ooms_before_exit(&events, 3);
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}
