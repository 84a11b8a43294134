//! Checkpoint and restore with CRIU through ctr -> containerd -> shim ->
//! runtime-core -> CRIU, on ferrum and on runc-v2 + runc (the reference) with
//! the same CRIU (sid's, scripts/install-criu: FERRUM_CRIU_DIR).
//!
//! The probe is a shell counting in memory, writing each value to a file:
//! restored with its memory, it carries on from the checkpointed value; a
//! fresh start would begin again at 1.

use std::time::{Duration, Instant};

use ferrum_tests::containerd::{Options, FERRUM_RUNTIME, RUNC_RUNTIME};
use ferrum_tests::Env;

const GRACE: Duration = Duration::from_secs(5);
const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i > /count; sleep 0.1; done";

fn env() -> (Env, String) {
    let env = Env::start_with(Options { criu: true, ..Options::default() }).expect("starting containerd with CRIU");
    let image = env.import_busybox().expect("importing busybox");
    (env, image)
}

/// `ctr run -d` of the counter on `runtime` (ferrum on its snapshotter).
fn run_counter(env: &Env, runtime: &str, image: &str, id: &str, flags: &[&str]) {
    let out = match runtime {
        FERRUM_RUNTIME => env.run_on_ferrum(&[&["-d"], flags].concat(), image, id, &["sh", "-c", COUNTER]),
        _ => env.run_on(runtime, &[&["-d"], flags].concat(), image, id, &["sh", "-c", COUNTER]),
    };
    out.assert_ok();
    wait_for_count(env, id, 5);
}

/// The counter's value, read from the host through the task's root.
fn count(env: &Env, id: &str) -> Option<u64> {
    let pid = env.task_pid(id)?;
    std::fs::read_to_string(format!("/proc/{pid}/root/count")).ok()?.trim().parse().ok()
}

fn wait_for_count(env: &Env, id: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(n) = count(env, id).filter(|n| *n >= at_least) {
            return n;
        }
        assert!(Instant::now() < deadline, "{id}'s counter did not reach {at_least} (at {:?})", count(env, id));
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status(env: &Env, id: &str) -> String {
    let out = env.ctr(&["tasks", "ls"]);
    out.stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("")
        .to_string()
}

/// The walk, on one runtime: a counter is checkpointed with its rw
/// layer, removed, restored live under a new name: it carries on from the
/// checkpointed value as the container's pid 1, and exec, pause, resume,
/// metrics, kill and delete work on it.
fn checkpoint_and_live_restore(runtime: &str) {
    let (env, image) = env();
    run_counter(&env, runtime, &image, "c1", &[]);
    let before = count(&env, "c1").expect("the counter");
    env.ctr(&["containers", "checkpoint", "--task", "--rw", "c1", "ckpt:1"]).assert_ok();
    let after = count(&env, "c1").expect("the counter after its checkpoint");
    assert_eq!(status(&env, "c1"), "RUNNING", "{runtime}: left running");
    env.remove_task("c1");

    env.ctr(&["containers", "restore", "--rw", "--live", "c2", "ckpt:1"]).assert_ok();
    let first = wait_for_count(&env, "c2", before);
    assert!(first <= after + 30, "{runtime}: restored at {first}, checkpointed between {before} and {after}: not its memory");
    let pid1 = env.ctr(&["tasks", "exec", "--exec-id", "e1", "c2", "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"]);
    pid1.assert_ok();
    assert!(pid1.stdout.starts_with("sh -c i=0"), "{runtime}: pid 1 is {:?}", pid1.stdout);
    env.ctr(&["tasks", "pause", "c2"]).assert_ok();
    let frozen = count(&env, "c2");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(count(&env, "c2"), frozen, "{runtime}: the restored container counted while paused");
    env.ctr(&["tasks", "resume", "c2"]).assert_ok();
    wait_for_count(&env, "c2", frozen.unwrap() + 2);
    let metrics = env.ctr(&["tasks", "metrics", "c2"]);
    metrics.assert_ok();
    assert!(metrics.stdout.contains("memory"), "{runtime}: {metrics}");
    env.remove_task("c2");
    env.ctr(&["images", "rm", "ckpt:1"]).assert_ok();
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "{runtime}: left behind");
}

#[test]
fn checkpoint_and_live_restore_on_runc() {
    checkpoint_and_live_restore(RUNC_RUNTIME);
}

#[test]
fn checkpoint_and_live_restore_on_ferrum() {
    checkpoint_and_live_restore(FERRUM_RUNTIME);
}
