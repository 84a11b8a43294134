//! OOM kills through ctr -> containerd -> ferrum: one TaskOOM per kill, before
//! the victim's TaskExit (the Go runc shim sends dozens for one kill).

use std::time::Duration;

use ferrum_tests::Env;

const GRACE: Duration = Duration::from_secs(5);
/// Doubles a shell variable until the memory limit stops it: busybox has no
/// allocator tool, and its sh keeps the whole string in memory.
const ALLOCATE: &str = "x=0123456789abcdef; while :; do x=$x$x; done";

#[test]
fn an_oom_kill_is_one_oom_event_before_the_exit() {
    let (env, image) = Env::with_busybox();
    std::thread::scope(|s| {
        let events = s.spawn(|| env.ctr_timeout(&["events"], Duration::from_secs(10)));
        // `ctr events` subscribes asynchronously; give it a moment.
        std::thread::sleep(Duration::from_millis(500));
        let run = env.run_on_ferrum(
            &["--rm", "--memory-limit", "33554432"],
            &image,
            "o1",
            &["sh", "-c", ALLOCATE],
        );
        assert_eq!(run.status, Some(137), "not killed by the OOM killer: {run}");
        let out = events.join().unwrap();
        let of_o1: Vec<&str> = out.stdout.lines().filter(|l| l.contains("o1")).collect();
        let ooms: Vec<usize> = (0..of_o1.len()).filter(|i| of_o1[*i].contains("/tasks/oom")).collect();
        assert_eq!(ooms.len(), 1, "not exactly one /tasks/oom:\n{}", out.stdout);
        let exit = of_o1
            .iter()
            .position(|l| l.contains("/tasks/exit"))
            .unwrap_or_else(|| panic!("no exit:\n{}", out.stdout));
        assert!(ooms[0] < exit, "/tasks/oom after /tasks/exit:\n{}", out.stdout);
    });
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

/// Three children killed one after the other: three TaskOOM, then the exit of
/// the init, which survives them.
#[test]
fn each_oom_kill_is_one_event() {
    let (env, image) = Env::with_busybox();
    let script = format!("for i in 1 2 3; do sh -c '{ALLOCATE}'; done; exit 0");
    std::thread::scope(|s| {
        let events = s.spawn(|| env.ctr_timeout(&["events"], Duration::from_secs(15)));
        std::thread::sleep(Duration::from_millis(500));
        let run = env.run_on_ferrum(
            &["--rm", "--memory-limit", "33554432"],
            &image,
            "o3",
            &["sh", "-c", &script],
        );
        run.assert_ok();
        let out = events.join().unwrap();
        let of_o3: Vec<&str> = out.stdout.lines().filter(|l| l.contains("o3")).collect();
        let exit = of_o3
            .iter()
            .position(|l| l.contains("/tasks/exit"))
            .unwrap_or_else(|| panic!("no exit:\n{}", out.stdout));
        let ooms = of_o3[..exit].iter().filter(|l| l.contains("/tasks/oom")).count();
        assert_eq!(ooms, 3, "not one /tasks/oom per kill before the exit:\n{}", out.stdout);
        assert!(
            !of_o3[exit..].iter().any(|l| l.contains("/tasks/oom")),
            "an oom after the exit:\n{}",
            out.stdout
        );
    });
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}
