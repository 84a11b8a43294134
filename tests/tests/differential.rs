//! Differential tests: the same `ctr run` flags (or the same config.json) under
//! containerd's runc shim and under ferrum, with tests/src/probe.sh inside
//! printing what the container sees: capabilities, NoNewPrivs, seccomp mode, ids
//! and id maps, cwd, umask, env, limits, masked and read-only paths, the mount
//! table, /dev, network devices and what unshare/mount/chown/mknod do. The two
//! prints must be identical; a deliberate difference is normalised only in the
//! test that allows it, saying why.
//!
//! A third run drives the ferrum CLI through containerd's runc shim (as
//! runc is driven): its print must equal the shim's, so the CLI behaves as
//! runc wherever ferrum does.
//!
//! All containers run in one containerd with its default snapshotter, so the
//! runtime is the only thing that differs. The reference runc is the host's
//! (Debian's 1.1.5) under either containerd lane.

use std::path::PathBuf;
use std::time::Duration;

use ferrum_tests::probe::{Probe, PROBE};
use ferrum_tests::{CtrOutput, Env, SpecFile, FERRUM_CLI, FERRUM_RUNTIME, RUNC_RUNTIME};
use serde_json::{json, Value};

const GRACE: Duration = Duration::from_secs(5);
/// runc, ferrum's shim, and the ferrum CLI under containerd's runc-v2 shim.
const RUNTIMES: [(&str, &str); 3] = [("runc", RUNC_RUNTIME), ("ferrum", FERRUM_RUNTIME), ("ferrum-cli", FERRUM_CLI)];
/// For ctr flags that become task options: those replace the runc shim's
/// binary name, so runc would run in the CLI's place.
const SHIMS: &[(&str, &str)] = &[RUNTIMES[0], RUNTIMES[1]];

/// Runs the probe once per runtime via `run(runtime, container id)`, checks
/// nothing is left behind and that the CLI's container is the shim's, and
/// returns (runc's, ferrum's) prints.
fn probe_both(env: &Env, run: impl Fn(&str, &str) -> CtrOutput) -> (Probe, Probe) {
    probe_on(env, &RUNTIMES, run)
}

fn probe_on(env: &Env, runtimes: &[(&str, &str)], run: impl Fn(&str, &str) -> CtrOutput) -> (Probe, Probe) {
    let mut probes: Vec<Probe> = runtimes
        .iter()
        .map(|(name, runtime)| {
            let out = run(runtime, name);
            out.assert_ok();
            Probe::parse(&out.stdout).unwrap_or_else(|e| panic!("{name}: {e}\n{out}"))
        })
        .collect();
    assert_eq!(
        env.leftovers_after(GRACE),
        Vec::<String>::new(),
        "left behind"
    );
    if let Some(cli) = probes.get(2) {
        assert_cli_same(env, &probes[1], cli);
    }
    probes.truncate(2);
    let ferrum = probes.pop().expect("two runtimes");
    (probes.pop().expect("two runtimes"), ferrum)
}

/// The ferrum CLI did run (not runc in its place) and its container is the
/// shim's: the same runtime-core, so no difference is allowed.
#[track_caller]
fn assert_cli_same(env: &Env, ferrum: &Probe, cli: &Probe) {
    let calls = env.cli_calls();
    assert!(
        calls.lines().any(|l| l.contains(" create ") && l.ends_with(" ferrum-cli")),
        "containerd's runc shim did not create ferrum-cli with the ferrum CLI:\n{calls}"
    );
    let diff = ferrum.differences("ferrum's shim", cli, "the ferrum CLI");
    assert!(diff.is_empty(), "the ferrum CLI's container differs from the shim's:\n{diff}");
}

/// `ctr run --rm FLAGS… busybox ID sh -c PROBE` under each runtime.
fn probe_flags(env: &Env, image: &str, flags: &[&str]) -> (Probe, Probe) {
    probe_flags_on(env, &RUNTIMES, image, flags)
}

fn probe_flags_on(env: &Env, runtimes: &[(&str, &str)], image: &str, flags: &[&str]) -> (Probe, Probe) {
    let mut flags = flags.to_vec();
    flags.push("--rm");
    probe_on(env, runtimes, |runtime, id| {
        env.run_on(runtime, &flags, image, id, &["sh", "-c", PROBE])
    })
}

#[track_caller]
fn assert_same(runc: &Probe, ferrum: &Probe) {
    let diff = runc.differences("runc", ferrum, "ferrum");
    assert!(
        diff.is_empty(),
        "ferrum's container differs from runc's:\n{diff}"
    );
}

/// The common case: one Env, the probe under both runtimes with `flags`, identical.
fn same_with_flags(flags: &[&str]) {
    let (env, image) = Env::with_busybox();
    let (runc, ferrum) = probe_flags(&env, &image, flags);
    assert_same(&runc, &ferrum);
}

#[test]
fn default_container() {
    same_with_flags(&[]);
}

#[test]
fn containerds_default_seccomp_profile() {
    same_with_flags(&["--seccomp"]);
}

#[test]
fn a_custom_seccomp_profile() {
    let (env, image) = Env::with_busybox();
    // Errno for mkdir and mknod, a kill for an unused syscall, an argument
    // comparison (personality(0xffffffff) is the query form), an unknown name.
    let profile = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["mknod", "mknodat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["acct"], "action": "SCMP_ACT_KILL"},
            {"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
             "args": [{"index": 0, "value": 268435456, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["no_such_syscall"], "action": "SCMP_ACT_KILL"}
        ]
    });
    let path = env.root_dir().join("profile.json");
    std::fs::write(&path, profile.to_string()).unwrap();
    let path = path.display().to_string();
    let (runc, ferrum) = probe_flags(&env, &image, &["--seccomp", "--seccomp-profile", &path]);
    assert_same(&runc, &ferrum);
    let actions = ferrum.section("actions").join("\n");
    assert!(
        actions.contains("mkdir -p /tmp/probe-m -> 1"),
        "the profile is in force: {actions}"
    );
}

#[test]
fn read_only_rootfs() {
    same_with_flags(&["--read-only"]);
}

#[test]
fn privileged() {
    same_with_flags(&["--privileged"]);
}

#[test]
fn capabilities_added_and_dropped() {
    same_with_flags(&[
        "--cap-add",
        "CAP_SYS_ADMIN",
        "--cap-add",
        "CAP_NET_ADMIN",
        "--cap-drop",
        "CAP_NET_RAW",
        "--cap-drop",
        "CAP_CHOWN",
    ]);
}

#[test]
fn bind_mounts_read_only_and_read_write() {
    let (env, image) = Env::with_busybox();
    let dir = |name: &str| -> PathBuf {
        let d = env.root_dir().join(name);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("file"), name).unwrap();
        d
    };
    let (ro, rw) = (dir("ro"), dir("rw"));
    let ro = format!("type=bind,src={},dst=/data,options=rbind:ro", ro.display());
    let rw = format!("type=bind,src={},dst=/rw,options=rbind:rw", rw.display());
    let (runc, ferrum) = probe_flags(&env, &image, &["--mount", &ro, "--mount", &rw]);
    assert_same(&runc, &ferrum);
}

#[test]
fn host_network() {
    same_with_flags(&["--net-host"]);
}

#[test]
fn user_namespace_from_uidmap_and_gidmap() {
    let (env, image) = Env::with_busybox();
    let flags = ["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"];
    let (mut runc, ferrum) = probe_flags_on(&env, SHIMS, &image, &flags);
    // Deliberate: runc mounts /dev/mqueue after setresuid(0) but before
    // setresgid(0) in the new user namespace, so its group is the unmapped
    // host root (65534), which no one in the container can be; ferrum's init
    // is the namespace's root user and group when it mounts it.
    let mqueue = "/dev/mqueue directory 1777";
    runc.replace_line(
        "dev",
        &format!("{mqueue} 0:65534 0:0"),
        &format!("{mqueue} 0:0 0:0"),
    );
    assert_same(&runc, &ferrum);
}

#[test]
fn new_privileges_allowed() {
    same_with_flags(&["--allow-new-privs"]);
}

#[test]
fn environment_and_working_directory() {
    same_with_flags(&[
        "--env",
        "FOO=bar baz",
        "--env",
        "EMPTY=",
        "--cwd",
        "/made/by/the/runtime",
    ]);
}

#[test]
fn a_terminal() {
    let (env, image) = Env::with_busybox();
    let (runc, ferrum) = probe_both(&env, |runtime, id| {
        env.ctr_in_terminal(&[
            "run",
            "--rm",
            "-t",
            "--runtime",
            runtime,
            &image,
            id,
            "sh",
            "-c",
            PROBE,
        ])
    });
    assert_same(&runc, &ferrum);
    assert!(
        ferrum.section("process")[0].contains("tty=/dev/pts/0"),
        "{ferrum:?}"
    );
}

/// The probe under both runtimes from containerd's default spec with the
/// probe as process, edited by `edit` (see SpecFile: `ctr run --config`).
fn probe_config(edit: &dyn Fn(&mut Value)) -> (Probe, Probe) {
    let (env, _) = Env::with_busybox();
    probe_both(&env, |runtime, id| {
        let mut file = SpecFile::new(&env, id, &["sh", "-c", PROBE]).unwrap();
        edit(&mut file.spec);
        let mut out = file.run(&env, runtime, &["--rm"]).unwrap();
        // Each runtime's container has a rootfs directory of its own.
        out.stdout = out
            .stdout
            .replace(&*file.rootfs.to_string_lossy(), "(rootfs)");
        out
    })
}

#[test]
fn a_custom_user_umask_and_groups_from_config_json() {
    let (runc, ferrum) = probe_config(&|spec| {
        let process = &mut spec["process"];
        process["user"] =
            json!({ "uid": 1000, "gid": 1001, "additionalGids": [10, 20, 1001], "umask": 63 });
        process["cwd"] = json!("/tmp");
        process["env"] = json!(["PATH=/bin", "HOME=/home/u", "LANG=C.UTF-8"]);
        process["noNewPrivileges"] = json!(true);
        process["rlimits"] = json!([
            { "type": "RLIMIT_NOFILE", "hard": 512, "soft": 256 },
            { "type": "RLIMIT_NPROC", "hard": 100, "soft": 50 }
        ]);
        spec["hostname"] = json!("probe-host");
    });
    assert_same(&runc, &ferrum);
    assert!(
        ferrum.section("id")[0].starts_with("uid=1000 gid=1001"),
        "{ferrum:?}"
    );
}

#[test]
fn ambient_and_inheritable_capabilities_from_config_json() {
    let (runc, ferrum) = probe_config(&|spec| {
        let caps = ["CAP_NET_BIND_SERVICE", "CAP_KILL"];
        let process = &mut spec["process"];
        process["user"] = json!({ "uid": 1000, "gid": 1000 });
        for set in [
            "bounding",
            "effective",
            "permitted",
            "inheritable",
            "ambient",
        ] {
            process["capabilities"][set] = json!(caps);
        }
    });
    assert_same(&runc, &ferrum);
}

/// `runc spec`'s own config asks for ambient capabilities with no
/// inheritable set: the kernel cannot raise them, runc leaves them out and
/// runs the container; so must we (we failed it, found by `scripts/cli-bench`).
#[test]
fn ambient_capabilities_without_inheritable_are_left_out() {
    let (runc, ferrum) = probe_config(&|spec| {
        let caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
        let process = &mut spec["process"];
        for set in ["bounding", "effective", "permitted", "ambient"] {
            process["capabilities"][set] = json!(caps);
        }
        process["capabilities"]["inheritable"] = json!([]);
    });
    assert_same(&runc, &ferrum);
}

/// A startContainer hook runs in the container right before the user's
/// program: the probe as that hook must see the same under every runtime.
#[test]
fn a_start_container_hook_sees_the_same_container() {
    let (env, _) = Env::with_busybox();
    let [runc, ferrum, cli] = RUNTIMES.map(|(name, runtime)| {
        let mut file = SpecFile::new(&env, name, &["true"]).unwrap();
        let script = format!("{{\n{PROBE}\n}} > /tmp/hook-probe 2>&1");
        file.spec["hooks"] = json!({
            "startContainer": [{ "path": "/bin/sh", "args": ["sh", "-c", script], "env": ["PATH=/bin", "IN_HOOK=1"] }]
        });
        // runc runs the hook with the process's no_new_privs and seccomp filter in force.
        file.spec["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{ "names": ["mknod", "mknodat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1 }]
        });
        file.run(&env, runtime, &["--rm"]).unwrap().assert_ok();
        let out = std::fs::read_to_string(file.rootfs.join("tmp/hook-probe")).unwrap();
        let out = out.replace(&*file.rootfs.to_string_lossy(), "(rootfs)");
        Probe::parse(&out).unwrap_or_else(|e| panic!("{name}: {e}"))
    });
    assert_eq!(
        env.leftovers_after(GRACE),
        Vec::<String>::new(),
        "left behind"
    );
    assert_same(&runc, &ferrum);
    assert_cli_same(&env, &ferrum, &cli);
    assert!(
        ferrum.section("env").iter().any(|l| l == "IN_HOOK=1"),
        "{ferrum:?}"
    );
}

#[test]
fn without_pivot_root() {
    // The CLI's --no-pivot is compared with runc's in cli.rs (direct).
    let (env, image) = Env::with_busybox();
    let (runc, ferrum) = probe_flags_on(&env, SHIMS, &image, &["--no-pivot"]);
    assert_same(&runc, &ferrum);
}

/// An exec joins the running container: the probe as an exec, as another
/// user and in another directory, sees the same under both runtimes.
#[test]
fn an_exec_sees_the_same_container() {
    let (env, image) = Env::with_busybox();
    let (runc, ferrum) = probe_both(&env, |runtime, id| {
        env.run_on(runtime, &["-d"], &image, id, &["sleep", "600"])
            .assert_ok();
        let exec = [
            "tasks",
            "exec",
            "--exec-id",
            "probe",
            "--user",
            "65534",
            "--cwd",
            "/tmp",
            id,
            "sh",
            "-c",
            PROBE,
        ];
        let out = env.ctr(&exec);
        env.remove_task(id);
        out
    });
    assert_same(&runc, &ferrum);
    assert!(
        ferrum.section("id")[0].starts_with("uid=65534"),
        "{ferrum:?}"
    );
}
