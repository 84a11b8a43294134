//! Namespaces through ctr -> containerd -> ferrum: new ones per container, and
//! joining another container's (as pod containers join their sandbox's).

use std::time::Duration;

use ferrum_tests::Env;

const GRACE: Duration = Duration::from_secs(5);

#[test]
fn a_container_joins_another_ones_pid_and_network_namespaces() {
    let (env, image) = Env::with_busybox();
    env.run_on_ferrum(&["-d"], &image, "sandbox", &["sleep", "600"]).assert_ok();
    let ls = env.ctr(&["tasks", "ls"]);
    let pid: i32 = ls
        .stdout
        .lines()
        .find(|l| l.starts_with("sandbox"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("no pid for sandbox: {ls}"));
    let net = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();

    let pid_ns = format!("pid:/proc/{pid}/ns/pid");
    let net_ns = format!("network:/proc/{pid}/ns/net");
    let flags = ["--rm", "--with-ns", &pid_ns, "--with-ns", &net_ns];
    let out = env.run_on_ferrum(&flags, &image, "app", &["sh", "-c", "echo me=$$; cat /proc/1/comm; readlink /proc/self/ns/net"]);
    out.assert_ok();
    // Not pid 1: the sandbox's sleep is init of the shared pid namespace.
    assert!(out.stdout.starts_with("me=2\nsleep\n"), "{out}");
    assert!(out.stdout.contains(&*net.to_string_lossy()), "shares the sandbox's network: {out}");

    env.remove_task("sandbox");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

#[test]
fn a_new_network_namespace_has_loopback_up_as_with_runc() {
    let (env, image) = Env::with_busybox();
    let out = env.run_on_ferrum(&["--rm"], &image, "lo", &["ip", "-o", "link", "show", "lo"]);
    out.assert_ok();
    assert!(out.stdout.contains("LOOPBACK,UP"), "{out}");
    assert_eq!(env.leftovers(), Vec::<String>::new(), "left behind");
}

#[test]
fn a_user_namespace_from_uidmap_runs_as_its_root() {
    let (env, image) = Env::with_busybox();
    let maps = ["--rm", "--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"];
    let out = env.run_on_ferrum(&maps, &image, "userns", &["sh", "-c", "id -u; cat /proc/self/uid_map; grep CapEff /proc/self/status"]);
    out.assert_ok();
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(words[..4], ["0", "0", "100000", "65536"], "{out}");
    assert_ne!(words[5], "0000000000000000", "root of the namespace has no capabilities: {out}");
    assert_eq!(env.leftovers(), Vec::<String>::new(), "left behind");
}

#[test]
fn in_a_user_namespace_its_root_owns_what_init_mounts() {
    let (env, image) = Env::with_busybox();
    let maps = ["--rm", "--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"];
    let out = env.run_on_ferrum(&maps, &image, "mq", &["stat", "-c", "%u:%g", "/dev/mqueue", "/dev/shm"]);
    out.assert_ok();
    assert_eq!(out.stdout.split_whitespace().collect::<Vec<_>>(), ["0:0", "0:0"], "{out}");
    assert_eq!(env.leftovers(), Vec::<String>::new(), "left behind");
}
