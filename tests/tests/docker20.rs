//! Docker 20.10 on the `ferrum` CLI: `docker` -> dockerd (Debian bookworm's
//! Docker 20.10) -> containerd 1.6 -> containerd's runc-v2 shim -> `ferrum`
//! (daemon.json's `runtimes.ferrum.path`, as `--add-runtime` makes it), with
//! overlay2 as the storage driver. Every check runs under Docker's default
//! runc first, the reference, then under `--runtime ferrum`, in the same test.
//!
//! The tests are `#[ignore]`d: scripts/test runs them in the containerd 1.6
//! lane with `--ignored`, given FERRUM_DOCKER20_DIR=$(scripts/install-docker20);
//! run anywhere without it, they fail, naming what is missing.

use ferrum_tests::docker::{finish, name, same_on_both, Release};
use ferrum_tests::{CtrOutput, Docker, DOCKER_FERRUM};

fn started() -> (Docker, String) {
    Docker::release_with_busybox(Release::Docker20)
}

/// What a `docker` command showed: its exit status and both streams.
fn shown(out: &CtrOutput) -> (Option<i32>, String, String) {
    (out.status, out.stdout.clone(), out.stderr.clone())
}

/// The container's output and exit status reach `docker run`, each stream
/// on its own; Docker tells a missing program (127) from one it may not run
/// (126) by runc's words in the runtime's error, and names the program.
#[test]
#[ignore = "runs in the containerd 1.6 lane (scripts/test) with FERRUM_DOCKER20_DIR"]
fn run_passes_output_exit_codes_and_exec_errors() {
    let (docker, image) = started();
    let streams = same_on_both("streams and status", |runtime| {
        shown(&docker.run(runtime, &["--rm"], &image, &["sh", "-c", "echo out; echo err >&2; exit 3"]))
    });
    assert_eq!(streams, (Some(3), "out\n".to_string(), "err\n".to_string()));
    for (program, status) in [("/no/such", 127), ("/etc/passwd", 126)] {
        let named = same_on_both(program, |runtime| {
            let out = docker.run(runtime, &["--rm"], &image, &[program]);
            (out.status, out.stderr.contains(program))
        });
        assert_eq!(named, (Some(status), true), "{program}");
    }
    finish(docker);
}

/// `-t`, `-it` and `exec -t`: the pty comes over the console socket.
#[test]
#[ignore = "runs in the containerd 1.6 lane (scripts/test) with FERRUM_DOCKER20_DIR"]
fn terminals_for_run_and_exec() {
    let (docker, image) = started();
    let tty = same_on_both("run -t", |runtime| {
        let out = docker.docker_in_terminal(&["run", "--rm", "-t", "--runtime", runtime, &image, "sh", "-c", "tty; exit 2"], None);
        (out.status, out.stdout.replace('\r', ""))
    });
    assert_eq!(tty, (Some(2), "/dev/pts/0\n".to_string()));
    let typed = same_on_both("run -it", |runtime| {
        let args = ["run", "--rm", "-it", "--runtime", runtime, &image, "sh"];
        let out = docker.docker_in_terminal(&args, Some(b"echo typed-$((6*7))\nexit 4\n"));
        (out.status, out.stdout.contains("typed-42"))
    });
    assert_eq!(typed, (Some(4), true));
    let exec = same_on_both("exec -t", |runtime| {
        let c = name("t", runtime);
        docker.run_detached(runtime, &c, &[], &image, &["sleep", "1000"]);
        let out = docker.docker_in_terminal(&["exec", "-t", &c, "sh", "-c", "tty; exit 5"], None);
        (out.status, out.stdout.replace('\r', "").starts_with("/dev/pts/"))
    });
    assert_eq!(exec, (Some(5), true));
    finish(docker);
}

/// A detached container through its life: exec, top, pause and unpause,
/// stop (init ignores SIGTERM: killed after the timeout, 137) and rm.
#[test]
#[ignore = "runs in the containerd 1.6 lane (scripts/test) with FERRUM_DOCKER20_DIR"]
fn a_detached_container_through_its_life() {
    let (docker, image) = started();
    let life = same_on_both("life", |runtime| {
        let c = name("life", runtime);
        docker.run_detached(runtime, &c, &[], &image, &["sleep", "1000"]);
        let mut seen = vec![docker.docker(&["exec", &c, "echo", "in"]).assert_ok().stdout.clone()];
        let top = docker.docker(&["top", &c]);
        // One process, sleep: no zombie and nothing of the runtime's.
        let processes: Vec<&str> = top.assert_ok().stdout.lines().skip(1).collect();
        seen.push(format!("{} process(es), sleep: {}", processes.len(), processes.iter().all(|l| l.contains("sleep 1000"))));
        docker.docker(&["pause", &c]).assert_ok();
        seen.push(docker.inspect(&c, "{{.State.Status}}"));
        seen.push(docker.docker(&["exec", &c, "true"]).status.map_or("no status".into(), |s| format!("exec when paused: {}", s != 0)));
        docker.docker(&["unpause", &c]).assert_ok();
        seen.push(docker.inspect(&c, "{{.State.Status}}"));
        docker.docker(&["stop", "-t", "1", &c]).assert_ok();
        seen.push(docker.inspect(&c, "{{.State.Status}} {{.State.ExitCode}}"));
        docker.docker(&["rm", &c]).assert_ok();
        seen
    });
    assert_eq!(life, ["in\n", "1 process(es), sleep: true", "paused", "exec when paused: true", "running", "exited 137"]);
    finish(docker);
}

/// Docker ran the ferrum CLI, not runc under the name: the container's
/// state.json is ferrum's (runc's has no `pid_start`).
#[test]
#[ignore = "runs in the containerd 1.6 lane (scripts/test) with FERRUM_DOCKER20_DIR"]
fn the_runtime_is_the_ferrum_cli() {
    let (docker, image) = started();
    let id = docker.run_detached(DOCKER_FERRUM, "which", &[], &image, &["sleep", "1000"]);
    let state = docker.runtime_root().join(&id).join("state.json");
    let text = std::fs::read_to_string(&state).unwrap_or_else(|e| panic!("{}: {e}", state.display()));
    let state: serde_json::Value = serde_json::from_str(&text).expect("ferrum's state.json");
    assert_eq!(state["id"], id.as_str(), "{text}");
    assert!(state["pid_start"].is_u64(), "not ferrum's state: {text}");
    finish(docker);
}
