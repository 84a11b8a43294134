//! linux.resources, differentially against runc through the same containerd:
//! for the same `ctr run` flags the cgroup files hold the same values. And
//! Task.Update, sent to the shim over ttrpc as containerd would (ctr has no
//! update command; the CRI's UpdateContainerResources is the usual caller).

use std::time::Duration;

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::api;
use ferrum_tests::{CtrOutput, Env, SpecFile, FERRUM_RUNTIME};

const GRACE: Duration = Duration::from_secs(5);
const FLAGS: [&str; 7] = ["-d", "--memory-limit", "67108864", "--cpus", "0.5", "--cpu-shares", "512"];
/// Every file the flags and containerd's default spec set, on this v1 host.
const FILES: [&str; 6] = [
    "memory/memory.limit_in_bytes",
    "cpu/cpu.shares",
    "cpu/cpu.cfs_quota_us",
    "cpu/cpu.cfs_period_us",
    "devices/devices.list",
    "pids/pids.max",
];

fn cgroup_file(env: &Env, id: &str, file: &str) -> String {
    let (controller, name) = file.split_once('/').unwrap();
    let path = format!("/sys/fs/cgroup/{controller}/{}/{id}/{name}", env.namespace());
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn cgroup_values_match_runcs_and_update_changes_them() {
    let (env, image) = Env::with_busybox();
    let mut runc = vec!["run", "--runtime", "io.containerd.runc.v2"];
    runc.extend_from_slice(&FLAGS);
    runc.extend_from_slice(&[&image, "r1", "sleep", "600"]);
    env.ctr(&runc).assert_ok();
    env.run_on_ferrum(&FLAGS, &image, "f1", &["sleep", "600"]).assert_ok();

    // Compared as sets of lines: devices.list is in the order rules were written.
    let lines = |id: &str, file: &str| {
        let mut l: Vec<String> = cgroup_file(&env, id, file).lines().map(String::from).collect();
        l.sort();
        l
    };
    for file in FILES {
        assert_eq!(lines("f1", file), lines("r1", file), "{file} differs from runc's");
    }
    // The device rules are really default-deny, not the host's "a *:* rwm".
    assert!(!cgroup_file(&env, "f1", "devices/devices.list").contains("a *:* rwm"));
    let mknod = env.ctr(&["tasks", "exec", "--exec-id", "m", "f1", "sh", "-c", "mknod /tmp/sda b 8 0 && head -c1 /tmp/sda"]);
    assert!(!mknod.success(), "a host block device is readable: {mknod}");

    update_memory_limit(&env, "f1", 134_217_728);
    assert_eq!(cgroup_file(&env, "f1", "memory/memory.limit_in_bytes").trim(), "134217728");

    env.remove_task("r1");
    env.remove_task("f1");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

/// Task.Update with a new memory limit, straight to the task's shim.
fn update_memory_limit(env: &Env, id: &str, bytes: u64) {
    let client = env.task_client(id);
    let resources = serde_json::json!({ "memory": { "limit": bytes } });
    let request = api::UpdateTaskRequest {
        id: id.into(),
        resources: MessageField::some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
            value: serde_json::to_vec(&resources).unwrap(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let ctx = ttrpc::context::with_timeout(Duration::from_secs(5).as_nanos() as i64);
    client.update(ctx, &request).expect("Update");
}

#[test]
fn a_limit_the_kernel_refuses_fails_the_container_naming_it() {
    let (env, image) = Env::with_busybox();
    // The kernel takes CFS quotas of 1 ms and more.
    let refused = env.run_on_ferrum(&["--rm", "--cpu-quota", "1", "--cpu-period", "100000"], &image, "c1", &["true"]);
    assert!(!refused.success(), "{refused}");
    assert!(refused.stderr.contains("cpu.cfs_quota_us") && refused.stderr.contains("\"1\""), "{refused}");
    // Nothing of c1 is left, and the next container runs.
    let next = env.run_on_ferrum(&["--rm"], &image, "c2", &["echo", "still-works"]);
    next.assert_ok();
    assert_eq!(next.stdout, "still-works\n");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

/// Init and execs are born in the container's cgroup (a thread of the shim
/// enters the v1 hierarchies and clones there, cgroup/birth.rs): in every
/// hierarchy they are in it, no thread of the shim stays there, and the
/// limits, set once init is in, leave a pids limit of one to init alone.
#[test]
fn processes_are_born_in_every_hierarchy_and_no_shim_thread_stays() {
    let (env, image) = Env::with_busybox();
    let one = run_with_resources(&env, &["--rm"], "p1", &["echo", "alone"], serde_json::json!({"pids": {"limit": 1}}));
    one.assert_ok();
    assert_eq!(one.stdout, "alone\n");

    env.run_on_ferrum(&["-d"], &image, "c1", &["sleep", "600"]).assert_ok();
    let out = env.ctr(&["tasks", "exec", "--exec-id", "e1", "c1", "cat", "/proc/self/cgroup"]);
    out.assert_ok();
    let own = format!("/{}/c1", env.namespace());
    let in_own = |cgroups: &str| cgroups.lines().all(|l| l.ends_with(&own));
    assert!(in_own(&out.stdout), "the exec's cgroups:\n{out}");
    let init = env.task_pid("c1").expect("c1's pid");
    let cgroups = std::fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap();
    assert!(in_own(&cgroups), "init's cgroups:\n{cgroups}");
    // Every v1 hierarchy's tasks (threads) of c1: init alone, the exec gone.
    let hierarchies = cgroups.lines().filter_map(|l| l.split(':').nth(1)).filter(|c| !c.is_empty());
    for controllers in hierarchies {
        let dir = controllers.split(',').find(|c| !c.starts_with("name=")).unwrap_or("systemd");
        let tasks = std::fs::read_to_string(format!("/sys/fs/cgroup/{dir}{own}/tasks")).unwrap();
        assert_eq!(tasks.trim(), init.to_string(), "the threads in {dir}{own}");
    }
    let ps = env.ctr(&["tasks", "ps", "c1"]);
    ps.assert_ok();
    let shim = env.shim_pid("c1").expect("c1's shim");
    assert!(!ps.stdout.split_whitespace().any(|w| w == shim.to_string()), "the shim in ctr task ps:\n{ps}");
    env.remove_task("c1");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

/// `ctr run --config` with containerd's default spec running `args`, with
/// `resources` merged into linux.resources.
fn run_with_resources(env: &Env, flags: &[&str], id: &str, args: &[&str], resources: serde_json::Value) -> CtrOutput {
    let mut file = SpecFile::new(env, id, args).expect("spec file");
    let merged = file.spec["linux"]["resources"].as_object_mut().expect("default spec has resources");
    for (k, v) in resources.as_object().unwrap() {
        merged.insert(k.clone(), v.clone());
    }
    file.run(env, FERRUM_RUNTIME, flags).expect("ctr run --config")
}

/// "major:minor" of the disk holding `path` (the whole disk: throttle rules
/// take no partitions).
fn disk_of(path: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).unwrap().dev();
    let sys = std::path::PathBuf::from(format!("/sys/dev/block/{}:{}", libc::major(dev), libc::minor(dev)));
    let disk = if sys.join("partition").exists() { sys.join("..") } else { sys };
    std::fs::read_to_string(disk.join("dev")).unwrap().trim().to_string()
}

fn major_minor(dev: &str) -> (i64, i64) {
    dev.split_once(':').map(|(a, b)| (a.parse().unwrap(), b.parse().unwrap())).unwrap()
}

#[test]
fn every_resource_field_reaches_the_cgroup() {
    let env = Env::start().expect("starting containerd with ferrum");
    let dev = disk_of(env.root_dir());
    let (major, minor) = major_minor(&dev);
    let resources = serde_json::json!({
        "memory": { "limit": 67108864, "kernelTCP": 33554432, "swappiness": 10, "useHierarchy": true, "checkBeforeUpdate": true },
        "cpu": { "quota": 50000, "period": 100000, "burst": 10000, "idle": 0 },
        "blockIO": {
            "throttleReadBpsDevice": [{ "major": major, "minor": minor, "rate": 1048576 }],
            "throttleWriteIopsDevice": [{ "major": major, "minor": minor, "rate": 100 }]
        },
        "hugepageLimits": [{ "pageSize": "2MB", "limit": 4194304 }],
        "unified": { "hugetlb.1GB.max": "1073741824" }
    });
    run_with_resources(&env, &["-d"], "all", &["sleep", "600"], resources).assert_ok();
    let expect = [
        ("memory/memory.kmem.tcp.limit_in_bytes", "33554432"),
        ("memory/memory.swappiness", "10"),
        ("memory/memory.use_hierarchy", "1"),
        ("cpu/cpu.cfs_burst_us", "10000"),
        ("cpu/cpu.idle", "0"),
        ("unified/hugetlb.2MB.max", "4194304"),
        ("unified/hugetlb.2MB.rsvd.max", "4194304"),
        ("unified/hugetlb.1GB.max", "1073741824"),
    ];
    for (file, value) in expect {
        assert_eq!(cgroup_file(&env, "all", file).trim(), value, "{file}");
    }
    let read_bps = cgroup_file(&env, "all", "blkio/blkio.throttle.read_bps_device");
    assert_eq!(read_bps.trim(), format!("{dev} 1048576"));
    let write_iops = cgroup_file(&env, "all", "blkio/blkio.throttle.write_iops_device");
    assert_eq!(write_iops.trim(), format!("{dev} 100"));
    env.remove_task("all");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

/// A block I/O weight of 0 is none, as runc reads it: Docker 20.10 sends
/// `blockIO.weight: 0` with every container, and ferrum failed them all
/// (`set blkio.weight to "0"`), found driving the CLI from Docker 20.10.
#[test]
fn a_zero_block_io_weight_is_no_weight() {
    let (env, _image) = Env::with_busybox();
    let zero = serde_json::json!({ "blockIO": { "weight": 0, "leafWeight": 0, "weightDevice": [{ "major": 7, "minor": 0, "weight": 0 }] } });
    let out = run_with_resources(&env, &["--rm"], "w0", &["echo", "ran"], zero);
    assert_eq!(out.assert_ok().stdout.trim(), "ran");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

#[test]
fn refused_block_io_and_unified_values_fail_the_container_naming_them() {
    let (env, image) = Env::with_busybox();
    // No such block device: the kernel refuses the throttle rule.
    let bad_device = serde_json::json!({ "blockIO": { "throttleReadBpsDevice": [{ "major": 259, "minor": 4095, "rate": 1 }] } });
    let refused = run_with_resources(&env, &["--rm"], "b1", &["true"], bad_device);
    assert!(!refused.success(), "{refused}");
    assert!(refused.stderr.contains("blkio.throttle.read_bps_device") && refused.stderr.contains("259:4095 1"), "{refused}");
    // A unified key that is not a file of the cgroup is refused before any write.
    let bad_key = serde_json::json!({ "unified": { "../memory.max": "1" } });
    let refused = run_with_resources(&env, &["--rm"], "u1", &["true"], bad_key);
    assert!(!refused.success(), "{refused}");
    assert!(refused.stderr.contains("unified") && refused.stderr.contains("../memory.max"), "{refused}");
    env.run_on_ferrum(&["--rm"], &image, "next", &["true"]).assert_ok();
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

/// The container's direct writes to the disk, in `ctr task metrics --format
/// json` (the whole Metrics message) under blkio, and one hugetlb entry per
/// huge page size (on this hybrid host from the v2 hierarchy). v1 counts
/// block I/O per cgroup only where a throttle rule is set, hence the rule.
#[test]
fn metrics_show_block_io_and_hugetlb() {
    let env = Env::start().expect("starting containerd with ferrum");
    let dev = disk_of(env.root_dir());
    let (major, minor) = major_minor(&dev);
    let throttle = serde_json::json!({
        "blockIO": { "throttleWriteBpsDevice": [{ "major": major, "minor": minor, "rate": 1u64 << 30 }] }
    });
    let script = "busybox dd if=/dev/zero of=/tmp/direct bs=4096 count=64 oflag=direct && sleep 600";
    run_with_resources(&env, &["-d"], "io1", &["sh", "-c", script], throttle).assert_ok();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let out = env.ctr(&["tasks", "metrics", "--format", "json", "io1"]);
        out.assert_ok();
        let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("metrics JSON");
        let written: u64 = json["blkio"]["io_service_bytes_recursive"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["op"] == "Write")
            .filter_map(|e| e["value"].as_u64())
            .sum();
        if written >= 64 * 4096 || std::time::Instant::now() > deadline {
            assert!(written >= 64 * 4096, "direct writes not in blkio: {out}");
            break json;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let entry = &metrics["blkio"]["io_service_bytes_recursive"][0];
    assert!(entry["device"].as_str().is_some_and(|d| d.starts_with("/dev/")), "device named: {metrics}");
    let sizes: Vec<&str> =
        metrics["hugetlb"].as_array().into_iter().flatten().filter_map(|h| h["pagesize"].as_str()).collect();
    assert!(sizes.contains(&"2MB"), "hugetlb page sizes: {sizes:?}");
    env.remove_task("io1");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}
