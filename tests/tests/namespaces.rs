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

/// A user namespace that exists already (a pod's, which containerd 2.x makes
/// for `hostUsers: false` and names by path): the container joins it, and its
/// new mount, UTS, IPC and pid namespaces are owned by it — made after the
/// join, so that init, root of that user namespace, may mount. A second
/// container joins it and the first one's pid namespace too (a pod with a
/// shared process namespace). runc is the reference.
#[test]
fn containers_join_an_existing_user_namespace_as_pods_do() {
    use ferrum_tests::{SpecFile, FERRUM_RUNTIME, RUNC_RUNTIME};
    use serde_json::json;
    let env = Env::start().unwrap();
    // The user namespace's holder, killed on drop (also when the test fails).
    struct Holder(std::process::Child);
    impl Drop for Holder {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let holder = Holder(std::process::Command::new("unshare").args(["--user", "sleep", "600"]).spawn().unwrap());
    let userns = format!("/proc/{}/ns/user", holder.0.id());
    // Its maps, written once unshare made it (it then execs sleep, same process).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::fs::read_link(&userns).ok() == std::fs::read_link("/proc/self/ns/user").ok() {
        assert!(std::time::Instant::now() < deadline, "unshare never made its user namespace");
        std::thread::sleep(Duration::from_millis(10));
    }
    for file in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{}/{file}", holder.0.id()), "0 100000 65536\n").unwrap();
    }
    // The namespace's maps, as containerd gives them with its path (runc wants them).
    let with_maps = |file: &mut SpecFile| {
        let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        file.spec["linux"]["uidMappings"] = map.clone();
        file.spec["linux"]["gidMappings"] = map;
    };
    let script = "cat /proc/self/uid_map; echo pid=$$; mkdir -p /tmp/m && mount -t tmpfs t /tmp/m && echo mounted; readlink /proc/self/ns/user";
    for (runtime, tag) in [(RUNC_RUNTIME, "runc"), (FERRUM_RUNTIME, "ferrum")] {
        let sandbox = format!("{tag}-sandbox");
        let mut file = SpecFile::new(&env, &sandbox, &["sleep", "600"]).unwrap();
        let namespaces = file.spec["linux"]["namespaces"].as_array_mut().unwrap();
        namespaces.push(json!({"type": "user", "path": userns}));
        with_maps(&mut file);
        file.spec["process"]["capabilities"]["bounding"].as_array_mut().unwrap().push(json!("CAP_SYS_ADMIN"));
        file.spec["process"]["capabilities"]["effective"].as_array_mut().unwrap().push(json!("CAP_SYS_ADMIN"));
        file.spec["process"]["capabilities"]["permitted"].as_array_mut().unwrap().push(json!("CAP_SYS_ADMIN"));
        file.run(&env, runtime, &["-d"]).unwrap().assert_ok();
        let out = env.ctr(&["tasks", "exec", "--exec-id", "e", &sandbox, "sh", "-c", script]);
        out.assert_ok();
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["0", "100000", "65536"], "{runtime}: {out}");
        assert_eq!(lines[2], "mounted", "{runtime}: the container's root may mount in its own mount namespace: {out}");
        assert_eq!(lines[3], std::fs::read_link(&userns).unwrap().to_string_lossy(), "{runtime}: {out}");

        let pid = env.task_pid(&sandbox).unwrap();
        let app = format!("{tag}-app");
        let mut file = SpecFile::new(&env, &app, &["sh", "-c", "cat /proc/self/uid_map; readlink /proc/self/ns/pid; readlink /proc/self/ns/user"]).unwrap();
        let namespaces = file.spec["linux"]["namespaces"].as_array_mut().unwrap();
        namespaces.retain(|n| n["type"] != "pid");
        namespaces.push(json!({"type": "pid", "path": format!("/proc/{pid}/ns/pid")}));
        namespaces.push(json!({"type": "user", "path": userns}));
        with_maps(&mut file);
        let out = file.run(&env, runtime, &["--rm"]).unwrap();
        out.assert_ok();
        let links = [format!("/proc/{pid}/ns/pid"), userns.clone()].map(|l| std::fs::read_link(l).unwrap().to_string_lossy().into_owned());
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines[0].split_whitespace().collect::<Vec<_>>(), ["0", "100000", "65536"], "{runtime}: {out}");
        assert_eq!(lines[1..], links, "{runtime}: in the sandbox's pid and user namespaces: {out}");
        env.remove_task(&sandbox);
    }
    drop(holder);
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

/// In a user namespace, bind sources below a directory only host root may
/// enter (as containerd keeps a pod's /dev/shm, hosts and resolv.conf) are
/// still bound: the runtime, in the host's user namespace, reaches them, not
/// the container's root. runc is the reference.
#[test]
fn in_a_user_namespace_bind_sources_its_root_cannot_reach_are_bound() {
    use ferrum_tests::{FERRUM_RUNTIME, RUNC_RUNTIME};
    use std::os::unix::fs::PermissionsExt;
    let (env, image) = Env::with_busybox();
    let private = env.root_dir().join("private");
    std::fs::create_dir_all(private.join("dir")).unwrap();
    std::fs::write(private.join("file"), "bound\n").unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let file = format!("type=bind,src={},dst=/f,options=rbind:ro", private.join("file").display());
    let dir = format!("type=bind,src={},dst=/d,options=rbind:ro", private.join("dir").display());
    let flags = ["--rm", "--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536", "--mount", &file, "--mount", &dir];
    for runtime in [RUNC_RUNTIME, FERRUM_RUNTIME] {
        let out = env.run_on(runtime, &flags, &image, "private", &["sh", "-c", "cat /f; test -d /d && echo dir; touch /d/x || true"]);
        out.assert_ok();
        assert_eq!(out.stdout, "bound\ndir\n", "{runtime}: {out}");
        assert!(out.stderr.contains("Read-only file system"), "{runtime}: still read-only: {out}");
    }
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}
