//! Bad requests and long runs against one shim: each bad request is a clear
//! error in ctr and the shim goes on serving; several waiters on one exec all
//! learn its exit; fifty containers in a row leave no fd, thread or memory behind.
//!
//! Bad config.json fields through ctr -> containerd -> ferrum: each fails only
//! its own container, with an error that names the field or its value; the
//! same containerd then runs the next container, and nothing is left behind.
//! containerd passes config.json through as JSON of its own Go types, so
//! "malformed" there is what those types accept and the runtime spec does
//! not: unknown names where the spec has a fixed set.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use containerd_shim_protos::api;
use ferrum_tests::{CtrOutput, Env, SpecFile, FERRUM_RUNTIME};
use serde_json::{json, Value};

const GRACE: Duration = Duration::from_secs(5);

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(30).as_nanos() as i64)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reused_exec_ids_and_unknown_execs_are_clear_errors() {
    let (env, image) = Env::with_busybox();
    env.run_on_ferrum(&["-d"], &image, "c1", &["sleep", "600"]).assert_ok();
    let client = env.task_client("c1");
    let wait = api::WaitRequest { id: "c1".into(), exec_id: "e1".into(), ..Default::default() };
    thread::scope(|s| {
        let long = s.spawn(|| env.ctr(&["tasks", "exec", "--exec-id", "e1", "c1", "sleep", "600"]));
        let state = api::StateRequest { id: "c1".into(), exec_id: "e1".into(), ..Default::default() };
        wait_until("exec e1 runs", || {
            client.state(ctx(), &state).is_ok_and(|st| st.status == api::Status::RUNNING.into())
        });
        let again = env.ctr(&["tasks", "exec", "--exec-id", "e1", "c1", "true"]);
        assert!(!again.success() && again.stderr.contains("e1") && again.stderr.contains("already exists"), "{again}");

        let unknown = env.ctr(&["tasks", "kill", "--exec-id", "nope", "c1"]);
        assert!(
            !unknown.success() && unknown.stderr.contains("exec nope") && unknown.stderr.contains("not found"),
            "{unknown}"
        );

        // Several waiters on the running exec: ours (two) and ctr's own.
        let waiters: Vec<_> = (0..2).map(|_| s.spawn(|| client.wait(ctx(), &wait))).collect();
        thread::sleep(Duration::from_millis(300));
        env.ctr(&["tasks", "kill", "--exec-id", "e1", "--signal", "SIGKILL", "c1"]).assert_ok();
        for w in waiters {
            let exit = w.join().unwrap().expect("Wait on exec e1");
            assert_eq!(exit.exit_status, 137);
        }
        long.join().unwrap().assert_exit(137);
    });

    // The shim still serves the container.
    let out = env.ctr(&["tasks", "exec", "--exec-id", "e2", "c1", "echo", "still serving"]);
    assert!(out.success() && out.stdout.contains("still serving"), "{out}");
    env.remove_task("c1");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

/// containerd writes config.json itself, so a broken one is sent the way
/// containerd would send it: Create on the running shim for a bundle whose
/// config.json does not parse.
#[test]
fn a_bundle_with_a_broken_config_json_fails_create_and_the_shim_serves_on() {
    let (env, image) = Env::with_busybox();
    env.run_on_ferrum(&["-d"], &image, "c1", &["sleep", "600"]).assert_ok();
    let client = env.task_client("c1");
    let bundle = PathBuf::from(format!("/tmp/ferrum-it-bundle-{}", std::process::id()));
    std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
    std::fs::write(bundle.join("config.json"), "{\"ociVersion\": \"1.0.2\", \"process\": ").unwrap();
    let create = api::CreateTaskRequest {
        id: "broken".into(),
        bundle: bundle.to_string_lossy().into_owned(),
        ..Default::default()
    };
    let err = client.create(ctx(), &create).expect_err("a broken config.json is refused");
    std::fs::remove_dir_all(&bundle).unwrap();
    let msg = err.to_string();
    assert!(msg.contains("config.json") && msg.contains(&*bundle.to_string_lossy()), "{msg}");
    let state = api::StateRequest { id: "broken".into(), ..Default::default() };
    assert!(client.state(ctx(), &state).is_err(), "the failed container was kept");

    let out = env.ctr(&["tasks", "exec", "--exec-id", "e1", "c1", "echo", "still serving"]);
    assert!(out.success() && out.stdout.contains("still serving"), "{out}");
    env.remove_task("c1");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

/// Found by the shim's ttrpc fuzz suite: a Create whose bundle was "" or
/// relative went to the shim's working directory, the bundle of the
/// container it was started for: it made a second container of that
/// config.json, in the same cgroup, whose kill then stopped the first.
#[test]
fn a_relative_bundle_is_refused_and_the_shims_container_untouched() {
    let (env, image) = Env::with_busybox();
    env.run_on_ferrum(&["-d"], &image, "c1", &["sleep", "600"]).assert_ok();
    let client = env.task_client("c1");
    for bundle in ["", ".", "rootfs/.."] {
        let create = api::CreateTaskRequest { id: "c2".into(), bundle: bundle.into(), ..Default::default() };
        let err = client.create(ctx(), &create).expect_err("a relative bundle is refused").to_string();
        assert!(err.contains("container c2: bundle") && err.contains("is not an absolute path"), "{err}");
    }
    let state = api::StateRequest { id: "c1".into(), ..Default::default() };
    assert_eq!(client.state(ctx(), &state).unwrap().status, api::Status::RUNNING.into());
    env.remove_task("c1");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

struct Usage {
    fds: usize,
    threads: usize,
    anon_kb: u64,
}

fn usage(pid: i32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let anon_kb =
        status.lines().find_map(|l| l.strip_prefix("RssAnon:")?.split_whitespace().next()?.parse().ok()).unwrap();
    Usage {
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count(),
        threads: std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().count(),
        anon_kb,
    }
}

#[test]
fn fifty_containers_in_a_row_on_one_shim_leave_nothing_growing() {
    let (env, image) = Env::with_busybox();
    let pod = ["--annotation", "io.ferrum.shim.group=pod50"];
    let mut flags = vec!["-d"];
    flags.extend(pod);
    env.run_on_ferrum(&flags, &image, "anchor", &["sleep", "600"]).assert_ok();
    let shim = env.shim_pid("anchor").expect("the pod's shim");
    let run = |n: usize| {
        let mut flags = vec!["--rm"];
        flags.extend(pod);
        let out = env.run_on_ferrum(&flags, &image, &format!("c{n}"), &["sh", "-c", "echo $$"]);
        assert!(out.success() && out.stdout.trim() == "1", "{out}");
    };
    // A few first, so that one-time allocations (pools, buffers) are made.
    // With 5 (since the shim waits for output to be read at each exit), 50
    // more grew 264 kB and 150 more 296 kB: a step, not a slope.
    for n in 0..15 {
        run(n);
    }
    thread::sleep(Duration::from_secs(2));
    let before = usage(shim);
    for n in 15..65 {
        run(n);
    }
    thread::sleep(Duration::from_secs(2));
    let after = usage(shim);
    assert_eq!(env.shim_pid("anchor"), Some(shim), "the pod's shim changed");
    assert_eq!(after.fds, before.fds, "fds grew");
    assert!(after.threads <= before.threads, "threads grew: {} -> {}", before.threads, after.threads);
    assert!(
        after.anon_kb <= before.anon_kb + 256,
        "anonymous memory grew from {} to {} kB",
        before.anon_kb,
        after.anon_kb
    );
    env.remove_task("anchor");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

/// Asserts `out` is a failure whose message has every one of `words`, then
/// that a good container runs on the same containerd and nothing is left.
#[track_caller]
fn fails_alone(env: &Env, image: &str, id: &str, out: &CtrOutput, words: &[&str]) {
    assert!(!out.success(), "accepted\n{out}");
    for word in words {
        assert!(
            out.stderr.contains(word),
            "the error does not name {word:?}\n{out}"
        );
    }
    // ctr leaves the container record of a task that failed to start.
    let _ = env.ctr(&["containers", "rm", id]);
    let next = env.run_on_ferrum(&["--rm"], image, "next", &["echo", "next-ok"]);
    next.assert_ok();
    assert_eq!(next.stdout, "next-ok\n", "{next}");
    assert_eq!(
        env.leftovers_after(GRACE),
        Vec::<String>::new(),
        "left behind after {id}"
    );
}

/// `ctr run --config` of containerd's default spec edited by `edit`.
fn run_spec(env: &Env, id: &str, edit: impl FnOnce(&mut Value)) -> CtrOutput {
    let mut file = SpecFile::new(env, id, &["true"]).unwrap();
    edit(&mut file.spec);
    file.run(env, FERRUM_RUNTIME, &["--rm"]).unwrap()
}

#[test]
fn an_unknown_namespace_type() {
    let (env, image) = Env::with_busybox();
    let out = run_spec(&env, "ns", |spec| {
        spec["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "type": "bogusns" }));
    });
    fails_alone(
        &env,
        &image,
        "ns",
        &out,
        &["linux.namespaces[", "].type", "bogusns"],
    );
}

#[test]
fn a_capability_that_does_not_exist() {
    let (env, image) = Env::with_busybox();
    let out = env.run_on_ferrum(
        &["--rm", "--cap-add", "CAP_BOGUS_POWER"],
        &image,
        "cap",
        &["true"],
    );
    fails_alone(
        &env,
        &image,
        "cap",
        &out,
        &["process.capabilities.", "CAP_BOGUS_POWER"],
    );
}

fn seccomp_profile(env: &Env, rule: Value) -> String {
    let profile = json!({ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule] });
    let path = env.root_dir().join("profile.json");
    std::fs::write(&path, profile.to_string()).unwrap();
    path.display().to_string()
}

#[test]
fn an_unknown_seccomp_action() {
    let (env, image) = Env::with_busybox();
    let profile = seccomp_profile(
        &env,
        json!({ "names": ["mkdir"], "action": "SCMP_ACT_BOGUS" }),
    );
    let out = env.run_on_ferrum(
        &["--rm", "--seccomp", "--seccomp-profile", &profile],
        &image,
        "act",
        &["true"],
    );
    fails_alone(
        &env,
        &image,
        "act",
        &out,
        &["linux.seccomp.syscalls[0].action", "SCMP_ACT_BOGUS"],
    );
}

#[test]
fn an_unknown_seccomp_argument_operator() {
    let (env, image) = Env::with_busybox();
    let rule = json!({ "names": ["personality"], "action": "SCMP_ACT_ERRNO",
                       "args": [{ "index": 0, "value": 8, "op": "SCMP_CMP_BOGUS" }] });
    let profile = seccomp_profile(&env, rule);
    let out = env.run_on_ferrum(
        &["--rm", "--seccomp", "--seccomp-profile", &profile],
        &image,
        "op",
        &["true"],
    );
    fails_alone(
        &env,
        &image,
        "op",
        &out,
        &["linux.seccomp.syscalls[0].args[0].op", "SCMP_CMP_BOGUS"],
    );
}

#[test]
fn a_mount_option_the_filesystem_refuses() {
    let (env, image) = Env::with_busybox();
    let mount = "type=tmpfs,src=tmpfs,dst=/scratch,options=bogusopt=1";
    let out = env.run_on_ferrum(&["--rm", "--mount", mount], &image, "mnt", &["true"]);
    fails_alone(&env, &image, "mnt", &out, &["/scratch"]);
}

/// A rootfs layer the kernel cannot mount (its upper dir gone from under the
/// snapshot) fails the container with the layer named, from the container's
/// own mount namespace where ferrum mounts it (runtime-core's
/// container/layers.rs).
#[test]
fn a_rootfs_layer_that_cannot_be_mounted_is_named() {
    let (env, image) = Env::with_busybox();
    let id = "layerless";
    env.ctr(&["containers", "create", "--snapshotter", "overlayfs", "--runtime", FERRUM_RUNTIME, &image, id, "true"])
        .assert_ok();
    let mounts = env.ctr(&["snapshots", "--snapshotter", "overlayfs", "mounts", "/target", id]);
    mounts.assert_ok();
    let upper = mounts
        .stdout
        .split([' ', ','])
        .find_map(|o| o.strip_prefix("upperdir="))
        .unwrap_or_else(|| panic!("no upperdir in {mounts}"))
        .to_string();
    std::fs::remove_dir(&upper).unwrap();
    let out = env.ctr(&["tasks", "start", id]);
    fails_alone(&env, &image, id, &out, &["mount rootfs layer 0", &upper]);
}

#[test]
fn a_cwd_that_is_a_file() {
    let (env, image) = Env::with_busybox();
    let out = env.run_on_ferrum(&["--rm", "--cwd", "/etc/passwd"], &image, "cwd", &["true"]);
    fails_alone(&env, &image, "cwd", &out, &["cwd", "/etc/passwd"]);
}

/// The host's current value of a sysctl: asking for it changes nothing even
/// if a runtime wrongly applied it to the host.
fn host_sysctl(key: &str) -> String {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_string()
}

/// vm.* belongs to no namespace: no container may set it.
#[test]
fn a_sysctl_of_no_namespace() {
    let (env, image) = Env::with_busybox();
    let value = host_sysctl("vm.swappiness");
    let out = run_spec(&env, "vm", |spec| {
        spec["linux"]["sysctl"] = json!({ "vm.swappiness": value })
    });
    fails_alone(&env, &image, "vm", &out, &["vm.swappiness"]);
}

/// net.* is the network namespace's: not the container's to set when it
/// shares the host's.
#[test]
fn a_network_sysctl_in_the_hosts_network_namespace() {
    let (env, image) = Env::with_busybox();
    let value = host_sysctl("net.ipv4.ip_forward");
    let out = run_spec(&env, "net", |spec| {
        spec["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "network");
        spec["linux"]["sysctl"] = json!({ "net.ipv4.ip_forward": value });
    });
    fails_alone(&env, &image, "net", &out, &["net.ipv4.ip_forward"]);
}

/// kernel.domainname is the UTS namespace's: a container with its own may set it.
#[test]
fn a_sysctl_of_the_containers_own_namespace_is_applied() {
    let (env, image) = Env::with_busybox();
    let mut file = SpecFile::new(&env, "uts", &["cat", "/proc/sys/kernel/domainname"]).unwrap();
    file.spec["linux"]["sysctl"] = json!({ "kernel.domainname": "ferrum.test" });
    let out = file.run(&env, FERRUM_RUNTIME, &["--rm"]).unwrap();
    out.assert_ok();
    assert_eq!(out.stdout, "ferrum.test\n", "{out}");
    assert_ne!(
        host_sysctl("kernel.domainname"),
        "ferrum.test",
        "the host's own was changed"
    );
    let next = env.run_on_ferrum(&["--rm"], &image, "next", &["true"]);
    next.assert_ok();
    assert_eq!(
        env.leftovers_after(GRACE),
        Vec::<String>::new(),
        "left behind"
    );
}

/// Found by the live config.json fuzz suite: a memory limit too low for the
/// init to set the container up got it OOM-killed, and all Create said was
/// "container init exited during setup". The limit follows init into its
/// cgroup: v1 refuses one below what init uses already (as with runc, which
/// sets limits after init's setup), v2 reclaims and then OOM-kills.
#[test]
fn a_memory_limit_too_low_for_setup_is_named() {
    let (env, image) = Env::with_busybox();
    let out = run_spec(&env, "oom", |spec| {
        spec["linux"]["resources"]["memory"] = json!({ "limit": 65536 });
    });
    let words: &[&str] = if std::path::Path::new("/sys/fs/cgroup/cgroup.procs").exists() {
        &["killed by the OOM killer during setup", "memory.limit 65536"]
    } else {
        &["memory.limit_in_bytes to \"65536\"", "bytes its processes use"]
    };
    fails_alone(&env, &image, "oom", &out, words);
}
