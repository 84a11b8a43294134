//! A pod's life through containerd's CRI plugin, as kubelet drives it, under
//! the ferrum handler and under runc as the reference: every check runs twice
//! (`<check>::ferrum`, `<check>::runc`) and expects the same answers.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use ferrum_tests::cri::api::{
    ContainerState, ContainerStatsFilter, ContainerStatsRequest, LinuxContainerResources,
    ListContainerStatsRequest, PodSandboxConfig, PodSandboxState, ReopenContainerLogRequest,
    UpdateContainerResourcesRequest,
};
use ferrum_tests::cri::{CriEnv, Handler, POD_ADDRESS};
use ferrum_tests::for_each_handler;

const GRACE: Duration = Duration::from_secs(10);
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

fn start_pod(cri: &CriEnv, handler: Handler, name: &str) -> (PodSandboxConfig, String) {
    let pod = cri.pod_config(name);
    let id = cri.run_pod(handler, &pod).expect("RunPodSandbox");
    (pod, id)
}

fn log_path(pod: &PodSandboxConfig, name: &str) -> PathBuf {
    Path::new(&pod.log_directory).join(format!("{name}.log"))
}

/// The pod is Ready with the CNI's address, its containers go through
/// Created → Running → Exited, the whole pod is served by one shim (ferrum) and
/// RemovePodSandbox leaves nothing: no shim, mount, cgroup, netns or state.
fn pod_lifecycle(handler: Handler) {
    let cri = CriEnv::start();
    let (pod, pod_id) = start_pod(&cri, handler, "life");
    let (status, info) = cri.pod_status(&pod_id);
    assert_eq!(status.state(), PodSandboxState::SandboxReady);
    assert_eq!(status.runtime_handler, handler.name());
    assert_eq!(
        status.network.as_ref().map(|n| n.ip.as_str()),
        Some(POD_ADDRESS)
    );
    assert!(status.created_at > 0);
    let netns = netns_path(&info);
    assert!(Path::new(&netns).exists(), "pod netns {netns}");

    let config = cri.container_config(&pod, "app", &["sleep", "600"]);
    let id = cri
        .create_container(&pod_id, &pod, &config)
        .expect("CreateContainer");
    let (created, _) = cri.container_status(&id);
    assert_eq!(created.state(), ContainerState::ContainerCreated);
    assert!(created.created_at > 0 && created.started_at == 0);
    cri.start_container(&id).expect("StartContainer");
    let second = cri.run_container(
        &pod_id,
        &pod,
        &cri.container_config(&pod, "second", &["sleep", "600"]),
    );
    let (running, _) = cri.container_status(&id);
    assert_eq!(running.state(), ContainerState::ContainerRunning);
    assert!(running.started_at >= running.created_at);

    // One shim for the sandbox and both containers; runc-v2 also groups per pod.
    assert_eq!(cri.shims(handler).len(), 1, "shims of {handler:?}");
    let other = if handler == Handler::Ferrum {
        Handler::Runc
    } else {
        Handler::Ferrum
    };
    assert_eq!(cri.shims(other), Vec::<i32>::new());

    cri.stop_container(&id, 10).expect("StopContainer");
    let stopped = cri.wait_exited(&id, EXIT_TIMEOUT);
    assert!(stopped.finished_at >= stopped.started_at);
    cri.remove_container(&id).expect("RemoveContainer");
    assert_eq!(
        cri.exec_ok(&second, &["echo", "still"]),
        "still\n",
        "the pod keeps working"
    );

    cri.stop_pod(&pod_id).expect("StopPodSandbox");
    let (stopped_pod, _) = cri.pod_status(&pod_id);
    assert_eq!(stopped_pod.state(), PodSandboxState::SandboxNotready);
    assert!(
        cri.cni_calls().iter().any(|c| c.starts_with("DEL")),
        "StopPodSandbox tears the network down: {:?}",
        cri.cni_calls()
    );
    cri.remove_pod(&pod_id).expect("RemovePodSandbox");
    assert!(!Path::new(&netns).exists(), "netns {netns} left");
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

fn netns_path(info: &serde_json::Value) -> String {
    let namespaces = info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()
        .expect("sandbox spec namespaces");
    namespaces
        .iter()
        .find(|n| n["type"] == "network")
        .and_then(|n| n["path"].as_str())
        .expect("the sandbox joins a network namespace by path")
        .to_string()
}

/// ContainerStatus of an exited container: its exit code, reason and ordered
/// timestamps. The container lives a moment: containerd takes started_at when
/// Start has returned, so a process that exits at once can carry an earlier
/// finished_at (the shim's exit time) under any runtime.
fn exit_code_and_timestamps(handler: Handler) {
    let cri = CriEnv::start();
    let (pod, pod_id) = start_pod(&cri, handler, "exit");
    let id = cri.run_container(
        &pod_id,
        &pod,
        &cri.container_config(&pod, "fails", &["sh", "-c", "sleep 0.2; exit 3"]),
    );
    let status = cri.wait_exited(&id, EXIT_TIMEOUT);
    assert_eq!(status.exit_code, 3);
    assert_eq!(status.reason, "Error");
    assert!(
        0 < status.created_at && status.created_at <= status.started_at,
        "{status:?}"
    );
    assert!(status.started_at <= status.finished_at, "{status:?}");

    let ok = cri.run_container(&pod_id, &pod, &cri.container_config(&pod, "ok", &["true"]));
    let status = cri.wait_exited(&ok, EXIT_TIMEOUT);
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"));
    cri.remove_pod_fully(&pod_id);
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

/// ExecSync: stdout and stderr apart, the exit code, and a timeout that ends
/// the call (containerd kills the process) instead of waiting for it.
fn exec_sync(handler: Handler) {
    let cri = CriEnv::start();
    let (pod, pod_id) = start_pod(&cri, handler, "exec");
    let id = cri.run_container(
        &pod_id,
        &pod,
        &cri.container_config(&pod, "app", &["sleep", "600"]),
    );
    let reply = cri
        .exec_sync(&id, &["sh", "-c", "echo out; echo err >&2; exit 5"], 30)
        .expect("ExecSync");
    assert_eq!(reply.stdout, b"out\n");
    assert_eq!(reply.stderr, b"err\n");
    assert_eq!(reply.exit_code, 5);

    let started = Instant::now();
    let timed_out = cri.exec_sync(&id, &["sleep", "59"], 1);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "ExecSync with timeout 1 s took {took:?}"
    );
    match timed_out {
        Err(e) => assert!(e.message().contains("timeout"), "{e}"),
        Ok(reply) => assert_ne!(reply.exit_code, 0, "a timed-out exec cannot succeed"),
    }
    // The timed-out process is gone; the container still serves execs.
    let ps = cri.exec_ok(&id, &["ps", "-o", "args"]);
    assert!(!ps.contains("sleep 59"), "{ps}");
    cri.remove_pod_fully(&pod_id);
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

/// Many short ExecSyncs in a row each return with their output: a process
/// that prints and exits before containerd has opened its output FIFO must
/// neither lose the output nor leave ExecSync waiting for ever.
fn exec_sync_many(handler: Handler) {
    let cri = CriEnv::start();
    let (pod, pod_id) = start_pod(&cri, handler, "execs");
    let id = cri.run_container(
        &pod_id,
        &pod,
        &cri.container_config(&pod, "app", &["sleep", "600"]),
    );
    for i in 0..150 {
        let n = i.to_string();
        assert_eq!(cri.exec_ok(&id, &["echo", &n]), format!("{n}\n"));
    }
    cri.remove_pod_fully(&pod_id);
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

/// Lines of a CRI log file: `<RFC 3339 time> <stream> <F|P> <text>`.
fn log_lines(path: &Path) -> Vec<(String, String)> {
    let text = fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let mut f = line.splitn(4, ' ');
            let (time, stream, tag, msg) = (f.next(), f.next(), f.next(), f.next());
            let time = time.expect("time");
            assert!(
                time.ends_with('Z') && time.contains('T'),
                "not RFC 3339: {line:?}"
            );
            assert_eq!(tag, Some("F"), "{line:?}");
            (
                stream.expect("stream").to_string(),
                msg.unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

/// Output lands at log_path in the CRI format; ReopenContainerLog makes the
/// container write to a fresh file after the old one was rotated away.
fn logs_and_reopen(handler: Handler) {
    let cri = CriEnv::start();
    let (pod, pod_id) = start_pod(&cri, handler, "logs");
    let script =
        "echo out; echo err >&2; i=0; while true; do i=$((i+1)); echo tick$i; sleep 0.1; done";
    let id = cri.run_container(
        &pod_id,
        &pod,
        &cri.container_config(&pod, "app", &["sh", "-c", script]),
    );
    let path = log_path(&pod, "app");
    let (status, _) = cri.container_status(&id);
    assert_eq!(Path::new(&status.log_path), path);
    wait_for("ticks in the log", || log_lines(&path).len() > 3);
    let lines = log_lines(&path);
    assert_eq!(lines[..2].len(), 2);
    assert!(
        lines.contains(&("stdout".into(), "out".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stderr".into(), "err".into())),
        "{lines:?}"
    );

    let rotated = path.with_extension("log.1");
    fs::rename(&path, &rotated).unwrap();
    let request = ReopenContainerLogRequest {
        container_id: id.clone(),
    };
    cri.client()
        .call(cri.client().runtime().reopen_container_log(request))
        .expect("ReopenContainerLog");
    wait_for("ticks in the reopened log", || {
        log_lines(&path).iter().any(|(_, m)| m.starts_with("tick"))
    });
    cri.remove_pod_fully(&pod_id);
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

/// ContainerStats and ListContainerStats carry CPU and memory figures from
/// the runtime's metrics.
fn stats(handler: Handler) {
    let cri = CriEnv::start();
    let (pod, pod_id) = start_pod(&cri, handler, "stats");
    let busy = "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 600";
    let id = cri.run_container(
        &pod_id,
        &pod,
        &cri.container_config(&pod, "app", &["sh", "-c", busy]),
    );
    let rpc = |id: &str| {
        let request = ContainerStatsRequest {
            container_id: id.to_string(),
        };
        cri.client()
            .call(cri.client().runtime().container_stats(request))
            .expect("ContainerStats")
    };
    wait_for("CPU time", || {
        let stats = rpc(&id).stats.expect("stats");
        let cpu = stats
            .cpu
            .and_then(|c| c.usage_core_nano_seconds)
            .map_or(0, |v| v.value);
        cpu > 10_000_000
    });
    let stats = rpc(&id).stats.expect("stats");
    assert_eq!(
        stats.attributes.as_ref().map(|a| a.id.as_str()),
        Some(id.as_str())
    );
    let memory = stats.memory.expect("memory stats");
    assert!(
        memory.working_set_bytes.map_or(0, |v| v.value) > 0,
        "{memory:?}"
    );

    let request = ListContainerStatsRequest {
        filter: Some(ContainerStatsFilter {
            pod_sandbox_id: pod_id.clone(),
            ..Default::default()
        }),
    };
    let listed = cri
        .client()
        .call(cri.client().runtime().list_container_stats(request))
        .expect("ListContainerStats");
    let ids: Vec<_> = listed
        .stats
        .iter()
        .filter_map(|s| s.attributes.as_ref())
        .map(|a| a.id.clone())
        .collect();
    assert_eq!(ids, vec![id.clone()]);
    assert!(listed.stats[0]
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds)
        .is_some());
    cri.remove_pod_fully(&pod_id);
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

/// The container's cgroup directory on a v1 (or hybrid) host, for `controller`.
fn cgroup_file(cri: &CriEnv, id: &str, controller: &str, file: &str) -> String {
    let spec = cri.container_spec(id);
    let path = spec["linux"]["cgroupsPath"]
        .as_str()
        .expect("cgroupsPath")
        .trim_start_matches('/')
        .to_string();
    let v1 = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(&path)
        .join(file);
    fs::read_to_string(&v1)
        .unwrap_or_else(|e| panic!("{}: {e}", v1.display()))
        .trim()
        .to_string()
}

/// UpdateContainerResources changes the running container's cgroup.
fn update_resources(handler: Handler) {
    if !Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
        // Pure cgroup v2: the cgroup v2 lane covers Update through ctr.
        return;
    }
    let cri = CriEnv::start();
    let (pod, pod_id) = start_pod(&cri, handler, "update");
    let id = cri.run_container(
        &pod_id,
        &pod,
        &cri.container_config(&pod, "app", &["sleep", "600"]),
    );
    let request = UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            ..Default::default()
        }),
        ..Default::default()
    };
    cri.client()
        .call(cri.client().runtime().update_container_resources(request))
        .expect("UpdateContainerResources");
    assert_eq!(
        cgroup_file(&cri, &id, "memory", "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(cgroup_file(&cri, &id, "cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(cgroup_file(&cri, &id, "cpu", "cpu.shares"), "512");
    cri.remove_pod_fully(&pod_id);
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

/// StopContainer sends SIGTERM, and SIGKILL only once the timeout has passed.
fn stop_term_then_kill(handler: Handler) {
    let cri = CriEnv::start();
    let (pod, pod_id) = start_pod(&cri, handler, "stop");
    let polite = "trap 'exit 0' TERM; while true; do sleep 0.1; done";
    let deaf = "trap '' TERM; while true; do sleep 0.1; done";
    let polite = cri.run_container(
        &pod_id,
        &pod,
        &cri.container_config(&pod, "polite", &["sh", "-c", polite]),
    );
    let deaf = cri.run_container(
        &pod_id,
        &pod,
        &cri.container_config(&pod, "deaf", &["sh", "-c", deaf]),
    );

    let started = Instant::now();
    cri.stop_container(&polite, 30).expect("StopContainer");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "SIGTERM was not enough: {:?}",
        started.elapsed()
    );
    assert_eq!(cri.wait_exited(&polite, EXIT_TIMEOUT).exit_code, 0);

    let started = Instant::now();
    cri.stop_container(&deaf, 2).expect("StopContainer");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "took {took:?}"
    );
    assert_eq!(cri.wait_exited(&deaf, EXIT_TIMEOUT).exit_code, 137);
    cri.remove_pod_fully(&pod_id);
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

/// A container killed by the kernel's OOM killer in its own memory cgroup is
/// reported Exited with reason OOMKilled (from the runtime's OOM event).
fn oom_killed(handler: Handler) {
    let cri = CriEnv::start();
    let (pod, pod_id) = start_pod(&cri, handler, "oom");
    let mut config = cri.container_config(
        &pod,
        "hog",
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"],
    );
    let linux = config.linux.get_or_insert_with(Default::default);
    linux.resources = Some(LinuxContainerResources {
        memory_limit_in_bytes: 32 << 20,
        memory_swap_limit_in_bytes: 32 << 20,
        ..Default::default()
    });
    let id = cri.run_container(&pod_id, &pod, &config);
    let status = cri.wait_exited(&id, EXIT_TIMEOUT);
    // containerd's runc shim starts watching a container's OOMs only once its
    // Start has returned: when the kernel kills the process before that (it
    // finished before containerd marked it started), the reference says Error.
    // ferrum watches from Create, so it must always say OOMKilled.
    let runc_missed_it = matches!(handler, Handler::Runc) && status.finished_at <= status.started_at;
    let reason = if runc_missed_it { "Error" } else { "OOMKilled" };
    assert_eq!((status.exit_code, status.reason.as_str()), (137, reason), "{status:?}");
    cri.remove_pod_fully(&pod_id);
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

for_each_handler!(
    oom_killed,
    pod_lifecycle,
    exit_code_and_timestamps,
    exec_sync,
    exec_sync_many,
    logs_and_reopen,
    stats,
    update_resources,
    stop_term_then_kill,
);

/// Every line a container writes before its init exits reaches the CRI log,
/// also when processes of the container outlive its init and hold its stdout
/// (a pod sharing its pid namespace, where the container's init is not pid 1;
/// nginx's workers, a shell's background job), and containerd never finds its
/// reading end closed under it ("Failed to pipe stdout").
fn output_before_the_exit_reaches_the_log(handler: Handler) {
    use ferrum_tests::cri::pod_security_context;
    use ferrum_tests::cri::api::NamespaceMode;
    let cri = CriEnv::start();
    let mut pod = cri.pod_config("out");
    pod_security_context(&mut pod).namespace_options.as_mut().unwrap().pid = NamespaceMode::Pod as i32;
    let pod_id = cri.run_pod(handler, &pod).expect("RunPodSandbox");
    // 2000 lines, the last right before the exit, while a background job
    // (which holds stdout) keeps printing.
    let script = "(while true; do echo bg; sleep 0.05; done) & \
        i=0; while [ $i -lt 2000 ]; do echo line$i; i=$((i+1)); done; echo last";
    let id = cri.run_container(&pod_id, &pod, &cri.container_config(&pod, "out", &["sh", "-c", script]));
    let status = cri.wait_exited(&id, EXIT_TIMEOUT);
    assert_eq!(status.exit_code, 0, "{status:?}");
    let path = log_path(&pod, "out");
    wait_for("the last line in the log", || log_lines(&path).iter().any(|(_, m)| m == "last"));
    let lines: Vec<String> = log_lines(&path).into_iter().map(|(_, m)| m).filter(|m| m != "bg").collect();
    let expected: Vec<String> = (0..2000).map(|i| format!("line{i}")).chain(["last".to_string()]).collect();
    assert_eq!(lines, expected, "{handler:?}: lines lost or out of order");
    cri.remove_pod_fully(&pod_id);
    let log = fs::read_to_string(cri.env().root_dir().join("containerd.log")).unwrap();
    let complaints: Vec<&str> = log.lines().filter(|l| l.contains("Failed to pipe")).collect();
    assert!(complaints.is_empty(), "{handler:?}: containerd's reader was closed under it: {complaints:#?}");
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

for_each_handler!(output_before_the_exit_reaches_the_log);
