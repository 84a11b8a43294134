//! The walking skeleton through the real path: ctr -> containerd 1.6 -> ferrum's
//! shim -> runtime-core -> kernel, on ferrum's snapshotter.

use std::thread;
use std::time::{Duration, Instant};

use ferrum_tests::elf::{is_position_dependent, needs_interpreter};
use ferrum_tests::{ferrum_binary, CtrOutput, Env};

const GRACE: Duration = Duration::from_secs(5);

fn env() -> (Env, String) {
    Env::with_busybox()
}

fn run(env: &Env, image: &str, flags: &[&str], id: &str, args: &[&str]) -> CtrOutput {
    env.run_on_ferrum(flags, image, id, args)
}

fn assert_clean(env: &Env) {
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

fn task_status(env: &Env, id: &str) -> Option<String> {
    let out = env.ctr(&["tasks", "ls"]);
    out.stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(2).map(String::from))
}

fn wait_status(env: &Env, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while task_status(env, id).as_deref() != Some(want) {
        assert!(Instant::now() < deadline, "task {id} never became {want}: {:?}", task_status(env, id));
        thread::sleep(Duration::from_millis(50));
    }
}

/// The shim the tests run is the one that ships: scripts/build links it
/// static and position-dependent (see shim/build.rs). A plain `cargo build`
/// makes a dynamically linked one, which works but is neither shipped nor
/// measured.
#[test]
fn the_shim_under_test_is_static_and_position_dependent() {
    let shim = ferrum_binary("containerd-shim-ferrum-v2");
    let elf = std::fs::read(&shim).unwrap_or_else(|e| panic!("reading {}: {e}", shim.display()));
    let built = "build it with scripts/build";
    assert!(!needs_interpreter(&elf), "{} is dynamically linked: {built}", shim.display());
    assert!(is_position_dependent(&elf), "{} is position-independent: {built}", shim.display());
}

#[test]
fn echo_hello_prints_and_leaves_nothing() {
    let (env, image) = env();
    let out = run(&env, &image, &["--rm"], "c1", &["echo", "hello"]);
    out.assert_ok();
    assert_eq!(out.stdout, "hello\n", "{out}");
    assert_clean(&env);
    assert_eq!(env.ctr(&["containers", "ls", "-q"]).stdout, "");
}

#[test]
fn the_container_is_pid_1_in_its_own_namespaces() {
    let (env, image) = env();
    let script = "echo pid=$$; readlink /proc/1/ns/mnt; ls /bin/busybox; test -c /dev/null && echo devnull";
    let out = run(&env, &image, &["--rm"], "c1", &["sh", "-c", script]);
    out.assert_ok();
    assert!(out.stdout.starts_with("pid=1\n"), "{out}");
    let host_mnt = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    assert!(!out.stdout.contains(&*host_mnt.to_string_lossy()), "shares the host's mount namespace: {out}");
    assert!(out.stdout.contains("/bin/busybox\n") && out.stdout.contains("devnull"), "{out}");
    assert_clean(&env);
}

#[test]
fn exit_code_reaches_ctr() {
    let (env, image) = env();
    run(&env, &image, &["--rm"], "c1", &["sh", "-c", "exit 7"]).assert_exit(7);
    assert_clean(&env);
}

#[test]
fn missing_binary_fails_naming_it_and_the_next_run_works() {
    let (env, image) = env();
    let out = run(&env, &image, &["--rm"], "c1", &["/no/such/binary"]);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("/no/such/binary"), "the error must name the binary: {out}");
    assert_eq!(env.ctr(&["containers", "ls", "-q"]).stdout, "", "ctr run --rm removes the failed container");

    let next = run(&env, &image, &["--rm"], "c2", &["echo", "next"]);
    next.assert_ok();
    assert_eq!(next.stdout, "next\n", "{next}");
    assert_clean(&env);
}

#[test]
fn detached_task_lifecycle_with_ls_kill_delete_and_rm() {
    let (env, image) = env();
    // SIGTERM (ctr's default) reaches the process: pid 1 with a handler exits.
    let script = "trap 'exit 3' TERM; while :; do sleep 0.1; done";
    run(&env, &image, &["-d"], "d1", &["sh", "-c", script]).assert_ok();
    wait_status(&env, "d1", "RUNNING");

    env.ctr(&["tasks", "kill", "d1"]).assert_ok();
    wait_status(&env, "d1", "STOPPED");
    let deleted = env.ctr(&["tasks", "delete", "d1"]);
    deleted.assert_ok();
    assert!(deleted.stdout.contains("d1") || deleted.stderr.contains("3"), "{deleted}");
    assert_eq!(task_status(&env, "d1"), None);
    env.ctr(&["containers", "rm", "d1"]).assert_ok();
    assert_eq!(env.ctr(&["containers", "ls", "-q"]).stdout, "");
    assert_clean(&env);
}

#[test]
fn killing_a_detached_task_by_sigkill_and_deleting_leaves_nothing() {
    let (env, image) = env();
    run(&env, &image, &["-d"], "d1", &["sleep", "600"]).assert_ok();
    wait_status(&env, "d1", "RUNNING");
    env.remove_task("d1");
    assert_clean(&env);
}

#[test]
fn task_events_reach_containerd_in_order() {
    let (env, image) = env();
    thread::scope(|s| {
        let events = s.spawn(|| env.ctr_timeout(&["events"], Duration::from_secs(8)));
        // `ctr events` subscribes asynchronously; give it a moment.
        thread::sleep(Duration::from_millis(500));
        run(&env, &image, &["--rm"], "e1", &["true"]).assert_ok();
        let out = events.join().unwrap();
        let position = |topic: &str| {
            out.stdout
                .lines()
                .position(|l| l.contains(topic) && l.contains("e1"))
                .unwrap_or_else(|| panic!("no {topic} event for e1 in:\n{}", out.stdout))
        };
        let order = ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"].map(position);
        assert!(order.windows(2).all(|w| w[0] < w[1]), "events out of order: {order:?}\n{}", out.stdout);
    });
    assert_clean(&env);
}
