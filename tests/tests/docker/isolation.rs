//! What Docker's flags confine a container to: -m/--cpus/--pids-limit (in the
//! cgroup files), capabilities, no-new-privileges and seccomp, a read-only
//! root with a tmpfs, bind and named volumes, --user and --device.

use std::fs;

use ferrum_tests::Docker;

use crate::{finish, name, same_on_both};

/// The lines of /proc/self/status a container's confinement shows in.
const STATUS: &str = "grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status";

#[test]
#[ignore = "runs in the containerd 2.1 lane (scripts/test) with FERRUM_DOCKER_DIR"]
fn memory_cpu_and_pids_limits_reach_the_cgroup() {
    let (docker, image) = Docker::with_busybox();
    let limits = same_on_both("-m 64m --cpus 0.5 --pids-limit 32", |runtime| {
        let c = name("limits", runtime);
        let id = docker.run_detached(runtime, &c, &["-m", "64m", "--cpus", "0.5", "--pids-limit", "32"], &image, &["sleep", "1000"]);
        let read = |controller: &str, file: &str| docker.cgroup_file(controller, &id, file).unwrap();
        let host = [
            read("memory", "memory.limit_in_bytes"),
            read("cpu", "cpu.cfs_quota_us"),
            read("cpu", "cpu.cfs_period_us"),
            read("pids", "pids.max"),
        ];
        // The same files as the container sees them (Docker's default
        // cgroup namespace on a v1 host is the host's: the runtime mounts
        // the container's own cgroup directories).
        let inside = docker.docker(&[
            "exec",
            &c,
            "cat",
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/cpu/cpu.cfs_quota_us",
            "/sys/fs/cgroup/pids/pids.max",
        ]);
        (host, inside.stdout)
    });
    assert_eq!(limits.0, ["67108864", "50000", "100000", "32"].map(String::from));
    assert_eq!(limits.1, "67108864\n50000\n32\n");
    // Past the memory limit, the OOM killer; Docker says so.
    let oom = same_on_both("-m 32m, an allocation past it", |runtime| {
        let c = name("oom", runtime);
        let out = docker.run(runtime, &["--name", &c, "-m", "32m", "--memory-swap", "32m"], &image, &["sh", "-c", "x=0123456789abcdef; while :; do x=$x$x; done"]);
        (out.status, docker.inspect(&c, "{{.State.OOMKilled}}"))
    });
    assert_eq!(oom, (Some(137), "true".to_string()));
    finish(docker);
}

#[test]
#[ignore = "runs in the containerd 2.1 lane (scripts/test) with FERRUM_DOCKER_DIR"]
fn capabilities_follow_cap_add_and_cap_drop() {
    let (docker, image) = Docker::with_busybox();
    let default = same_on_both("Docker's default capabilities", |runtime| docker.run(runtime, &["--rm"], &image, &["sh", "-c", STATUS]).stdout);
    // Docker's 14 default capabilities: 0x00000000a80425fb.
    assert!(default.contains("CapEff:\t00000000a80425fb\n"), "{default}");
    let narrowed = same_on_both("--cap-drop ALL --cap-add NET_BIND_SERVICE", |runtime| {
        docker.run(runtime, &["--rm", "--cap-drop", "ALL", "--cap-add", "NET_BIND_SERVICE"], &image, &["sh", "-c", STATUS]).stdout
    });
    assert!(narrowed.contains("CapEff:\t0000000000000400\n") && narrowed.contains("CapBnd:\t0000000000000400\n"), "{narrowed}");
    let chown = same_on_both("--cap-drop CHOWN", |runtime| {
        let out = docker.run(runtime, &["--rm", "--cap-drop", "CHOWN"], &image, &["chown", "nobody", "/tmp"]);
        (out.status, out.stderr)
    });
    assert_eq!(chown, (Some(1), "chown: /tmp: Operation not permitted\n".to_string()));
    let added = same_on_both("--cap-add SYS_ADMIN", |runtime| {
        docker.run(runtime, &["--rm", "--cap-add", "SYS_ADMIN"], &image, &["sh", "-c", "mount -t tmpfs none /tmp && echo mounted"]).stdout
    });
    assert_eq!(added, "mounted\n");
    finish(docker);
}

#[test]
#[ignore = "runs in the containerd 2.1 lane (scripts/test) with FERRUM_DOCKER_DIR"]
fn no_new_privileges_and_seccomp_profiles_apply() {
    let (docker, image) = Docker::with_busybox();
    let nnp = same_on_both("--security-opt no-new-privileges", |runtime| {
        docker.run(runtime, &["--rm", "--security-opt", "no-new-privileges"], &image, &["grep", "NoNewPrivs", "/proc/self/status"]).stdout
    });
    assert_eq!(nnp, "NoNewPrivs:\t1\n");
    let default = same_on_both("Docker's default seccomp profile", |runtime| {
        docker.run(runtime, &["--rm"], &image, &["grep", "^Seccomp:", "/proc/self/status"]).stdout
    });
    assert_eq!(default, "Seccomp:\t2\n");
    let unconfined = same_on_both("seccomp=unconfined", |runtime| {
        docker.run(runtime, &["--rm", "--security-opt", "seccomp=unconfined"], &image, &["grep", "^Seccomp:", "/proc/self/status"]).stdout
    });
    assert_eq!(unconfined, "Seccomp:\t0\n");
    // A profile of our own: everything allowed but mkdir, which fails with EPERM.
    let profile = docker.env().root_dir().join("no-mkdir.json");
    let rules = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#;
    fs::write(&profile, rules).unwrap();
    let opt = format!("seccomp={}", profile.display());
    let custom = same_on_both("a seccomp profile that refuses mkdir", |runtime| {
        let out = docker.run(runtime, &["--rm", "--security-opt", &opt], &image, &["sh", "-c", "touch /tmp/file && echo touched; mkdir /tmp/dir"]);
        (out.status, out.stdout, out.stderr)
    });
    assert_eq!(custom, (Some(1), "touched\n".to_string(), "mkdir: can't create directory '/tmp/dir': Operation not permitted\n".to_string()));
    finish(docker);
}

#[test]
#[ignore = "runs in the containerd 2.1 lane (scripts/test) with FERRUM_DOCKER_DIR"]
fn a_read_only_root_with_a_tmpfs() {
    let (docker, image) = Docker::with_busybox();
    let script = "touch /file 2>&1; touch /scratch/file && echo wrote-scratch; grep ' /scratch ' /proc/mounts";
    let seen = same_on_both("--read-only --tmpfs", |runtime| {
        let out = docker.run(runtime, &["--rm", "--read-only", "--tmpfs", "/scratch:size=1m,mode=1777"], &image, &["sh", "-c", script]);
        (out.status, out.stdout)
    });
    assert_eq!(seen.0, Some(0));
    let lines: Vec<&str> = seen.1.lines().collect();
    assert_eq!(lines[..2], ["touch: /file: Read-only file system", "wrote-scratch"], "{}", seen.1);
    assert!(lines[2].starts_with("tmpfs /scratch tmpfs rw,") && lines[2].contains(",size=1024k"), "{}", seen.1);
    finish(docker);
}

#[test]
#[ignore = "runs in the containerd 2.1 lane (scripts/test) with FERRUM_DOCKER_DIR"]
fn bind_and_named_volumes() {
    let (docker, image) = Docker::with_busybox();
    let seen = same_on_both("volumes", |runtime| {
        // A bind mount: the host's file in, the container's file out.
        let host = docker.env().root_dir().join(name("bind", runtime));
        fs::create_dir(&host).unwrap();
        fs::write(host.join("in"), "from-host\n").unwrap();
        let bind = format!("{}:/data", host.display());
        let out = docker.run(runtime, &["--rm", "-v", &bind], &image, &["sh", "-c", "cat /data/in; echo from-container >/data/out"]);
        let written = fs::read_to_string(host.join("out")).unwrap_or_default();
        let read_only = docker.run(runtime, &["--rm", "-v", &format!("{bind}:ro")], &image, &["sh", "-c", "echo x >/data/out"]);
        // A named volume outlives the container that wrote to it.
        let volume = name("vol", runtime);
        let mount = format!("{volume}:/data");
        docker.run(runtime, &["--rm", "-v", &mount], &image, &["sh", "-c", "echo kept >/data/file"]).assert_ok();
        let kept = docker.run(runtime, &["--rm", "-v", &mount], &image, &["cat", "/data/file"]);
        docker.docker(&["volume", "rm", &volume]).assert_ok();
        (out.stdout, written, read_only.stderr, kept.stdout)
    });
    let expected = ("from-host\n", "from-container\n", "sh: can't create /data/out: Read-only file system\n", "kept\n");
    assert_eq!(seen, (expected.0.into(), expected.1.into(), expected.2.into(), expected.3.into()));
    finish(docker);
}

#[test]
#[ignore = "runs in the containerd 2.1 lane (scripts/test) with FERRUM_DOCKER_DIR"]
fn user_sets_the_ids() {
    let (docker, image) = Docker::with_busybox();
    let ids = same_on_both("--user", |runtime| {
        let run = |flags: &[&str]| {
            let mut all = vec!["--rm"];
            all.extend_from_slice(flags);
            docker.run(runtime, &all, &image, &["id"]).stdout
        };
        [run(&["--user", "65534:65534"]), run(&["--user", "nobody"]), run(&["--user", "1000", "--group-add", "123"])]
    });
    assert_eq!(
        ids,
        [
            "uid=65534(nobody) gid=65534(nobody) groups=65534(nobody)\n",
            "uid=65534(nobody) gid=65534(nobody) groups=65534(nobody)\n",
            "uid=1000 gid=0(root) groups=0(root),123\n",
        ]
        .map(String::from)
    );
    finish(docker);
}

#[test]
#[ignore = "runs in the containerd 2.1 lane (scripts/test) with FERRUM_DOCKER_DIR"]
fn device_gives_one_device_and_no_other() {
    let (docker, image) = Docker::with_busybox();
    let seen = same_on_both("--device", |runtime| {
        let given = docker.run(
            runtime,
            &["--rm", "--device", "/dev/zero:/dev/xzero"],
            &image,
            &["sh", "-c", "stat -c '%F %t:%T' /dev/xzero; head -c 3 /dev/xzero | od -An -tx1"],
        );
        // A node made inside the container is there, but the device cgroup
        // refuses to open what neither --device nor Docker's defaults
        // (null, zero, full, random, urandom, tty, ptmx, pts) allow:
        // /dev/kmsg here, opened and closed, never read.
        let made = docker.run(runtime, &["--rm"], &image, &["sh", "-c", "mknod /tmp/kmsg c 1 11 && : </tmp/kmsg"]);
        (given.stdout, made.status, made.stderr)
    });
    assert_eq!(seen.0, "character special file 1:5\n 00 00 00\n");
    assert_eq!((seen.1, seen.2.as_str()), (Some(1), "sh: can't open /tmp/kmsg: Operation not permitted\n"));
    finish(docker);
}
