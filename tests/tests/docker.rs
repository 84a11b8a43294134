//! Docker on ferrum: `docker` -> dockerd (Debian sid's Docker 28) ->
//! containerd 2.x -> ferrum's shim and runtime-core, with ferrum-snapshotter
//! as Docker's storage driver (examples/docker-daemon.json, as shipped). Every
//! check runs under Docker's default runtime (runc 1.1.5 through containerd's
//! runc shim), the reference, then under `--runtime ferrum`, in the same
//! test: where runc shows what Docker users get, ferrum must show the same.
//!
//! Each test has its own dockerd on its own containerd (crate::docker), in a
//! network namespace of its own; it ends by removing its containers through
//! Docker (nothing of them may be left: mounts, shims, cgroups, runtime
//! state), then drops the harness (nothing at all may be left: processes in
//! dockerd's namespace, links, iptables chains or ip_forward on the host,
//! /run/docker, the temp dir).
//!
//! The tests are `#[ignore]`d: they need containerd 2.x and Docker, which only
//! the containerd 2.1 lane of scripts/test provides. It runs them with
//! `--ignored`, given FERRUM_CONTAINERD_DIR=$(scripts/install-containerd2) and
//! FERRUM_DOCKER_DIR=$(scripts/install-docker); run anywhere without them,
//! they fail, naming what is missing.

mod docker {
    pub mod isolation;
    pub mod lifecycle;
    pub mod network;
    pub mod storage;
}

use ferrum_tests::docker::{finish, name, same_on_both};
use ferrum_tests::{Docker, DOCKER_FERRUM, DOCKER_RUNC};

const GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// What the Docker lane runs is what examples/docker-daemon.json says:
/// ferrum-snapshotter as the storage driver, on containerd's image store,
/// and ferrum as a runtime beside runc.
#[test]
#[ignore = "runs in the containerd 2.1 lane (scripts/test) with FERRUM_DOCKER_DIR"]
fn docker_runs_on_ferrum_snapshotter_with_ferrum_as_a_runtime() {
    let (docker, image) = Docker::with_busybox();
    let info = docker.docker(&["info", "--format", "{{.Driver}} {{json .DriverStatus}} {{range $k, $v := .Runtimes}}{{$k}} {{end}}"]);
    let info = info.assert_ok().stdout.trim().to_string();
    assert!(info.starts_with("ferrum "), "storage driver: {info}");
    assert!(info.contains("io.containerd.snapshotter.v1"), "containerd's image store: {info}");
    let words: Vec<&str> = info.split_whitespace().collect();
    assert!(words[2..].contains(&"ferrum") && words[2..].contains(&"runc"), "runtimes: {info}");
    let hello = same_on_both("hello", |runtime| docker.run(runtime, &["--rm"], &image, &["echo", "hello"]).stdout);
    assert_eq!(hello, "hello\n");
    // The container's root filesystem is one of ferrum-snapshotter's.
    let id = docker.run_detached(DOCKER_FERRUM, "rootfs", &[], &image, &["sleep", "1000"]);
    let snapshots = docker.env().ctr(&["snapshots", "--snapshotter", "ferrum", "ls"]);
    assert!(snapshots.assert_ok().stdout.contains(&id), "no ferrum snapshot for the container {id}\n{snapshots}");
    finish(docker);
}

/// Drop leaves nothing even after dockerd was SIGKILLed under running
/// containers with a published port (its docker-proxy outlives it) and a
/// user network.
#[test]
#[ignore = "runs in the containerd 2.1 lane (scripts/test) with FERRUM_DOCKER_DIR"]
fn the_harness_leaves_nothing_after_dockerd_is_killed() {
    let (mut docker, image) = Docker::with_busybox();
    for runtime in [DOCKER_RUNC, DOCKER_FERRUM] {
        let network = name("net", runtime);
        docker.docker(&["network", "create", &network]).assert_ok();
        docker.docker(&["volume", "create", &name("vol", runtime)]).assert_ok();
        let volume = format!("{}:/data", name("vol", runtime));
        let flags = ["-p", "127.0.0.1::80", "--network", &network, "-v", &volume];
        docker.run_detached(runtime, &name("web", runtime), &flags, &image, &["httpd", "-f", "-p", "80"]);
    }
    docker.kill_dockerd();
    let footprint = docker.footprint().clone();
    drop(docker);
    assert_eq!(footprint.leftovers_after(GRACE), Vec::<String>::new(), "left behind by the Docker harness");
}
