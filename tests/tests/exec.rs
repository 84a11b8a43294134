//! Exec into a running container through ctr -> containerd -> ferrum's shim ->
//! runtime-core: a new process in all of the container's namespaces and cgroup.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageField;
use ferrum_tests::Env;

const GRACE: Duration = Duration::from_secs(5);

/// A running container `c1` (sleep) on ferrum.
fn running() -> Env {
    let (env, image) = Env::with_busybox();
    env.run_on_ferrum(&["-d"], &image, "c1", &["sleep", "600"]).assert_ok();
    env
}

fn stop_and_remove(env: &Env) {
    env.remove_task("c1");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

#[test]
fn exec_joins_the_containers_namespaces_and_cgroup() {
    let env = running();
    let script = "echo pid=$$; cat /proc/1/comm; grep memory /proc/self/cgroup";
    let out = env.ctr(&["tasks", "exec", "--exec-id", "e1", "c1", "sh", "-c", script]);
    out.assert_ok();
    // Not pid 1: it shares the container's pid namespace, where sleep is init.
    assert!(out.stdout.starts_with("pid=2\n"), "{out}");
    assert!(out.stdout.contains("\nsleep\n"), "sees the container's init: {out}");
    let ns = env.namespace();
    assert!(out.stdout.contains(&format!("/{ns}/c1")), "in the container's cgroup: {out}");
    stop_and_remove(&env);
}

#[test]
fn exec_exit_codes_users_and_errors_reach_ctr() {
    let env = running();
    env.ctr(&["tasks", "exec", "--exec-id", "e1", "c1", "sh", "-c", "exit 5"]).assert_exit(5);

    let out = env.ctr(&["tasks", "exec", "--exec-id", "e2", "--user", "65534", "c1", "id", "-u"]);
    out.assert_ok();
    assert_eq!(out.stdout, "65534\n", "{out}");

    let missing = env.ctr(&["tasks", "exec", "--exec-id", "e3", "c1", "/no/such/tool"]);
    assert!(!missing.success() && missing.stderr.contains("/no/such/tool"), "{missing}");

    // The container and the shim go on serving after a failed exec.
    let again = env.ctr(&["tasks", "exec", "--exec-id", "e4", "c1", "echo", "still"]);
    again.assert_ok();
    assert_eq!(again.stdout, "still\n", "{again}");
    stop_and_remove(&env);
}

#[test]
fn one_exec_can_be_listed_and_killed_alone() {
    let env = running();
    thread::scope(|s| {
        let exec = s.spawn(|| env.ctr(&["tasks", "exec", "--exec-id", "long", "c1", "sleep", "600"]));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ps = env.ctr(&["tasks", "ps", "c1"]);
            if ps.stdout.contains("long") {
                break;
            }
            assert!(Instant::now() < deadline, "exec never showed up in ps: {ps}");
            thread::sleep(Duration::from_millis(50));
        }
        env.ctr(&["tasks", "kill", "--exec-id", "long", "--signal", "SIGKILL", "c1"]).assert_ok();
        exec.join().unwrap().assert_exit(137);
    });
    // The container's init is untouched.
    let out = env.ctr(&["tasks", "ls"]);
    assert!(out.stdout.lines().any(|l| l.starts_with("c1") && l.contains("RUNNING")), "{out}");
    stop_and_remove(&env);
}

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(30).as_nanos() as i64)
}

/// Exec `args` in c1 straight through its shim, stdout to `stdout`; returns its pid.
fn exec_to(env: &Env, client: &containerd_shim_protos::TaskClient, exec_id: &str, args: &[&str], stdout: &Path) -> i32 {
    // c1's own process, as ctr would send it, with our command.
    let bundle = env.root_dir().join("state/io.containerd.runtime.v2.task").join(env.namespace()).join("c1");
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let mut process = config["process"].clone();
    process["args"] = serde_json::json!(args);
    process["terminal"] = serde_json::json!(false);
    let exec = api::ExecProcessRequest {
        id: "c1".into(),
        exec_id: exec_id.into(),
        stdout: stdout.to_string_lossy().into_owned(),
        spec: MessageField::some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
            value: serde_json::to_vec(&process).unwrap(),
            ..Default::default()
        }),
        ..Default::default()
    };
    client.exec(ctx(), &exec).expect("Exec");
    let start = api::StartRequest { id: "c1".into(), exec_id: exec_id.into(), ..Default::default() };
    client.start(ctx(), &start).expect("Start").pid as i32
}

/// Until the shim has reaped `pid`.
fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "process {pid} never exited");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A client's reader on a new FIFO, opened without blocking and not read yet.
fn fifo_reader(path: &Path) -> File {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).unwrap()
}

/// A process that prints and exits at once has its exit reported only once
/// what it printed has been read. ctr run --rm learns of the exit and then,
/// in Task.Delete, cancels its FIFOs: one whose open(2) had returned but was
/// not yet noted by containerd's fifo package is closed unread. Under load
/// that lost all of a short container's output (CI: `ctr run` exited 0 with
/// an empty stdout). Here the client holds its reader without reading: the
/// exit (Wait) must wait for the read. A client that closes its reader
/// unread does not hold the exit up.
#[test]
fn an_exit_is_reported_once_the_output_is_read() {
    let env = running();
    let client = env.task_client("c1");
    let dir = env.root_dir().join("exec-fifos");
    std::fs::create_dir(&dir).unwrap();
    let wait = |exec_id: &str| {
        let request = api::WaitRequest { id: "c1".into(), exec_id: exec_id.into(), ..Default::default() };
        let exit = client.wait(ctx(), &request).expect("Wait");
        (exit.exit_status, Instant::now())
    };
    thread::scope(|s| {
        let mut reader = fifo_reader(&dir.join("late"));
        let pid = exec_to(&env, &client, "late", &["echo", "printed before the exit"], &dir.join("late"));
        let waiter = s.spawn(|| wait("late"));
        wait_gone(pid);
        thread::sleep(Duration::from_millis(500));
        assert!(!waiter.is_finished(), "the exit was reported while the output was still unread");
        let mut out = Vec::new();
        let _ = reader.read_to_end(&mut out); // WouldBlock once it is all read
        assert_eq!(String::from_utf8_lossy(&out), "printed before the exit\n");
        let (status, _) = waiter.join().unwrap();
        assert_eq!(status, 0);

        let reader = fifo_reader(&dir.join("gone"));
        let pid = exec_to(&env, &client, "gone", &["echo", "nobody reads this"], &dir.join("gone"));
        let waiter = s.spawn(|| wait("gone"));
        wait_gone(pid);
        drop(reader);
        let closed = Instant::now();
        let (status, at) = waiter.join().unwrap();
        assert_eq!(status, 0);
        let held = at.saturating_duration_since(closed);
        assert!(held < Duration::from_secs(1), "the exit waited {held:?} for a reader that had gone");
    });
    for exec_id in ["late", "gone"] {
        let delete = api::DeleteRequest { id: "c1".into(), exec_id: exec_id.into(), ..Default::default() };
        client.delete(ctx(), &delete).expect("Delete exec");
    }
    stop_and_remove(&env);
}
