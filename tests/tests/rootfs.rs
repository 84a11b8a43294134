//! The container's filesystem view through ctr -> containerd -> ferrum:
//! containerd's default mounts, masked and read-only paths, cgroup mounts.

use std::time::Duration;

use ferrum_tests::{CtrOutput, Env};

const GRACE: Duration = Duration::from_secs(5);

fn run_script(extra: &[&str], script: &str) -> CtrOutput {
    let (env, image) = Env::with_busybox();
    let mut flags = vec!["--rm"];
    flags.extend_from_slice(extra);
    let out = env.run_on_ferrum(&flags, &image, "c1", &["sh", "-c", script]);
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
    out
}

#[test]
fn masked_and_readonly_paths_of_containerds_default_spec() {
    // Files are masked by /dev/null, directories by an empty tmpfs.
    let script = "\
        test -c /proc/keys && echo keys-masked; \
        echo firmware=$(ls /sys/firmware | wc -l); \
        echo 1 > /proc/sys/kernel/domainname 2>/dev/null || echo proc-sys-ro; \
        echo x > /sys/kernel/foo 2>/dev/null || echo sys-ro";
    let out = run_script(&[], script);
    out.assert_ok();
    assert!(out.stdout.contains("keys-masked"), "{out}");
    assert!(out.stdout.contains("firmware=0\n"), "{out}");
    assert!(out.stdout.contains("proc-sys-ro"), "{out}");
    assert!(out.stdout.contains("sys-ro"), "{out}");
}

#[test]
fn read_only_rootfs() {
    let out = run_script(&["--read-only"], "touch /x 2>&1 || echo rootfs-ro; touch /tmp/y 2>&1; echo done");
    out.assert_ok();
    assert!(out.stdout.contains("rootfs-ro"), "{out}");
}

#[test]
fn cgroup_mount_shows_only_the_containers_own_cgroup() {
    let out = run_script(
        &["--mount", "type=cgroup,src=cgroup,dst=/sys/fs/cgroup,options=ro:nosuid:nodev:noexec"],
        "ls /sys/fs/cgroup; echo procs=$(cat /sys/fs/cgroup/memory/cgroup.procs | tr '\\n' ' '); \
         touch /sys/fs/cgroup/memory/x 2>/dev/null || echo cgroup-ro",
    );
    out.assert_ok();
    for h in ["cpu", "memory", "pids", "freezer"] {
        assert!(out.stdout.lines().any(|l| l == h), "no {h} hierarchy: {out}");
    }
    // Its own cgroup is the root it sees: only its own processes are in it.
    assert!(out.stdout.contains("procs=1 "), "{out}");
    assert!(out.stdout.contains("cgroup-ro"), "{out}");
}
