//! The config.json every spec case starts from: containerd's default spec
//! (the caller brings it: `ctr oci spec`, or the copy runtime-core's unit fuzz
//! keeps) with every field of the runtime spec set to a value that works on a
//! Linux host, so that mutations reach each field's checks and not only the
//! few containerd's default sets.

use serde_json::{json, Value};

/// `base` with every optional field set. The result must create a container
/// as it is: a failure of an unmutated case is a bug of its own.
pub fn full_spec(mut base: Value) -> Value {
    let process = &mut base["process"];
    if process["args"].is_null() {
        // `ctr oci spec` has none; `ctr run` puts the image's or the user's.
        process["args"] = json!(["sleep", "600"]);
    }
    process["rlimits"] = json!([
        {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 1024},
        {"type": "RLIMIT_NPROC", "soft": 4096, "hard": 4096}
    ]);
    process["oomScoreAdj"] = json!(100);
    process["noNewPrivileges"] = json!(true);
    process["env"] = json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=b"]);
    process["user"] = json!({"uid": 0, "gid": 0, "umask": 18, "additionalGids": [1, 2]});
    process["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 4});
    process["scheduler"] = json!({"policy": "SCHED_OTHER", "nice": 1});
    process["execCPUAffinity"] = json!({"initial": "0", "final": "0"});
    process["consoleSize"] = json!({"height": 24, "width": 80});
    base["hostname"] = json!("fuzz");
    base["domainname"] = json!("fuzz.example");
    base["annotations"] = json!({"org.example/key": "value"});
    base["hooks"] = json!({
        "createContainer": [{"path": "/bin/true", "args": ["true", "a"], "env": ["A=1"], "timeout": 5}],
        "startContainer": [{"path": "/bin/true"}],
        "poststop": [{"path": "/bin/true", "timeout": 5}]
    });
    base["mounts"].as_array_mut().expect("containerd's spec has mounts").push(json!({
        "destination": "/fuzz-tmp", "type": "tmpfs", "source": "tmpfs",
        "options": ["nosuid", "nodev", "size=1m", "mode=755"]
    }));
    let linux = &mut base["linux"];
    linux["sysctl"] = json!({"net.ipv4.ip_forward": "1", "kernel.shmmni": "4096"});
    linux["rootfsPropagation"] = json!("rprivate");
    linux["personality"] = json!({"domain": "LINUX"});
    linux["devices"] = json!([
        {"path": "/dev/fuzz-null", "type": "c", "major": 1, "minor": 3, "fileMode": 438, "uid": 0, "gid": 0}
    ]);
    linux["resources"] = json!({
        "devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
        ],
        "memory": {"limit": 268435456, "reservation": 134217728, "swappiness": 10, "disableOOMKiller": false},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
        "pids": {"limit": 1000}
    });
    linux["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "defaultErrnoRet": 1,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "flags": ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "syscalls": [
            {"names": ["kexec_load", "no_such_syscall"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
                      {"index": 1, "value": 255, "valueTwo": 8, "op": "SCMP_CMP_MASKED_EQ"}]}
        ]
    });
    let namespaces = linux["namespaces"].as_array_mut().expect("containerd's spec has namespaces");
    namespaces.push(json!({"type": "cgroup"}));
    base
}

/// `full_spec` and the fields whose support depends on the host (controllers
/// that may be absent, a user namespace, a time namespace): for the checks
/// that need no container, where every field must be reached.
pub fn every_field(base: Value) -> Value {
    let mut spec = full_spec(base);
    let linux = &mut spec["linux"];
    linux["cgroupsPath"] = json!("/fuzz/c1");
    linux["timeOffsets"] = json!({"monotonic": {"secs": 1, "nanosecs": 0}, "boottime": {"secs": -1}});
    linux["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    linux["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    linux["namespaces"].as_array_mut().expect("full_spec has namespaces").extend([json!({"type": "user"}), json!({"type": "time"})]);
    let resources = &mut linux["resources"];
    resources["hugepageLimits"] = json!([{"pageSize": "2MB", "limit": 1073741824}]);
    resources["network"] = json!({"classID": 1048577, "priorities": [{"name": "eth0", "priority": 1}]});
    resources["rdma"] = json!({"mlx5_0": {"hcaHandles": 3, "hcaObjects": 1000}});
    resources["unified"] = json!({"memory.high": "max", "pids.max": "100"});
    resources["memory"]["swap"] = json!(536870912);
    resources["memory"]["kernelTCP"] = json!(1048576);
    resources["memory"]["checkBeforeUpdate"] = json!(true);
    resources["cpu"]["realtimeRuntime"] = json!(0);
    resources["cpu"]["burst"] = json!(1000);
    resources["cpu"]["idle"] = json!(0);
    resources["blockIO"] = json!({
        "weight": 500, "leafWeight": 300,
        "weightDevice": [{"major": 8, "minor": 0, "weight": 500, "leafWeight": 300}],
        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
        "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}]
    });
    spec["process"]["apparmorProfile"] = json!("fuzz-profile");
    spec["process"]["selinuxLabel"] = json!("system_u:system_r:container_t:s0");
    spec["process"]["capabilities"]["ambient"] = json!(["CAP_NET_BIND_SERVICE", "CAP_BPF"]);
    spec["hooks"]["prestart"] = json!([{"path": "/bin/true"}]);
    spec["hooks"]["createRuntime"] = json!([{"path": "/bin/true", "args": ["true"]}]);
    spec["hooks"]["poststart"] = json!([{"path": "/bin/true"}]);
    spec["linux"]["seccomp"]["listenerPath"] = json!("/run/fuzz-listener.sock");
    spec["linux"]["seccomp"]["listenerMetadata"] = json!("meta");
    spec["linux"]["seccomp"]["syscalls"].as_array_mut().expect("full_spec has rules").push(json!(
        {"names": ["mount"], "action": "SCMP_ACT_NOTIFY"}
    ));
    spec
}
