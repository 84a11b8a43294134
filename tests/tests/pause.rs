//! Pause and resume through ctr -> containerd -> ferrum (the cgroup freezer).

use std::time::{Duration, Instant};

use ferrum_tests::Env;

const GRACE: Duration = Duration::from_secs(5);

#[test]
fn pause_resume_and_force_delete_of_a_paused_task() {
    let (env, image) = Env::with_busybox();
    std::thread::scope(|s| {
        let events = s.spawn(|| env.ctr_timeout(&["events"], Duration::from_secs(6)));
        std::thread::sleep(Duration::from_millis(500));
        env.run_on_ferrum(&["-d"], &image, "c1", &["sleep", "600"]).assert_ok();
        env.ctr(&["tasks", "pause", "c1"]).assert_ok();
        assert_eq!(env.task_status("c1"), "PAUSED");
        // A paused task cannot be deleted without force, and says why.
        let refused = env.ctr(&["tasks", "delete", "c1"]);
        assert!(!refused.success() && refused.stderr.contains("paused"), "{refused}");
        env.ctr(&["tasks", "resume", "c1"]).assert_ok();
        assert_eq!(env.task_status("c1"), "RUNNING");
        let out = events.join().unwrap();
        for topic in ["/tasks/paused", "/tasks/resumed"] {
            assert!(out.stdout.lines().any(|l| l.contains(topic) && l.contains("c1")), "no {topic}: {out}");
        }
    });

    // Force-deleting a paused task kills it: SIGKILL thaws the freezer.
    env.ctr(&["tasks", "pause", "c1"]).assert_ok();
    let start = Instant::now();
    env.ctr(&["tasks", "delete", "--force", "c1"]).assert_ok();
    assert!(start.elapsed() < Duration::from_secs(5), "force delete took {:?}", start.elapsed());
    env.ctr(&["containers", "rm", "c1"]).assert_ok();
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}
