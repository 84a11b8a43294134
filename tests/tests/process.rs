//! Process attributes from config.json that ctr has no flag for, seen from
//! inside the container: personality, I/O priority, CPU scheduler, time
//! namespace offsets, the exec CPU affinity, and a session keyring of the
//! container's own. (runc 1.1 of this machine knows none of the first five:
//! the expected values come from the spec and the kernel's documentation.)

use std::time::Duration;

use ferrum_tests::containerd::{containerd_config_schema, Schema};
use ferrum_tests::{Env, SpecFile, FERRUM_RUNTIME};
use serde_json::json;

const GRACE: Duration = Duration::from_secs(5);

/// containerd 1.x's ctr reads a --config file into runtime-spec 1.0.2's types,
/// which have no ioPriority, scheduler, execCPUAffinity or timeOffsets: on that
/// lane those fields never reach the shim, and the tests check that they were
/// dropped (the kernel's defaults), so that a containerd that starts passing
/// them is noticed. containerd 2.x passes them.
fn containerd_passes_spec_1_1_fields() -> bool {
    containerd_config_schema().unwrap() == Schema::V3
}

#[test]
fn personality_io_priority_scheduler_and_time_offsets_apply() {
    let env = Env::start().unwrap();
    // Fields 19 and 41 of /proc/self/stat: nice and scheduling policy.
    let script = "uname -m; ionice; cut -d' ' -f19,41 /proc/self/stat; cut -d' ' -f1 /proc/uptime";
    let mut file = SpecFile::new(&env, "attrs", &["sh", "-c", script]).unwrap();
    file.spec["linux"]["personality"] = json!({ "domain": "LINUX32" });
    file.spec["process"]["ioPriority"] = json!({ "class": "IOPRIO_CLASS_BE", "priority": 7 });
    file.spec["process"]["scheduler"] = json!({ "policy": "SCHED_BATCH", "nice": 5 });
    file.spec["linux"]["namespaces"].as_array_mut().unwrap().push(json!({ "type": "time" }));
    file.spec["linux"]["timeOffsets"] = json!({ "boottime": { "secs": 86_400_000 }, "monotonic": { "secs": 1000 } });
    let out = file.run(&env, FERRUM_RUNTIME, &["--rm"]).unwrap();
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    let uptime: f64 = lines[3].parse().unwrap();
    if containerd_passes_spec_1_1_fields() {
        assert_eq!(lines[..3], ["i686", "best-effort: prio 7", "5 3"], "{out}");
        assert!(uptime > 86_400_000.0, "boottime offset missing: uptime {uptime}");
    } else {
        assert_eq!(lines[..3], ["i686", "none: prio 0", "0 0"], "{out}");
        assert!(uptime < 86_400_000.0, "containerd 1.x passed timeOffsets: uptime {uptime}");
    }
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

#[test]
fn a_container_has_its_own_session_keyring_and_execs_get_their_cpu_affinity() {
    let env = Env::start().unwrap();
    let mut file = SpecFile::new(&env, "keys", &["sleep", "600"]).unwrap();
    // Not for the init (the spec says so); ctr's exec copies the container's process.
    file.spec["process"]["execCPUAffinity"] = json!({ "initial": "1", "final": "0" });
    file.run(&env, FERRUM_RUNTIME, &["-d"]).unwrap().assert_ok();
    let keys = std::fs::read_to_string("/proc/keys").unwrap();
    assert!(keys.contains("_ses.keys"), "no session keyring of the container's own:\n{keys}");
    let exec = env.ctr(&["tasks", "exec", "--exec-id", "a", "keys", "grep", "Cpus_allowed_list", "/proc/self/status"]);
    exec.assert_ok();
    let all_cpus = format!("0-{}", std::thread::available_parallelism().unwrap().get() - 1);
    let expected = if containerd_passes_spec_1_1_fields() { "0" } else { all_cpus.as_str() };
    assert_eq!(exec.stdout.split_whitespace().collect::<Vec<_>>(), ["Cpus_allowed_list:", expected], "{exec}");
    env.remove_task("keys");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

#[test]
fn a_bad_attribute_fails_the_container_naming_the_field() {
    let env = Env::start().unwrap();
    let mut cases = vec![("linux", "personality", json!({ "domain": "LINUX", "flags": ["X"] }), "linux.personality.flags")];
    if containerd_passes_spec_1_1_fields() {
        cases.push(("process", "ioPriority", json!({ "class": "IOPRIO_CLASS_BE", "priority": 9 }), "process.ioPriority.priority 9"));
        cases.push(("linux", "timeOffsets", json!({ "realtime": { "secs": 1 } }), "unknown clock \"realtime\""));
    }
    for (i, (section, field, value, message)) in cases.into_iter().enumerate() {
        let id = format!("bad{i}");
        let mut file = SpecFile::new(&env, &id, &["true"]).unwrap();
        file.spec[section][field] = value;
        if field == "timeOffsets" {
            file.spec["linux"]["namespaces"].as_array_mut().unwrap().push(json!({ "type": "time" }));
        }
        let out = file.run(&env, FERRUM_RUNTIME, &["--rm"]).unwrap();
        assert!(!out.success() && out.stderr.contains(message), "{field}: {out}");
        env.ctr(&["containers", "rm", &id]);
    }
    let good = SpecFile::new(&env, "good", &["true"]).unwrap();
    good.run(&env, FERRUM_RUNTIME, &["--rm"]).unwrap().assert_ok();
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

/// This host runs neither AppArmor nor SELinux: a profile or label for either
/// fails the container, under runc (1.1.5: "unable to apply apparmor profile",
/// "selinux label is specified in config, but selinux is disabled") and under
/// ferrum, whose message names the field. (The CRI sets them only when the
/// host has the LSM.)
#[test]
fn lsm_labels_for_lsms_the_host_lacks_fail_as_with_runc() {
    let env = Env::start().unwrap();
    assert!(!std::path::Path::new("/sys/fs/selinux").is_dir(), "this test assumes a host without SELinux");
    let cases = [
        ("apparmorProfile", "cri-containerd.apparmor.d", "apparmor"),
        ("selinuxLabel", "system_u:system_r:container_t:s0", "selinux"),
    ];
    for (i, runtime) in [FERRUM_RUNTIME, "io.containerd.runc.v2"].into_iter().enumerate() {
        for (field, value, lsm) in cases {
            let id = format!("{lsm}{i}");
            let mut file = SpecFile::new(&env, &id, &["true"]).unwrap();
            file.spec["process"][field] = json!(value);
            let out = file.run(&env, runtime, &["--rm"]).unwrap();
            assert!(!out.success() && out.stderr.contains(lsm), "{out}");
            if runtime == FERRUM_RUNTIME {
                assert!(out.stderr.contains(&format!("process.{field}")), "{out}");
            }
            env.ctr(&["containers", "rm", &id]);
        }
    }
    let good = SpecFile::new(&env, "good", &["true"]).unwrap();
    good.run(&env, FERRUM_RUNTIME, &["--rm"]).unwrap().assert_ok();
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}
