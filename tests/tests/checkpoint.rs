//! Checkpoint and restore with CRIU through ctr -> containerd -> shim ->
//! runtime-core -> CRIU, on ferrum and on runc-v2 + runc (the reference) with
//! the same CRIU (sid's, scripts/install-criu: FERRUM_CRIU_DIR). The probe
//! is `ferrum_tests::counter`.

use std::path::Path;
use std::time::{Duration, Instant};

use containerd_shim_protos::shim::oci::CheckpointOptions;
use ferrum_tests::containerd::{Options, Schema, FERRUM_CLI, FERRUM_RUNTIME, RUNC_RUNTIME};
use ferrum_tests::counter::{self, COUNTER};
use ferrum_tests::Env;

const GRACE: Duration = Duration::from_secs(5);

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
    counter::read(Path::new(&format!("/proc/{}/root/count", env.task_pid(id)?)))
}

fn wait_for_count(env: &Env, id: &str, at_least: u64) -> u64 {
    counter::wait_for(id, || count(env, id), at_least)
}

/// The issue's walk, on one runtime: a counter is checkpointed with its rw
/// layer, removed, restored live under a new name: it carries on from the
/// checkpointed value as the container's pid 1, and exec, pause, resume,
/// metrics, kill and delete work on it.
fn checkpoint_and_live_restore(runtime: &str) {
    let (env, image) = env();
    run_counter(&env, runtime, &image, "c1", &[]);
    let before = count(&env, "c1").expect("the counter");
    env.ctr(&["containers", "checkpoint", "--task", "--rw", "c1", "ckpt:1"]).assert_ok();
    let after = count(&env, "c1").expect("the counter after its checkpoint");
    assert_eq!(env.task_status("c1"), "RUNNING", "{runtime}: left running");
    env.remove_task("c1");

    let (restored, events) = env.events_of("c2", || env.ctr(&["containers", "restore", "--rw", "--live", "c2", "ckpt:1"]));
    restored.assert_ok();
    // TaskStart names the restored init's pid.
    let pid = env.task_pid("c2").expect("the restored task");
    let start = events.iter().find(|l| l.contains("/tasks/start")).unwrap_or_else(|| panic!("{runtime}: no start: {events:?}"));
    assert!(start.contains(&format!("\"pid\":{pid}")), "{runtime}: {start} (pid {pid})");
    let first = wait_for_count(&env, "c2", before);
    assert!(first <= after + 30, "{runtime}: restored at {first}, checkpointed between {before} and {after}: not its memory");
    let pid1 = env.ctr(&["tasks", "exec", "--exec-id", "e1", "c2", "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"]);
    pid1.assert_ok();
    assert!(pid1.stdout.starts_with("sh -c sleep 100000 |"), "{runtime}: pid 1 is {:?}", pid1.stdout);
    env.ctr(&["tasks", "pause", "c2"]).assert_ok();
    let frozen = count(&env, "c2");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(count(&env, "c2"), frozen, "{runtime}: the restored container counted while paused");
    env.ctr(&["tasks", "resume", "c2"]).assert_ok();
    wait_for_count(&env, "c2", frozen.unwrap_or(0) + 2);
    let metrics = env.ctr(&["tasks", "metrics", "c2"]);
    metrics.assert_ok();
    assert!(metrics.stdout.contains("memory"), "{runtime}: {metrics}");
    env.remove_task("c2");
    env.ctr(&["images", "rm", "ckpt:1"]).assert_ok();
    if runtime == FERRUM_CLI {
        let calls = env.cli_calls();
        for command in ["checkpoint", "restore"] {
            assert!(calls.lines().any(|l| l.contains(command)), "no `ferrum {command}` in\n{calls}");
        }
    }
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

/// containerd's runc shim driving the `ferrum` CLI's checkpoint and restore.
#[test]
fn checkpoint_and_live_restore_on_the_cli() {
    checkpoint_and_live_restore(FERRUM_CLI);
}

/// `ctr tasks checkpoint` of a paused container: it stays paused, and counts
/// on once resumed.
fn paused_stays_paused(runtime: &str) {
    let (env, image) = env();
    run_counter(&env, runtime, &image, "c1", &[]);
    env.ctr(&["tasks", "pause", "c1"]).assert_ok();
    let frozen = count(&env, "c1");
    env.ctr(&["tasks", "checkpoint", "c1"]).assert_ok();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(env.task_status("c1"), "PAUSED", "{runtime}");
    assert_eq!(count(&env, "c1"), frozen, "{runtime}: counted while paused");
    env.ctr(&["tasks", "resume", "c1"]).assert_ok();
    wait_for_count(&env, "c1", frozen.unwrap_or(0) + 2);
    env.remove_task("c1");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "{runtime}: left behind");
}

#[test]
fn a_paused_container_stays_paused_on_runc() {
    paused_stays_paused(RUNC_RUNTIME);
}

#[test]
fn a_paused_container_stays_paused_on_ferrum() {
    paused_stays_paused(FERRUM_RUNTIME);
}

#[test]
fn a_paused_container_stays_paused_on_the_cli() {
    paused_stays_paused(FERRUM_CLI);
}

/// CRIU's images in a directory of the caller's (image_path), and the task
/// ended by the checkpoint (exit). ctr sends these options only to runc's
/// runtime type, so for ferrum they go straight to its shim, as containerd
/// would send them.
#[test]
fn checkpoint_with_exit_into_an_image_path() {
    let (env, image) = env();
    for runtime in [RUNC_RUNTIME, FERRUM_CLI, FERRUM_RUNTIME] {
        let images = env.root_dir().join(format!("images-{}", runtime.replace('.', "-")));
        run_counter(&env, runtime, &image, "c1", &[]);
        if runtime != FERRUM_RUNTIME {
            let path = images.to_string_lossy();
            env.ctr(&["tasks", "checkpoint", "--exit", "--image-path", &path, "c1"]).assert_ok();
        } else {
            checkpoint_through_the_shim(&env, "c1", &images, true);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while env.task_status("c1") != "STOPPED" {
            assert!(Instant::now() < deadline, "{runtime}: the task did not stop after its checkpoint with exit");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(images.join("inventory.img").exists(), "{runtime}: no CRIU images in {}", images.display());
        env.remove_killed_task("c1");
    }
    let calls = env.cli_calls();
    assert!(calls.lines().any(|l| l.contains("checkpoint") && l.contains("--image-path")), "{calls}");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

fn checkpoint_through_the_shim(env: &Env, id: &str, images: &Path, exit: bool) {
    let options = CheckpointOptions { exit, ..Default::default() };
    checkpoint_with(env, id, images, options).expect("Checkpoint through the shim");
}

/// Task.Checkpoint straight to the shim serving `id`, with containerd's
/// runc options (as containerd sends them to runc's runtime type), in the
/// Task API version this containerd's shims serve (runc-v2 of 1.6 has no v3).
fn checkpoint_with(env: &Env, id: &str, images: &Path, mut options: CheckpointOptions) -> Result<(), String> {
    use containerd_shim_protos::protobuf::{Message, MessageField};
    options.image_path = images.to_string_lossy().into_owned();
    let request = containerd_shim_protos::api::CheckpointTaskRequest {
        id: id.into(),
        options: MessageField::some(containerd_shim_protos::protobuf::well_known_types::any::Any {
            // containerd's own spelling: runc-v2 looks the type up by this name.
            type_url: "containerd.runc.v1.CheckpointOptions".into(),
            value: options.write_to_bytes().unwrap(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let version = match ferrum_tests::containerd::containerd_config_schema().unwrap() {
        Schema::V2 => "v2",
        Schema::V3 => "v3",
    };
    let bundle = env.root_dir().join("state/io.containerd.runtime.v2.task").join(env.namespace()).join(id);
    // 1.x's shims leave `address` in the bundle, 2.x's bootstrap.json.
    let address = std::fs::read_to_string(bundle.join("address")).unwrap_or_else(|_| {
        let bootstrap = std::fs::read(bundle.join("bootstrap.json")).expect("the task's shim address");
        let bootstrap: serde_json::Value = serde_json::from_slice(&bootstrap).unwrap();
        bootstrap["address"].as_str().expect("an address in bootstrap.json").to_string()
    });
    let client = ttrpc::Client::connect(address.trim()).expect("connect to the shim");
    let mut call = ttrpc::Request::new();
    call.set_service(format!("containerd.task.{version}.Task"));
    call.set_method("Checkpoint".into());
    call.set_timeout_nano(Duration::from_secs(60).as_nanos() as i64);
    call.payload = request.write_to_bytes().unwrap();
    let answer = client.request(call).map_err(|e| e.to_string())?;
    match answer.status.as_ref() {
        Some(status) if status.code() != ttrpc::Code::OK => Err(status.message.clone()),
        _ => Ok(()),
    }
}

/// An established TCP connection is dumped only with open_tcp, and an empty
/// network namespace with empty_namespaces; a checkpoint refused for its
/// connection leaves the container running as it was. CRIU's log goes to
/// work_path. Through each shim, as ctr cannot send these options.
fn options_are_applied(runtime: &str) {
    let (env, image) = env();
    let script = format!("sleep 100000 | nc -l -p 7000 >/dev/null & sleep 0.5; sleep 100000 | nc 127.0.0.1 7000 & {COUNTER}");
    let out = match runtime {
        FERRUM_RUNTIME => env.run_on_ferrum(&["-d"], &image, "c1", &["sh", "-c", &script]),
        _ => env.run_on(runtime, &["-d"], &image, "c1", &["sh", "-c", &script]),
    };
    out.assert_ok();
    let before = wait_for_count(&env, "c1", 10);
    let conns = env.ctr(&["tasks", "exec", "--exec-id", "n", "c1", "netstat", "-tn"]);
    assert!(conns.stdout.contains("ESTABLISHED"), "{runtime}: no connection: {conns}");
    let dir = env.root_dir().join("ckpt-options");
    // runc makes the work path with mkdir, not mkdir -p.
    std::fs::create_dir(&dir).unwrap();
    let refused = checkpoint_with(&env, "c1", &dir.join("no-tcp"), CheckpointOptions::default());
    let e = refused.expect_err("a TCP connection dumped without open_tcp");
    if runtime != RUNC_RUNTIME {
        assert!(e.contains("tcp-established"), "CRIU's reason: {e}");
    }
    assert_eq!(env.task_status("c1"), "RUNNING", "{runtime}");
    wait_for_count(&env, "c1", before + 3);
    let work = dir.join("work");
    let options = CheckpointOptions { open_tcp: true, work_path: work.to_string_lossy().into_owned(), ..Default::default() };
    checkpoint_with(&env, "c1", &dir.join("tcp"), options).unwrap_or_else(|e| panic!("{runtime}: {e}"));
    assert!(work.join("dump.log").exists(), "{runtime}: no dump.log in the work path");
    let options = CheckpointOptions { open_tcp: true, empty_namespaces: vec!["network".into()], ..Default::default() };
    checkpoint_with(&env, "c1", &dir.join("empty-net"), options).unwrap_or_else(|e| panic!("{runtime}: {e}"));
    assert_eq!(env.task_status("c1"), "RUNNING", "{runtime}");
    env.remove_task("c1");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "{runtime}: left behind");
}

#[test]
fn options_are_applied_on_runc() {
    options_are_applied(RUNC_RUNTIME);
}

#[test]
fn options_are_applied_on_ferrum() {
    options_are_applied(FERRUM_RUNTIME);
}

#[test]
fn options_are_applied_on_the_cli() {
    options_are_applied(FERRUM_CLI);
}

/// What ferrum cannot checkpoint is refused by name and the container runs
/// on; a restore CRIU fails says CRIU's reason and leaves nothing behind.
#[test]
fn failures_leave_the_container_as_it_was() {
    let (env, image) = env();
    // A container in another's pid namespace: CRIU dumps whole ones only.
    env.run_on_ferrum(&["-d"], &image, "p0", &["sleep", "600"]).assert_ok();
    let pidns = format!("pid:/proc/{}/ns/pid", env.task_pid("p0").unwrap());
    run_counter(&env, FERRUM_RUNTIME, &image, "p1", &["--with-ns", &pidns]);
    let refused = env.ctr(&["containers", "checkpoint", "--task", "p1", "ckpt:p1"]);
    assert!(!refused.success() && refused.stderr.contains("shares a pid namespace"), "{refused}");
    assert_eq!(env.task_status("p1"), "RUNNING");
    env.remove_task("p1");
    env.remove_task("p0");

    // No CRIU where the options say.
    let config = env.root_dir().join("no-criu.toml");
    std::fs::write(&config, "CriuPath = \"/nonexistent/criu\"\n").unwrap();
    run_counter(&env, FERRUM_RUNTIME, &image, "n1", &["--runtime-config-path", &config.to_string_lossy()]);
    let refused = env.ctr(&["containers", "checkpoint", "--task", "n1", "ckpt:n1"]);
    assert!(!refused.success() && refused.stderr.contains("/nonexistent/criu"), "{refused}");
    let before = count(&env, "n1").unwrap();
    wait_for_count(&env, "n1", before + 2);
    env.remove_task("n1");
    // A CRIU too old for what ferrum asks of it.
    let old_criu = env.root_dir().join("old-criu");
    std::fs::write(&old_criu, "#!/bin/sh\necho 'Version: 3.11'\n").unwrap();
    std::fs::set_permissions(&old_criu, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = env.root_dir().join("old-criu.toml");
    std::fs::write(&config, format!("CriuPath = {:?}\n", old_criu.display().to_string())).unwrap();
    run_counter(&env, FERRUM_RUNTIME, &image, "o1", &["--runtime-config-path", &config.to_string_lossy()]);
    let refused = env.ctr(&["containers", "checkpoint", "--task", "o1", "ckpt:o1"]);
    assert!(!refused.success() && refused.stderr.contains("is CRIU 3.11") && refused.stderr.contains("or newer"), "{refused}");
    assert_eq!(env.task_status("o1"), "RUNNING");
    env.remove_task("o1");
    let _ = env.ctr(&["images", "rm", "ckpt:p1", "ckpt:n1", "ckpt:o1"]);

    // A restore whose bind mount source is gone: CRIU cannot mount it.
    let data = env.root_dir().join("data");
    std::fs::create_dir(&data).unwrap();
    let mount = format!("type=bind,src={},dst=/data,options=rbind:rw", data.display());
    run_counter(&env, FERRUM_RUNTIME, &image, "b1", &["--mount", &mount]);
    env.ctr(&["containers", "checkpoint", "--task", "b1", "ckpt:b1"]).assert_ok();
    env.remove_task("b1");
    std::fs::remove_dir(&data).unwrap();
    let failed = env.ctr(&["containers", "restore", "--live", "b2", "ckpt:b1"]);
    assert!(!failed.success() && failed.stderr.contains("criu restore failed"), "{failed}");
    // Nothing of the restore is left but what containerd deletes.
    let state = Path::new("/run/ferrum/containers").join(env.namespace());
    assert!(!state.join("b2").exists() && !state.join(".criu-root-b2").exists(), "restore state left in {}", state.display());
    let cgroup = Path::new("/sys/fs/cgroup/memory").join(env.namespace()).join("b1");
    assert!(!cgroup.exists(), "{} left", cgroup.display());
    let _ = env.ctr(&["tasks", "delete", "b2"]);
    env.ctr(&["containers", "rm", "b2"]).assert_ok();
    env.ctr(&["images", "rm", "ckpt:b1"]).assert_ok();
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

/// A container in a pod's network, IPC and UTS namespaces (a sandbox's, by
/// path) is restored into the same ones.
fn pod_namespaces(runtime: &str) {
    let (env, image) = env();
    match runtime {
        FERRUM_RUNTIME => env.run_on_ferrum(&["-d"], &image, "sandbox", &["sleep", "600"]),
        _ => env.run_on(runtime, &["-d"], &image, "sandbox", &["sleep", "600"]),
    }
    .assert_ok();
    let sandbox = env.task_pid("sandbox").unwrap();
    let ns = |kind: &str| format!("{kind}:/proc/{sandbox}/ns/{}", if kind == "network" { "net" } else { kind });
    let (net, ipc, uts) = (ns("network"), ns("ipc"), ns("uts"));
    run_counter(&env, runtime, &image, "c1", &["--with-ns", &net, "--with-ns", &ipc, "--with-ns", &uts]);
    env.ctr(&["containers", "checkpoint", "--task", "c1", "ckpt:1"]).assert_ok();
    env.remove_task("c1");
    env.ctr(&["containers", "restore", "--live", "c2", "ckpt:1"]).assert_ok();
    wait_for_count(&env, "c2", 1);
    let restored = env.task_pid("c2").unwrap();
    for kind in ["net", "ipc", "uts"] {
        let link = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
        assert_eq!(link(restored), link(sandbox), "{runtime}: {kind} namespace of the restored container");
    }
    env.remove_task("c2");
    env.remove_task("sandbox");
    env.ctr(&["images", "rm", "ckpt:1"]).assert_ok();
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "{runtime}: left behind");
}

#[test]
fn pod_namespaces_are_joined_again_on_runc() {
    pod_namespaces(RUNC_RUNTIME);
}

#[test]
fn pod_namespaces_are_joined_again_on_ferrum() {
    pod_namespaces(FERRUM_RUNTIME);
}

#[test]
fn pod_namespaces_are_joined_again_on_the_cli() {
    pod_namespaces(FERRUM_CLI);
}

/// A container with a terminal: CRIU makes its pty anew at restore and hands
/// the master back (orphan-pts-master); the restored process reads and writes
/// a terminal of its container's devpts, and counts on. ctr restores a
/// terminal task attached to its own terminal (2.x's ctr stays attached until
/// the task ends). runc-v2 + runc 1.1.5 cannot restore a terminal through
/// containerd 1.6 ("cannot allocate tty if runc will detach without setting
/// console socket"): there the reference's failure is asserted instead.
fn terminal(runtime: &str) {
    let (env, image) = env();
    let flags = if runtime == FERRUM_RUNTIME { vec!["--snapshotter", "ferrum"] } else { vec![] };
    let run = [&["run", "--runtime", runtime], &flags[..], &["-d", "-t", &image, "c1", "sh", "-c", COUNTER]].concat();
    env.ctr_in_terminal(&run).assert_ok();
    let before = wait_for_count(&env, "c1", 5);
    env.ctr(&["containers", "checkpoint", "--task", "c1", "ckpt:1"]).assert_ok();
    let after = count(&env, "c1").unwrap();
    env.remove_task("c1");
    std::thread::scope(|s| {
        let restore = s.spawn(|| env.ctr_in_terminal(&["containers", "restore", "--live", "c2", "ckpt:1"]));
        let deadline = Instant::now() + Duration::from_secs(20);
        while count(&env, "c2").is_none() && !restore.is_finished() {
            assert!(Instant::now() < deadline, "{runtime}: the restored terminal task never counted");
            std::thread::sleep(Duration::from_millis(50));
        }
        if count(&env, "c2").is_none() {
            let out = restore.join().unwrap();
            let one_six = ferrum_tests::containerd::containerd_config_schema().unwrap() == Schema::V2;
            // The runc shim of 1.6 gives its binary no console socket at restore.
            assert!(runtime != FERRUM_RUNTIME && one_six && out.stdout.contains("console socket"), "{runtime}: {out}");
            let _ = env.ctr(&["tasks", "delete", "c2"]);
            env.ctr(&["containers", "rm", "c2"]).assert_ok();
            return;
        }
        let first = wait_for_count(&env, "c2", before);
        assert!(first <= after + 30, "{runtime}: restored at {first}, checkpointed between {before} and {after}");
        let script = "readlink /proc/1/fd/0; readlink /proc/1/fd/1; ls /dev/pts";
        let tty = env.ctr(&["tasks", "exec", "--exec-id", "e1", "c2", "sh", "-c", script]);
        tty.assert_ok();
        let lines: Vec<&str> = tty.stdout.lines().collect();
        assert_eq!(lines[..2], ["/dev/pts/0", "/dev/pts/0"], "{runtime}: {tty}");
        assert!(lines.contains(&"0"), "{runtime}: the pty is in the container's devpts: {tty}");
        // 2.x's ctr, attached, deletes the task once it has ended; 1.6's left.
        env.ctr(&["tasks", "kill", "--signal", "SIGKILL", "c2"]).assert_ok();
        restore.join().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !env.task_status("c2").is_empty() {
            let _ = env.ctr(&["tasks", "delete", "c2"]);
            assert!(Instant::now() < deadline, "{runtime}: task c2 could not be deleted");
        }
        env.ctr(&["containers", "rm", "c2"]).assert_ok();
    });
    env.ctr(&["images", "rm", "ckpt:1"]).assert_ok();
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "{runtime}: left behind");
}

#[test]
fn a_terminal_is_restored_on_runc() {
    terminal(RUNC_RUNTIME);
}

#[test]
fn a_terminal_is_restored_on_ferrum() {
    terminal(FERRUM_RUNTIME);
}

#[test]
fn a_terminal_is_restored_on_the_cli() {
    terminal(FERRUM_CLI);
}

/// The OOM monitor watches a restored container's cgroup: an exec killed by
/// its memory limit is a TaskOOM, as on a fresh container.
fn oom_after_restore(runtime: &str) {
    let (env, image) = env();
    run_counter(&env, runtime, &image, "c1", &["--memory-limit", "67108864"]);
    env.ctr(&["containers", "checkpoint", "--task", "c1", "ckpt:1"]).assert_ok();
    env.remove_task("c1");
    env.ctr(&["containers", "restore", "--live", "c2", "ckpt:1"]).assert_ok();
    wait_for_count(&env, "c2", 1);
    let (out, events) = env.events_of("c2", || {
        let grow = r#"BEGIN { s = "x"; while (1) s = s s }"#;
        env.ctr(&["tasks", "exec", "--exec-id", "hog", "c2", "awk", grow])
    });
    assert_eq!(out.status, Some(137), "{runtime}: the hog was not OOM-killed: {out}");
    assert!(events.iter().any(|l| l.contains("/tasks/oom")), "{runtime}: no TaskOOM in {events:?}");
    env.remove_task("c2");
    env.ctr(&["images", "rm", "ckpt:1"]).assert_ok();
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "{runtime}: left behind");
}

#[test]
fn oom_after_restore_on_runc() {
    oom_after_restore(RUNC_RUNTIME);
}

#[test]
fn oom_after_restore_on_ferrum() {
    oom_after_restore(FERRUM_RUNTIME);
}
