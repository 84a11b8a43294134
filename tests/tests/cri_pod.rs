//! Pod semantics through the CRI: which namespaces containers share with the
//! sandbox and the host, the securityContext fields the CRI maps to the OCI
//! spec, and bad input that must fail one call and nothing else. Every check
//! runs under ferrum and under runc as the reference.

use std::collections::HashMap;
use std::fs;
use std::time::Duration;

use ferrum_tests::cri::api::security_profile::ProfileType;
use ferrum_tests::cri::api::{
    Capability, ContainerConfig, Int64Value, NamespaceMode, PodSandboxConfig, SecurityProfile,
};
use ferrum_tests::cri::{
    pod_security_context, security_context, CriEnv, CriOptions, Handler, Network, BRIDGE_SUBNET,
};
use ferrum_tests::for_each_handler;

const GRACE: Duration = Duration::from_secs(10);

fn sleeper(cri: &CriEnv, pod: &PodSandboxConfig, name: &str) -> ContainerConfig {
    cri.container_config(pod, name, &["sleep", "600"])
}

/// `net:[4026531840]` for each of `kinds`, as the container sees itself.
fn namespaces_inside(cri: &CriEnv, id: &str, kinds: &[&str]) -> Vec<String> {
    kinds
        .iter()
        .map(|k| {
            cri.exec_ok(id, &["readlink", &format!("/proc/self/ns/{k}")])
                .trim()
                .to_string()
        })
        .collect()
}

fn namespaces_of_pid(pid: &str, kinds: &[&str]) -> Vec<String> {
    kinds
        .iter()
        .map(|k| {
            let link =
                fs::read_link(format!("/proc/{pid}/ns/{k}")).expect("reading a namespace link");
            link.display().to_string()
        })
        .collect()
}

fn sandbox_pid(cri: &CriEnv, pod_id: &str) -> String {
    let (_, info) = cri.pod_status(pod_id);
    info["pid"]
        .as_u64()
        .expect("the sandbox's pid in the verbose status")
        .to_string()
}

/// App containers join the sandbox's network, IPC and UTS namespaces (so its
/// hostname too), and each has a pid namespace of its own unless the pod
/// shares one, in which case they see the sandbox's process.
fn containers_share_the_sandbox_namespaces(handler: Handler) {
    let cri = CriEnv::start();
    let pod = cri.pod_config("shared");
    let pod_id = cri.run_pod(handler, &pod).expect("RunPodSandbox");
    let a = cri.run_container(&pod_id, &pod, &sleeper(&cri, &pod, "a"));
    let b = cri.run_container(&pod_id, &pod, &sleeper(&cri, &pod, "b"));
    let shared = ["net", "ipc", "uts"];
    let sandbox = namespaces_of_pid(&sandbox_pid(&cri, &pod_id), &shared);
    assert_eq!(namespaces_inside(&cri, &a, &shared), sandbox);
    assert_eq!(namespaces_inside(&cri, &b, &shared), sandbox);
    assert_ne!(
        sandbox,
        namespaces_of_pid("self", &shared),
        "the pod has namespaces of its own"
    );
    assert_eq!(cri.exec_ok(&a, &["hostname"]).trim(), "shared");
    assert_ne!(
        namespaces_inside(&cri, &a, &["pid"]),
        namespaces_inside(&cri, &b, &["pid"])
    );
    assert_eq!(
        cri.exec_ok(&a, &["cat", "/proc/1/cmdline"]),
        "sleep\x00600\0"
    );
    cri.remove_pod_fully(&pod_id);

    let mut pod = cri.pod_config("sharepid");
    let options = pod_security_context(&mut pod)
        .namespace_options
        .as_mut()
        .unwrap();
    options.pid = NamespaceMode::Pod as i32;
    let pod_id = cri.run_pod(handler, &pod).expect("RunPodSandbox");
    let a = cri.run_container(&pod_id, &pod, &sleeper(&cri, &pod, "a"));
    let b = cri.run_container(&pod_id, &pod, &sleeper(&cri, &pod, "b"));
    let sandbox = namespaces_of_pid(&sandbox_pid(&cri, &pod_id), &["pid"]);
    assert_eq!(namespaces_inside(&cri, &a, &["pid"]), sandbox);
    assert_eq!(namespaces_inside(&cri, &b, &["pid"]), sandbox);
    assert_eq!(
        cri.exec_ok(&a, &["cat", "/proc/1/cmdline"]),
        "/bin/sleep\x002147483647\0"
    );
    let ps = cri.exec_ok(&b, &["ps", "-o", "args"]);
    assert_eq!(
        ps.matches("sleep 600").count(),
        2,
        "both containers' processes: {ps}"
    );
    cri.remove_pod_fully(&pod_id);
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

/// hostNetwork, hostPID and hostIPC put the containers in the host's namespaces.
fn host_namespaces(handler: Handler) {
    let cri = CriEnv::start();
    let mut pod = cri.pod_config("host");
    // kubelet sends no hostname for a hostNetwork pod: it has the node's.
    pod.hostname.clear();
    let options = pod_security_context(&mut pod)
        .namespace_options
        .as_mut()
        .unwrap();
    options.network = NamespaceMode::Node as i32;
    options.pid = NamespaceMode::Node as i32;
    options.ipc = NamespaceMode::Node as i32;
    let pod_id = cri.run_pod(handler, &pod).expect("RunPodSandbox");
    let id = cri.run_container(&pod_id, &pod, &sleeper(&cri, &pod, "app"));
    let kinds = ["net", "pid", "ipc"];
    assert_eq!(
        namespaces_inside(&cri, &id, &kinds),
        namespaces_of_pid("self", &kinds)
    );
    assert_ne!(
        namespaces_inside(&cri, &id, &["mnt"]),
        namespaces_of_pid("self", &["mnt"])
    );
    cri.remove_pod_fully(&pod_id);
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

/// `Name:\tvalue` lines of /proc/self/status inside the container.
fn status_inside(cri: &CriEnv, id: &str) -> HashMap<String, String> {
    cri.exec_ok(id, &["cat", "/proc/self/status"])
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn cap_bit(caps: &str, bit: u32) -> bool {
    u64::from_str_radix(caps, 16).expect("hex capability mask") & (1 << bit) != 0
}

const CAP_CHOWN: u32 = 0;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// runAsUser/runAsGroup/supplementalGroups, readOnlyRootFilesystem,
/// capabilities add/drop, allowPrivilegeEscalation=false, seccomp
/// RuntimeDefault, sysctls, and the CRI's read-only /proc/sys.
fn security_context_fields(handler: Handler) {
    let cri = CriEnv::start();
    let mut pod = cri.pod_config("secure");
    let sysctls = pod.linux.as_mut().unwrap();
    sysctls
        .sysctls
        .insert("net.ipv4.ip_unprivileged_port_start".into(), "1000".into());
    sysctls
        .sysctls
        .insert("kernel.shm_rmid_forced".into(), "1".into());
    let pod_id = cri.run_pod(handler, &pod).expect("RunPodSandbox");

    let mut config = sleeper(&cri, &pod, "user");
    let sc = security_context(&mut config);
    sc.run_as_user = Some(Int64Value { value: 1000 });
    sc.run_as_group = Some(Int64Value { value: 2000 });
    sc.supplemental_groups = vec![3000];
    sc.readonly_rootfs = true;
    sc.no_new_privs = true;
    sc.capabilities = Some(Capability {
        add_capabilities: vec!["NET_ADMIN".into()],
        drop_capabilities: vec!["CHOWN".into()],
        ..Default::default()
    });
    sc.seccomp = Some(SecurityProfile {
        profile_type: ProfileType::RuntimeDefault as i32,
        ..Default::default()
    });
    let id = cri.run_container(&pod_id, &pod, &config);
    let status = status_inside(&cri, &id);
    assert_eq!(
        status["Uid"].split_whitespace().next(),
        Some("1000"),
        "{status:?}"
    );
    assert_eq!(
        status["Gid"].split_whitespace().next(),
        Some("2000"),
        "{status:?}"
    );
    assert!(
        status["Groups"].split_whitespace().any(|g| g == "3000"),
        "{status:?}"
    );
    assert_eq!(status["NoNewPrivs"], "1");
    assert_eq!(status["Seccomp"], "2");
    assert!(
        cap_bit(&status["CapBnd"], CAP_NET_ADMIN) && !cap_bit(&status["CapBnd"], CAP_CHOWN),
        "{status:?}"
    );
    assert!(!cap_bit(&status["CapBnd"], CAP_SYS_ADMIN), "{status:?}");
    let touch = cri
        .exec_sync(&id, &["touch", "/tmp/x"], 30)
        .expect("ExecSync");
    assert_ne!(touch.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&touch.stderr).contains("Read-only file system"),
        "{touch:?}"
    );
    // RuntimeDefault refuses what Docker's default profile refuses.
    let unshare = cri
        .exec_sync(&id, &["unshare", "-U", "true"], 30)
        .expect("ExecSync");
    assert_ne!(unshare.exit_code, 0);
    assert_eq!(
        cri.exec_ok(
            &id,
            &[
                "cat",
                "/proc/sys/net/ipv4/ip_unprivileged_port_start",
                "/proc/sys/kernel/shm_rmid_forced"
            ]
        ),
        "1000\n1\n"
    );
    // Masked: the host's /sys/firmware has entries, the container's none.
    assert_eq!(cri.exec_ok(&id, &["ls", "-A", "/sys/firmware"]), "");
    let mountinfo = cri.exec_ok(&id, &["cat", "/proc/self/mountinfo"]);
    let proc_sys = mountinfo
        .lines()
        .find(|l| l.contains(" /proc/sys "))
        .unwrap_or_else(|| panic!("{mountinfo}"));
    assert!(
        proc_sys
            .split_whitespace()
            .nth(5)
            .is_some_and(|o| o.split(',').any(|o| o == "ro")),
        "{proc_sys}"
    );

    // A root container keeps its capabilities until told otherwise.
    let mut root = sleeper(&cri, &pod, "root");
    security_context(&mut root).capabilities = Some(Capability {
        drop_capabilities: vec!["CHOWN".into()],
        ..Default::default()
    });
    let root = cri.run_container(&pod_id, &pod, &root);
    let status = status_inside(&cri, &root);
    assert!(
        !cap_bit(&status["CapEff"], CAP_CHOWN) && !cap_bit(&status["CapEff"], CAP_NET_ADMIN),
        "{status:?}"
    );
    let chown = cri
        .exec_sync(&root, &["chown", "65534", "/tmp"], 30)
        .expect("ExecSync");
    assert_ne!(chown.exit_code, 0, "CHOWN was dropped");
    cri.remove_pod_fully(&pod_id);
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

/// seccomp Unconfined and Localhost (a profile file on the node), and a
/// privileged container in a privileged pod.
fn seccomp_profiles_and_privileged(handler: Handler) {
    let cri = CriEnv::start();
    let mut pod = cri.pod_config("priv");
    pod_security_context(&mut pod).privileged = true;
    let pod_id = cri.run_pod(handler, &pod).expect("RunPodSandbox");

    let mut unconfined = sleeper(&cri, &pod, "unconfined");
    security_context(&mut unconfined).seccomp = Some(SecurityProfile {
        profile_type: ProfileType::Unconfined as i32,
        ..Default::default()
    });
    let unconfined = cri.run_container(&pod_id, &pod, &unconfined);
    assert_eq!(status_inside(&cri, &unconfined)["Seccomp"], "0");

    let profile = cri.dir().join("no-mkdir.json");
    fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let mut localhost = sleeper(&cri, &pod, "localhost");
    security_context(&mut localhost).seccomp = Some(SecurityProfile {
        profile_type: ProfileType::Localhost as i32,
        localhost_ref: profile.display().to_string(),
    });
    let localhost = cri.run_container(&pod_id, &pod, &localhost);
    assert_eq!(status_inside(&cri, &localhost)["Seccomp"], "2");
    let mkdir = cri
        .exec_sync(&localhost, &["mkdir", "/tmp/d"], 30)
        .expect("ExecSync");
    assert_ne!(mkdir.exit_code, 0, "the profile refuses mkdir");
    assert!(
        String::from_utf8_lossy(&mkdir.stderr).contains("not permitted"),
        "{mkdir:?}"
    );
    cri.exec_ok(&localhost, &["touch", "/tmp/f"]);

    let mut privileged = sleeper(&cri, &pod, "privileged");
    security_context(&mut privileged).privileged = true;
    let privileged = cri.run_container(&pod_id, &pod, &privileged);
    let status = status_inside(&cri, &privileged);
    let host = fs::read_to_string("/proc/self/status").unwrap();
    let host_caps = host
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim();
    assert_eq!(
        status["CapEff"], host_caps,
        "all of the host's capabilities"
    );
    assert_eq!(status["Seccomp"], "0");
    // The host's devices, and a writable /sys.
    cri.exec_ok(&privileged, &["test", "-c", "/dev/kmsg"]);
    let sys = cri.exec_ok(&privileged, &["grep", " /sys ", "/proc/self/mountinfo"]);
    assert!(
        sys.split_whitespace()
            .nth(5)
            .is_some_and(|o| o.split(',').any(|o| o == "rw")),
        "{sys}"
    );
    cri.remove_pod_fully(&pod_id);
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

/// Bad input fails that one call with a message naming what was wrong; the
/// pod, its shim and the other containers carry on, and nothing is left.
fn bad_input_fails_one_call(handler: Handler) {
    let cri = CriEnv::start();
    let pod = cri.pod_config("bad");
    let pod_id = cri.run_pod(handler, &pod).expect("RunPodSandbox");
    let good = cri.run_container(&pod_id, &pod, &sleeper(&cri, &pod, "good"));
    let shims = cri.shims(handler);

    let mut missing = sleeper(&cri, &pod, "missing-profile");
    let absent = cri.dir().join("absent.json").display().to_string();
    security_context(&mut missing).seccomp = Some(SecurityProfile {
        profile_type: ProfileType::Localhost as i32,
        localhost_ref: absent.clone(),
    });
    let err = cri
        .create_container(&pod_id, &pod, &missing)
        .expect_err("a missing seccomp profile");
    assert!(err.message().contains(&absent), "{err}");

    if handler == Handler::Ferrum {
        // runc 1.1 ignores capabilities it does not know (with a warning);
        // ferrum refuses them.
        let mut unknown = sleeper(&cri, &pod, "unknown-cap");
        security_context(&mut unknown).capabilities = Some(Capability {
            add_capabilities: vec!["NOPE".into()],
            ..Default::default()
        });
        // containerd's CRI creates the task (and so asks the runtime) only in StartContainer.
        let id = cri
            .create_container(&pod_id, &pod, &unknown)
            .expect("CreateContainer");
        let err = cri.start_container(&id).expect_err("an unknown capability");
        assert!(err.message().contains("CAP_NOPE"), "{err}");
        cri.remove_container(&id).expect("RemoveContainer");
    }

    // A sysctl no namespace of the pod holds fails the sandbox it was asked for.
    let mut host_wide = cri.pod_config("sysctl");
    host_wide
        .linux
        .as_mut()
        .unwrap()
        .sysctls
        .insert("kernel.panic".into(), "5".into());
    let err = cri
        .run_pod(handler, &host_wide)
        .expect_err("a host-wide sysctl");
    assert!(err.message().contains("kernel.panic"), "{err}");

    assert_eq!(cri.shims(handler), shims, "the pod's shim serves on");
    assert_eq!(cri.exec_ok(&good, &["echo", "alive"]), "alive\n");
    let after = cri.run_container(&pod_id, &pod, &sleeper(&cri, &pod, "after"));
    assert_eq!(cri.exec_ok(&after, &["echo", "ok"]), "ok\n");
    cri.remove_pod_fully(&pod_id);
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

/// Two pods on the real CNI bridge plugin (inside containerd's own network
/// namespace) reach each other on the addresses the CRI reports.
fn pods_reach_each_other(handler: Handler) {
    let cri = CriEnv::start_with(CriOptions {
        network: Network::Bridge,
        ..Default::default()
    })
    .expect("starting containerd in a network namespace of its own");
    let mut pods = Vec::new();
    for name in ["left", "right"] {
        let pod = cri.pod_config(name);
        let pod_id = cri.run_pod(handler, &pod).expect("RunPodSandbox");
        let ip = cri.pod_status(&pod_id).0.network.expect("pod network").ip;
        assert!(ip.starts_with("10.99.0."), "{ip} not from {BRIDGE_SUBNET}");
        let mut config = sleeper(&cri, &pod, "app");
        // ping needs a raw socket; containerd 2.x no longer grants NET_RAW by default.
        security_context(&mut config).capabilities = Some(Capability {
            add_capabilities: vec!["NET_RAW".into()],
            ..Default::default()
        });
        let id = cri.run_container(&pod_id, &pod, &config);
        pods.push((pod_id, ip, id));
    }
    assert_ne!(pods[0].1, pods[1].1, "each pod has an address of its own");
    let addr = cri.exec_ok(&pods[0].2, &["ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("{}/24", pods[0].1)), "{addr}");
    for (from, to) in [(0, 1), (1, 0)] {
        let ping = cri.exec_ok(&pods[from].2, &["ping", "-c", "1", "-W", "5", &pods[to].1]);
        assert!(ping.contains("1 packets received"), "{ping}");
    }
    for (pod_id, _, _) in &pods {
        cri.remove_pod_fully(pod_id);
    }
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

for_each_handler!(
    pods_reach_each_other,
    containers_share_the_sandbox_namespaces,
    host_namespaces,
    security_context_fields,
    seccomp_profiles_and_privileged,
    bad_input_fails_one_call,
);
