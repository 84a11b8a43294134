//! linux.resources, differentially against runc through the same containerd:
//! for the same `ctr run` flags the cgroup files hold the same values. And
//! Task.Update, sent to the shim over ttrpc as containerd would (ctr has no
//! update command; the CRI's UpdateContainerResources is the usual caller).

use std::time::Duration;

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::{api, TaskClient};
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
    let bundle = env.root_dir().join("state/io.containerd.runtime.v2.task").join(env.namespace()).join(id);
    let address = std::fs::read_to_string(bundle.join("address")).unwrap();
    let client = TaskClient::new(ttrpc::Client::connect(&address).expect("connect to the shim"));
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

/// "major:minor" of a block device of this host, for throttle rules.
fn a_block_device() -> String {
    let mut devs: Vec<_> = std::fs::read_dir("/sys/block").unwrap().flatten().map(|e| e.path()).collect();
    devs.sort();
    std::fs::read_to_string(devs[0].join("dev")).unwrap().trim().to_string()
}

#[test]
fn every_resource_field_reaches_the_cgroup() {
    let env = Env::start().expect("starting containerd with ferrum");
    let dev = a_block_device();
    let (major, minor) = dev.split_once(':').map(|(a, b)| (a.parse::<i64>().unwrap(), b.parse::<i64>().unwrap())).unwrap();
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
