//! The systemd cgroup driver (`SystemdCgroup = true`) through containerd, on a
//! real systemd: a `SystemdNode` (systemd as PID 1 of its own namespaces, as
//! in a systemd container) with containerd, the shims and the containers
//! inside it, so `/run/systemd/private` is that systemd's.
//!
//! What is checked is what systemd itself says (`systemctl show`) next to the
//! cgroup files: the scope and slices runc's `slice:prefix:name` names, the
//! limits as unit properties and as files, limits that survive a systemd
//! reload, updates, and nothing left — unit, cgroup or mount — after delete or
//! after the shim was SIGKILLed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrum_tests::cri::api::{LinuxContainerResources, UpdateContainerResourcesRequest};
use ferrum_tests::cri::{CriEnv, CriOptions, FerrumHandler, Handler};
use ferrum_tests::ctr::assert_ooms_before_exit;
use ferrum_tests::systemd_node::hierarchy_roots;
use ferrum_tests::{Env, Options, SpecFile, SystemdNode, FERRUM_RUNTIME, RUNC_RUNTIME};

const GRACE: Duration = Duration::from_secs(5);
/// ctr's limit flags the container tests run with.
const LIMITS: [&str; 6] = [
    "--memory-limit",
    "67108864",
    "--cpu-shares",
    "512",
    "--cpus",
    "0.5",
];

/// A node with containerd inside. Fields drop in order: containerd first.
struct Node {
    env: Env,
    node: SystemdNode,
    image: String,
    /// `--runtime-config-path` of a TOML file asking for the systemd driver.
    systemd_options: String,
}

impl Node {
    fn boot() -> Node {
        let node = SystemdNode::boot().expect("booting a systemd node");
        let options = Options {
            node: Some(node.pid()),
            ferrum_snapshotter: false,
            ..Options::default()
        };
        let env = Env::start_with(options).expect("starting containerd in the node");
        let image = env.import_busybox().expect("importing busybox");
        let systemd_options = env.root_dir().join("systemd.toml");
        std::fs::write(&systemd_options, "SystemdCgroup = true\n").unwrap();
        let systemd_options = systemd_options.to_string_lossy().into_owned();
        Node {
            env,
            node,
            image,
            systemd_options,
        }
    }

    /// `ctr run -d` on ferrum with the systemd driver and `cgroupsPath`.
    fn run(&self, id: &str, cgroups_path: &str, flags: &[&str]) -> ferrum_tests::CtrOutput {
        let mut all = vec![
            "-d",
            "--runtime-config-path",
            &self.systemd_options,
            "--cgroup",
            cgroups_path,
        ];
        all.extend_from_slice(flags);
        self.env
            .run_on(FERRUM_RUNTIME, &all, &self.image, id, &["sleep", "600"])
    }

    fn property(&self, unit: &str, name: &str) -> String {
        self.node.unit_property(unit, name)
    }

    /// Nothing of the container is left: no unit, no cgroup in any hierarchy,
    /// no mount in the node's mount namespace, nothing the harness tracks.
    fn assert_gone(&self, unit: &str, group: &str) {
        assert_unit_gone(&self.node, unit, group);
        assert_eq!(
            self.node.mounts_under(self.env.root_dir()),
            Vec::<String>::new(),
            "mounts left in the node"
        );
        assert_eq!(
            self.env.leftovers_after(GRACE),
            Vec::<String>::new(),
            "left behind"
        );
    }
}

fn pure_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.procs").exists()
}

/// systemd no longer knows `unit` (waiting a moment for its stop job) and
/// its cgroup `group` has no directory left in any hierarchy.
fn assert_unit_gone(node: &SystemdNode, unit: &str, group: &str) {
    let deadline = Instant::now() + GRACE;
    while node.unit_property(unit, "LoadState") != "not-found" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        node.unit_property(unit, "LoadState"),
        "not-found",
        "{unit} is still loaded"
    );
    // `shim delete` removes the cgroups after systemd dropped the unit.
    while !cgroups_left(group).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        cgroups_left(group),
        Vec::<PathBuf>::new(),
        "cgroups left behind"
    );
}

/// The directories `group` still has, in any hierarchy.
fn cgroups_left(group: &str) -> Vec<PathBuf> {
    hierarchy_roots()
        .into_iter()
        .map(|h| h.join(group.trim_start_matches('/')))
        .filter(|d| d.exists())
        .collect()
}

/// A file of `group`: under the v1 `controller`'s hierarchy, or the v2 root.
fn cgroup_file(group: &str, controller: &str, file: &str) -> String {
    let root = if pure_v2() {
        PathBuf::from("/sys/fs/cgroup")
    } else {
        Path::new("/sys/fs/cgroup").join(controller)
    };
    let path = root.join(group.trim_start_matches('/')).join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (the group is in {:?})",
                path.display(),
                cgroups_left(group)
            )
        })
        .trim()
        .to_string()
}

/// The memory limit, as the unit's property on this cgroup version and in its file.
fn memory_limit(node: &SystemdNode, unit: &str, group: &str) -> (String, String) {
    match pure_v2() {
        true => (
            node.unit_property(unit, "MemoryMax"),
            cgroup_file(group, "memory", "memory.max"),
        ),
        false => (
            node.unit_property(unit, "MemoryLimit"),
            cgroup_file(group, "memory", "memory.limit_in_bytes"),
        ),
    }
}

/// What a systemd reload could reset: memory, cpu and pids limits, devices
/// (a list's lines sorted).
fn limits_in_files(group: &str) -> Vec<String> {
    let files: &[(&str, &str)] = match pure_v2() {
        true => &[
            ("memory", "memory.max"),
            ("cpu", "cpu.weight"),
            ("cpu", "cpu.max"),
            ("pids", "pids.max"),
        ],
        false => &[
            ("memory", "memory.limit_in_bytes"),
            ("cpu", "cpu.shares"),
            ("cpu", "cpu.cfs_quota_us"),
            ("pids", "pids.max"),
            ("devices", "devices.list"),
        ],
    };
    files
        .iter()
        .map(|(c, f)| {
            // A list (devices.list) in the order it was written: compare the set.
            let mut lines: Vec<String> = cgroup_file(group, c, f)
                .lines()
                .map(str::to_string)
                .collect();
            lines.sort();
            format!("{f}: {}", lines.join(" "))
        })
        .collect()
}

#[test]
fn a_container_is_a_transient_scope_with_its_limits() {
    let n = Node::boot();
    n.run("s1", "system.slice:ferrum:s1", &LIMITS).assert_ok();
    let unit = "ferrum-s1.scope";
    assert_eq!(n.property(unit, "ActiveState"), "active");
    assert_eq!(n.property(unit, "Delegate"), "yes");
    let group = n.property(unit, "ControlGroup");
    assert_eq!(
        group,
        format!("{}/system.slice/ferrum-s1.scope", n.node.cgroup())
    );

    // The limits are systemd's properties and the files.
    assert_eq!(
        memory_limit(&n.node, unit, &group),
        ("67108864".to_string(), "67108864".to_string())
    );
    match pure_v2() {
        true => assert_eq!(
            (
                n.property(unit, "CPUWeight"),
                cgroup_file(&group, "cpu", "cpu.weight")
            ),
            ("20".into(), "20".into())
        ),
        false => assert_eq!(
            (
                n.property(unit, "CPUShares"),
                cgroup_file(&group, "cpu", "cpu.shares")
            ),
            ("512".into(), "512".into())
        ),
    }
    assert_eq!(n.property(unit, "CPUQuotaPerSecUSec"), "500ms");
    // The container's processes are in the scope, in every hierarchy.
    let out = n.env.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "e1",
        "s1",
        "cat",
        "/proc/self/cgroup",
    ]);
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().filter(|l| !l.ends_with(":/")).collect();
    assert!(
        !lines.is_empty()
            && lines
                .iter()
                .all(|l| l.ends_with("/system.slice/ferrum-s1.scope")),
        "{out}"
    );
    assert_eq!(
        n.property(unit, "TasksCurrent"),
        "1",
        "only init: the exec has exited"
    );

    // systemd rewrites a unit's cgroup from its properties on a reload: the
    // limits (and on v1 the device list) must come out the same.
    let before = limits_in_files(&group);
    let reload = n.node.systemctl(&["daemon-reload"]);
    assert!(reload.status.success(), "{reload:?}");
    assert_eq!(n.property(unit, "ActiveState"), "active");
    assert_eq!(
        limits_in_files(&group),
        before,
        "a systemd reload changed the container's limits"
    );

    // Pause and resume still work (v1's freezer is not systemd's: its directory is ours).
    n.env.ctr(&["tasks", "pause", "s1"]).assert_ok();
    let ps = n.env.ctr(&["tasks", "ls"]);
    assert!(
        ps.stdout
            .lines()
            .any(|l| l.starts_with("s1 ") && l.contains("PAUSED")),
        "{ps}"
    );
    n.env.ctr(&["tasks", "resume", "s1"]).assert_ok();

    n.env.remove_task("s1");
    n.assert_gone(unit, &group);
}

/// The cgroupfs driver on a systemd node (as kubelets ran it for years): the
/// init and an exec are in the container's cgroup, under its limit, in every
/// hierarchy. On pure v2 (the guest lane) both are born there with
/// CLONE_INTO_CGROUP instead of being moved in.
#[test]
fn cgroupfs_driver_processes_are_in_the_containers_cgroup() {
    let n = Node::boot();
    let group = format!("{}/cgroupfs-c1", n.node.cgroup());
    n.env
        .run_on(
            FERRUM_RUNTIME,
            &["-d", "--cgroup", &group, "--memory-limit", "67108864"],
            &n.image,
            "c1",
            &["sleep", "600"],
        )
        .assert_ok();
    let limit = if pure_v2() { "memory.max" } else { "memory.limit_in_bytes" };
    assert_eq!(cgroup_file(&group, "memory", limit), "67108864");
    let out = n.env.ctr(&["tasks", "exec", "--exec-id", "e1", "c1", "cat", "/proc/self/cgroup"]);
    out.assert_ok();
    let in_group = |cgroups: &str| {
        let lines: Vec<&str> = cgroups.lines().filter(|l| !l.ends_with(":/")).collect();
        !lines.is_empty() && lines.iter().all(|l| l.ends_with(&group))
    };
    assert!(in_group(&out.stdout), "the exec's cgroups:\n{out}");
    // Only init is left (the exec has exited); its pid here is the host's.
    let init = cgroup_file(&group, "memory", "cgroup.procs");
    let cmdline = std::fs::read_to_string(format!("/proc/{init}/cmdline")).unwrap_or_default();
    assert_eq!(cmdline.split('\0').collect::<Vec<_>>(), ["sleep", "600", ""], "the cgroup's only process, {init}");
    let own = std::fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap();
    assert!(in_group(&own), "the init's cgroups:\n{own}");
    n.env.remove_task("c1");
    assert_eq!(cgroups_left(&group), Vec::<PathBuf>::new(), "cgroups left behind");
    assert_eq!(n.env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

/// `unified` keys are written to the files last; on v2 the ones systemd has
/// properties for are its properties too, or a reload would reset them to
/// the unit's (memory.high to "max"). On v1 systemd manages no v2 file: the
/// hybrid hierarchy's key is ours alone and a reload leaves it.
#[test]
fn unified_limits_survive_a_systemd_reload() {
    let n = Node::boot();
    let mut file = SpecFile::new(&n.env, "u1", &["sleep", "600"]).expect("config.json");
    file.spec["linux"]["cgroupsPath"] = serde_json::json!("system.slice:ferrum:u1");
    let (files, properties) = if pure_v2() {
        (
            vec![
                ("memory.high", "50331648"),
                ("pids.max", "33"),
                ("cpu.max", "30000 100000"),
            ],
            vec![
                ("MemoryHigh", "50331648"),
                ("TasksMax", "33"),
                ("CPUQuotaPerSecUSec", "300ms"),
            ],
        )
    } else {
        (vec![("hugetlb.2MB.max", "4194304")], vec![])
    };
    let unified: serde_json::Map<String, serde_json::Value> = files
        .iter()
        .map(|(f, v)| (f.to_string(), serde_json::json!(v)))
        .collect();
    file.spec["linux"]["resources"]["unified"] = unified.into();
    let flags = ["-d", "--runtime-config-path", n.systemd_options.as_str()];
    file.run(&n.env, FERRUM_RUNTIME, &flags)
        .expect("ctr run")
        .assert_ok();
    let unit = "ferrum-u1.scope";
    let group = n.property(unit, "ControlGroup");
    let read = || {
        files
            .iter()
            .map(|(f, _)| (f.to_string(), cgroup_file(&group, "unified", f)))
            .collect::<Vec<_>>()
    };
    let want: Vec<_> = files
        .iter()
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .collect();
    assert_eq!(read(), want, "the files");
    for (name, value) in properties {
        assert_eq!(n.property(unit, name), value, "{name}");
    }
    let reload = n.node.systemctl(&["daemon-reload"]);
    assert!(reload.status.success(), "{reload:?}");
    assert_eq!(read(), want, "after a systemd reload");

    n.env.remove_task("u1");
    n.assert_gone(unit, &group);
}

/// runc (1.1.5, under containerd's runc shim) with its own systemd driver in
/// the same node, for the same flags: the units' properties and the cgroup
/// files are the same.
#[test]
fn the_same_unit_and_files_as_runcs_systemd_driver() {
    let n = Node::boot();
    n.run("f1", "system.slice:ferrum:f1", &LIMITS).assert_ok();
    let mut flags = vec![
        "-d",
        "--runc-systemd-cgroup",
        "--cgroup",
        "system.slice:runc:r1",
    ];
    flags.extend(LIMITS);
    n.env
        .run_on(RUNC_RUNTIME, &flags, &n.image, "r1", &["sleep", "600"])
        .assert_ok();

    let (ours, runcs) = ("ferrum-f1.scope", "runc-r1.scope");
    let properties = [
        if pure_v2() {
            "MemoryMax"
        } else {
            "MemoryLimit"
        },
        if pure_v2() { "CPUWeight" } else { "CPUShares" },
        "CPUQuotaPerSecUSec",
        "CPUQuotaPeriodUSec",
        "TasksMax",
        "Slice",
        "Delegate",
        "DevicePolicy",
        "DeviceAllow",
        "MemoryAccounting",
        "CPUAccounting",
        "TasksAccounting",
        if pure_v2() {
            "IOAccounting"
        } else {
            "BlockIOAccounting"
        },
    ];
    // DeviceAllow is a set: its order is each runtime's own. runc leaves out
    // the devices this host lacks (here /dev/net/tun in the v2 guest), ferrum
    // tells systemd what its own filter allows: compare what the host has.
    let value = |unit: &str, p: &str| {
        let mut lines: Vec<String> = n
            .property(unit, p)
            .lines()
            .filter(|l| {
                !l.starts_with("/dev/")
                    || Path::new("/sys")
                        .join(l.split(' ').next().unwrap())
                        .exists()
            })
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    };
    for p in properties {
        assert_eq!(value(ours, p), value(runcs, p), "{p}");
    }
    let (ours, runcs) = (
        n.property(ours, "ControlGroup"),
        n.property(runcs, "ControlGroup"),
    );
    assert_eq!(limits_in_files(&ours), limits_in_files(&runcs));
    n.env.remove_task("f1");
    n.env.remove_task("r1");
    n.assert_gone("ferrum-f1.scope", &ours);
    n.assert_gone("runc-r1.scope", &runcs);
}

/// The CRI's paths for a pod of a systemd kubelet: the scope in the pod's
/// slice, whose parents systemd makes from its name; and the recovery path —
/// the shim SIGKILLed, containerd runs `shim delete`, which stops the unit.
#[test]
fn kubernetes_slices_and_shim_delete_after_a_kill() {
    let n = Node::boot();
    n.run(
        "s2",
        "kubepods-besteffort-pod1.slice:cri-containerd:s2",
        &[],
    )
    .assert_ok();
    let unit = "cri-containerd-s2.scope";
    let group = n.property(unit, "ControlGroup");
    let slices = "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice";
    assert_eq!(
        group,
        format!("{}/{slices}/cri-containerd-s2.scope", n.node.cgroup())
    );
    assert_eq!(
        n.property("kubepods-besteffort-pod1.slice", "ActiveState"),
        "active"
    );

    let shim = n.env.shim_pid("s2").expect("the shim of s2");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // containerd notices and runs `shim delete`, which drops the task.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ls = n.env.ctr(&["tasks", "ls"]);
        if !ls.stdout.lines().any(|l| l.starts_with("s2 ")) {
            break;
        }
        assert!(Instant::now() < deadline, "s2 outlived its shim\n{ls}");
        std::thread::sleep(Duration::from_millis(100));
    }
    n.env.ctr(&["containers", "rm", "s2"]).assert_ok();
    n.assert_gone(unit, &group);
}

/// An OOM kill in a scope is one TaskOOM before the exit, as with cgroupfs:
/// systemd dropping the empty scope's cgroup right after must not lose it.
#[test]
fn an_oom_kill_in_a_scope_is_one_event() {
    let n = Node::boot();
    let allocate = "x=0123456789abcdef; while :; do x=$x$x; done";
    let options = n.systemd_options.as_str();
    let flags = [
        "--rm",
        "--runtime-config-path",
        options,
        "--cgroup",
        "system.slice:ferrum:o1",
        "--memory-limit",
        "33554432",
    ];
    let (run, events) = n.env.events_of("o1", || {
        n.env.run_on(
            FERRUM_RUNTIME,
            &flags,
            &n.image,
            "o1",
            &["sh", "-c", allocate],
        )
    });
    assert_eq!(run.status, Some(137), "not killed by the OOM killer: {run}");
    assert_ooms_before_exit(&events, 1);
    assert_eq!(
        n.property("ferrum-o1.scope", "LoadState"),
        "not-found",
        "the unit outlived its container"
    );
    assert_eq!(
        n.env.leftovers_after(GRACE),
        Vec::<String>::new(),
        "left behind"
    );
}

/// Paths the driver cannot use and a unit systemd refuses fail that one
/// container, named; the pod's shim goes on serving.
#[test]
fn bad_paths_and_refused_units_are_named() {
    let n = Node::boot();
    let group = ["--annotation", "io.ferrum.shim.group=pod1"];
    n.run("good", "system.slice:ferrum:good", &group)
        .assert_ok();
    let quota_file = if pure_v2() {
        "cpu.max"
    } else {
        "cpu.cfs_quota_us"
    };
    let no_flags: &[&str] = &[];
    let cases = [
        ("/ferrum/bad", no_flags, "slice:prefix:name"),
        ("nope:ferrum:bad", no_flags, "not a systemd slice name"),
        // systemd's own refusal, over D-Bus.
        ("system.slice:ferrum:bad@x", no_flags, "ferrum-bad@x.scope"),
        // The kernel's refusal once the unit exists: the unit goes with the container.
        (
            "system.slice:ferrum:bad",
            &["--cpu-quota", "1", "--cpu-period", "100000"],
            quota_file,
        ),
    ];
    for (path, flags, says) in cases {
        let flags: Vec<&str> = group.iter().chain(flags).copied().collect();
        let out = n.run("bad", path, &flags);
        assert!(!out.success(), "{path} accepted\n{out}");
        assert!(out.stderr.contains(says), "unclear error for {path}\n{out}");
        assert_eq!(
            n.property("ferrum-bad.scope", "LoadState"),
            "not-found",
            "the unit of a failed container stays"
        );
        let _ = n.env.ctr(&["tasks", "delete", "bad"]);
        let _ = n.env.ctr(&["containers", "rm", "bad"]);
    }
    let out = n.env.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "e1",
        "good",
        "echo",
        "still serving",
    ]);
    assert!(
        out.success() && out.stdout.contains("still serving"),
        "{out}"
    );
    let good = n.property("ferrum-good.scope", "ControlGroup");
    n.env.remove_task("good");
    n.assert_gone("ferrum-good.scope", &good);
}

/// Without systemd (this machine's own init is not systemd), the driver says
/// so instead of falling back to cgroupfs behind the user's back.
#[test]
fn no_systemd_is_a_clear_error() {
    if Path::new("/run/systemd/private").exists() {
        eprintln!("this host runs systemd: the unreachable case cannot be made here");
        return;
    }
    let (env, image) = Env::with_busybox();
    let options = env.root_dir().join("systemd.toml");
    std::fs::write(&options, "SystemdCgroup = true\n").unwrap();
    let flags = [
        "--rm",
        "--runtime-config-path",
        &options.to_string_lossy(),
        "--cgroup",
        "system.slice:ferrum:n1",
    ];
    let out = env.run_on(FERRUM_RUNTIME, &flags, &image, "n1", &["true"]);
    assert!(!out.success(), "ran without systemd\n{out}");
    assert!(
        out.stderr.contains("/run/systemd/private") && out.stderr.contains("ferrum-n1.scope"),
        "{out}"
    );
    let _ = env.ctr(&["containers", "rm", "n1"]);
    assert_eq!(
        env.leftovers_after(GRACE),
        Vec::<String>::new(),
        "left behind"
    );
}

/// A pod as a systemd kubelet makes it: its cgroup parent is a slice, so the
/// CRI asks for `slice:cri-containerd:<id>` paths, which only the systemd
/// driver understands. The sandbox and the container are scopes in the pod's
/// slice; UpdateContainerResources reaches systemd and the files; removing
/// the pod stops both.
#[test]
fn a_cri_pod_of_a_systemd_kubelet() {
    let node = SystemdNode::boot().expect("booting a systemd node");
    let ferrum = FerrumHandler {
        options: vec!["SystemdCgroup = true".into()],
        snapshotter: None,
    };
    let cri = CriEnv::start_with(CriOptions {
        ferrum,
        node: Some(node.pid()),
        ..Default::default()
    })
    .expect("starting containerd with the CRI plugin in the node");
    let mut pod = cri.pod_config("sd");
    let slice = "kubepods-besteffort-podsd1.slice";
    pod.linux.as_mut().unwrap().cgroup_parent = slice.to_string();
    let pod_id = cri.run_pod(Handler::Ferrum, &pod).expect("RunPodSandbox");
    let config = cri.container_config(&pod, "app", &["sleep", "600"]);
    let app = cri.run_container(&pod_id, &pod, &config);

    let parent = format!(
        "{}/kubepods.slice/kubepods-besteffort.slice/{slice}",
        node.cgroup()
    );
    let units = [
        format!("cri-containerd-{pod_id}.scope"),
        format!("cri-containerd-{app}.scope"),
    ];
    let mut groups = Vec::new();
    for unit in &units {
        assert_eq!(node.unit_property(unit, "ActiveState"), "active", "{unit}");
        let group = node.unit_property(unit, "ControlGroup");
        assert_eq!(group, format!("{parent}/{unit}"));
        groups.push(group);
    }
    // The container's processes are in its scope (seen from the host: on v2
    // the CRI gives containers a cgroup namespace, where it is "/").
    let procs = cgroup_file(&groups[1], "pids", "cgroup.procs");
    assert!(!procs.is_empty(), "nothing runs in {}", groups[1]);

    let request = UpdateContainerResourcesRequest {
        container_id: app.clone(),
        linux: Some(LinuxContainerResources {
            memory_limit_in_bytes: 96 << 20,
            ..Default::default()
        }),
        ..Default::default()
    };
    cri.client()
        .call(cri.client().runtime().update_container_resources(request))
        .expect("UpdateContainerResources");
    let limit = (96u64 << 20).to_string();
    assert_eq!(
        memory_limit(&node, &units[1], &groups[1]),
        (limit.clone(), limit)
    );

    cri.remove_pod_fully(&pod_id);
    for (unit, group) in units.iter().zip(&groups) {
        assert_unit_gone(&node, unit, group);
    }
    assert_eq!(
        cri.leftovers_after(GRACE),
        Vec::<String>::new(),
        "left behind"
    );
}
