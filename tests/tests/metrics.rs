//! Task.Stats through `ctr task metrics`: containerd decodes our figures as its
//! own cgroup Metrics type.

use std::time::Duration;

use ferrum_tests::Env;

const GRACE: Duration = Duration::from_secs(5);

fn value(out: &str, metric: &str) -> Option<u64> {
    out.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next()? == metric).then(|| f.next()?.parse().ok()).flatten()
    })
}

#[test]
fn metrics_show_the_containers_memory_cpu_and_pids() {
    let (env, image) = Env::with_busybox();
    let script = "sleep 600 & sleep 600 & i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; wait";
    env.run_on_ferrum(&["-d"], &image, "c1", &["sh", "-c", script]).assert_ok();
    std::thread::sleep(Duration::from_millis(500));
    let out = env.ctr(&["tasks", "metrics", "c1"]);
    out.assert_ok();
    // containerd 1.6 and 2.x print v1 metrics by these names on this v1 host.
    assert_eq!(value(&out.stdout, "pids.current"), Some(3), "sh and two sleeps: {out}");
    assert!(value(&out.stdout, "memory.usage_in_bytes").is_some_and(|v| v > 0), "{out}");
    assert!(value(&out.stdout, "cpuacct.usage").is_some_and(|v| v > 0), "{out}");
    env.remove_task("c1");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}
