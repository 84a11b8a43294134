//! A container's life under Docker: run (output, exit codes, -t, -i), exec,
//! logs, stop, kill, restart policies, healthchecks and --init.

use std::time::{Duration, Instant};

use ferrum_tests::{CtrOutput, Docker};
use serde_json::{json, Value};

use crate::{finish, name, same_on_both};

/// What a `docker` command showed: its exit status and both streams.
fn shown(out: &CtrOutput) -> (Option<i32>, String, String) {
    (out.status, out.stdout.clone(), out.stderr.clone())
}

/// Waits until the container's log has a line `line` (a script says it is
/// ready, or that a signal arrived).
#[track_caller]
fn wait_for_log(docker: &Docker, container: &str, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logs = docker.docker(&["logs", container]);
        if logs.stdout.lines().any(|l| l == line) {
            return;
        }
        assert!(Instant::now() < deadline, "{container} never logged {line:?}\n{logs}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "runs in the containerd 2.1 lane (scripts/test) with FERRUM_DOCKER_DIR"]
fn run_passes_output_and_exit_codes() {
    let (docker, image) = Docker::with_busybox();
    let streams = same_on_both("streams and status", |runtime| {
        shown(&docker.run(runtime, &["--rm"], &image, &["sh", "-c", "echo out; echo err >&2; exit 3"]))
    });
    assert_eq!(streams, (Some(3), "out\n".to_string(), "err\n".to_string()));
    // Docker tells a missing executable (127) and one it may not run (126)
    // apart by the runtime's error text.
    let missing = same_on_both("a missing executable", |runtime| docker.run(runtime, &["--rm"], &image, &["/no/such"]).status);
    assert_eq!(missing, Some(127));
    let denied = same_on_both("a file that is not executable", |runtime| {
        docker.run(runtime, &["--rm"], &image, &["/etc/passwd"]).status
    });
    assert_eq!(denied, Some(126));
    finish(docker);
}

#[test]
#[ignore = "runs in the containerd 2.1 lane (scripts/test) with FERRUM_DOCKER_DIR"]
fn run_with_a_terminal_and_with_stdin() {
    let (docker, image) = Docker::with_busybox();
    let tty = same_on_both("run -t", |runtime| {
        let out = docker.docker_in_terminal(&["run", "--rm", "-t", "--runtime", runtime, &image, "sh", "-c", "tty; stty size; exit 2"], None);
        (out.status, out.stdout.replace('\r', ""))
    });
    assert_eq!(tty.0, Some(2));
    assert!(tty.1.starts_with("/dev/pts/0\n"), "{tty:?}");
    // -it: what is typed reaches the container's terminal (and is echoed).
    let interactive = same_on_both("run -it", |runtime| {
        let script = "read line; echo got-$line; exit 3";
        let out = docker.docker_in_terminal(&["run", "--rm", "-it", "--runtime", runtime, &image, "sh", "-c", script], Some(b"typed\n"));
        (out.status, out.stdout.replace('\r', ""))
    });
    assert_eq!(interactive.0, Some(3));
    assert!(interactive.1.ends_with("got-typed\n"), "{interactive:?}");
    let stdin = same_on_both("run -i", |runtime| {
        let out = docker.docker_with_stdin(&["run", "--rm", "-i", "--runtime", runtime, &image, "sh", "-c", "cat; echo end"], b"one\ntwo\n");
        shown(&out)
    });
    assert_eq!(stdin, (Some(0), "one\ntwo\nend\n".to_string(), String::new()));
    finish(docker);
}

#[test]
#[ignore = "runs in the containerd 2.1 lane (scripts/test) with FERRUM_DOCKER_DIR"]
fn exec_runs_in_the_container() {
    let (docker, image) = Docker::with_busybox();
    let execs = same_on_both("docker exec", |runtime| {
        let c = name("exec", runtime);
        docker.run_detached(runtime, &c, &[], &image, &["sleep", "1000"]);
        let streams = shown(&docker.docker(&["exec", &c, "sh", "-c", "echo out; echo err >&2; exit 5"]));
        let user = docker.docker(&["exec", "-u", "65534:65534", "-w", "/tmp", "-e", "FOO=bar", &c, "sh", "-c", "id; pwd; echo $FOO"]);
        let stdin = docker.docker_with_stdin(&["exec", "-i", &c, "cat"], b"in\n");
        let tty = docker.docker_in_terminal(&["exec", "-t", &c, "tty"], None);
        let missing = docker.docker(&["exec", &c, "/no/such"]);
        let top = docker.docker(&["top", &c, "-o", "pid,comm"]);
        let commands: Vec<String> = top.stdout.lines().filter_map(|l| l.split_whitespace().last()).map(String::from).collect();
        (streams, user.stdout, stdin.stdout, tty.stdout.replace('\r', "").starts_with("/dev/pts/"), missing.status, commands)
    });
    assert_eq!(execs.0, (Some(5), "out\n".to_string(), "err\n".to_string()));
    assert_eq!(execs.1, "uid=65534(nobody) gid=65534(nobody) groups=65534(nobody)\n/tmp\nbar\n");
    assert_eq!(execs.2, "in\n");
    assert!(execs.3, "exec -t has no terminal");
    assert_eq!(execs.4, Some(127));
    assert_eq!(execs.5, ["COMMAND", "sleep"]);
    finish(docker);
}

#[test]
#[ignore = "runs in the containerd 2.1 lane (scripts/test) with FERRUM_DOCKER_DIR"]
fn logs_keep_both_streams() {
    let (docker, image) = Docker::with_busybox();
    let logs = same_on_both("docker logs", |runtime| {
        let c = name("logs", runtime);
        // The pause orders the last line after the others: Docker copies
        // stdout and stderr separately, in whatever order they arrive.
        docker.run_detached(runtime, &c, &[], &image, &["sh", "-c", "echo out1; echo err1 >&2; sleep 0.5; echo out2"]);
        let exit = docker.docker(&["wait", &c]).stdout;
        let all = shown(&docker.docker(&["logs", &c]));
        let last = docker.docker(&["logs", "--tail", "1", &c]).stdout;
        (exit, all, last)
    });
    assert_eq!(logs.0, "0\n");
    assert_eq!(logs.1, (Some(0), "out1\nout2\n".to_string(), "err1\n".to_string()));
    assert_eq!(logs.2, "out2\n");
    finish(docker);
}

/// SIGTERM first; SIGKILL once the timeout has passed.
#[test]
#[ignore = "runs in the containerd 2.1 lane (scripts/test) with FERRUM_DOCKER_DIR"]
fn stop_sends_sigterm_then_sigkill_after_the_timeout() {
    let (docker, image) = Docker::with_busybox();
    let handled = same_on_both("stop, SIGTERM handled", |runtime| {
        let c = name("term", runtime);
        let script = "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.1; done";
        docker.run_detached(runtime, &c, &[], &image, &["sh", "-c", script]);
        wait_for_log(&docker, &c, "ready");
        let started = Instant::now();
        docker.docker(&["stop", "-t", "30", &c]).assert_ok();
        let fast = started.elapsed() < Duration::from_secs(10);
        (fast, docker.inspect(&c, "{{.State.ExitCode}}"), docker.docker(&["logs", &c]).stdout)
    });
    assert_eq!(handled, (true, "7".to_string(), "ready\ngot-term\n".to_string()));
    let ignored = same_on_both("stop, SIGTERM ignored", |runtime| {
        let c = name("kill", runtime);
        docker.run_detached(runtime, &c, &[], &image, &["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"]);
        wait_for_log(&docker, &c, "ready");
        let started = Instant::now();
        docker.docker(&["stop", "-t", "2", &c]).assert_ok();
        let waited = started.elapsed();
        (waited >= Duration::from_secs(2) && waited < Duration::from_secs(10), docker.inspect(&c, "{{.State.ExitCode}}"))
    });
    assert_eq!(ignored, (true, "137".to_string()));
    finish(docker);
}

#[test]
#[ignore = "runs in the containerd 2.1 lane (scripts/test) with FERRUM_DOCKER_DIR"]
fn kill_sends_the_signal_asked_for() {
    let (docker, image) = Docker::with_busybox();
    let killed = same_on_both("docker kill", |runtime| {
        let c = name("kill", runtime);
        let script = "trap 'echo got-usr1' USR1; echo ready; while :; do sleep 0.1; done";
        docker.run_detached(runtime, &c, &[], &image, &["sh", "-c", script]);
        wait_for_log(&docker, &c, "ready");
        docker.docker(&["kill", "-s", "USR1", &c]).assert_ok();
        wait_for_log(&docker, &c, "got-usr1");
        let still = docker.inspect(&c, "{{.State.Running}}");
        docker.docker(&["kill", &c]).assert_ok();
        docker.wait_for(&c, "{{.State.Running}}", "false", Duration::from_secs(10));
        (still, docker.inspect(&c, "{{.State.ExitCode}}"))
    });
    assert_eq!(killed, ("true".to_string(), "137".to_string()));
    finish(docker);
}

#[test]
#[ignore = "runs in the containerd 2.1 lane (scripts/test) with FERRUM_DOCKER_DIR"]
fn restart_policies_restart_the_container() {
    let (docker, image) = Docker::with_busybox();
    let timeout = Duration::from_secs(30);
    let restarts = same_on_both("restart policies", |runtime| {
        // on-failure:2 runs it three times in all, then leaves it exited.
        let failing = name("on-failure", runtime);
        docker.run_detached(runtime, &failing, &["--restart", "on-failure:2"], &image, &["sh", "-c", "echo run; exit 3"]);
        docker.wait_for(&failing, "{{.RestartCount}} {{.State.Status}} {{.State.ExitCode}}", "2 exited 3", timeout);
        let runs = docker.docker(&["logs", &failing]).stdout;
        // always restarts even a clean exit, until stopped.
        let always = name("always", runtime);
        docker.run_detached(runtime, &always, &["--restart", "always"], &image, &["sh", "-c", "sleep 0.2"]);
        let deadline = Instant::now() + timeout;
        while docker.inspect(&always, "{{.RestartCount}}").parse::<u32>().unwrap() < 2 {
            assert!(Instant::now() < deadline, "{always} was not restarted twice");
            std::thread::sleep(Duration::from_millis(50));
        }
        docker.docker(&["stop", &always]).assert_ok();
        let stopped = docker.inspect(&always, "{{.State.Status}}");
        // docker restart: the same container, a new process.
        let sleeper = name("restart", runtime);
        docker.run_detached(runtime, &sleeper, &[], &image, &["sleep", "1000"]);
        let pid = docker.inspect(&sleeper, "{{.State.Pid}}");
        docker.docker(&["restart", "-t", "1", &sleeper]).assert_ok();
        let restarted = docker.inspect(&sleeper, "{{.State.Running}}") == "true" && docker.inspect(&sleeper, "{{.State.Pid}}") != pid;
        (runs, stopped, restarted)
    });
    assert_eq!(restarts, ("run\nrun\nrun\n".to_string(), "exited".to_string(), true));
    finish(docker);
}

#[test]
#[ignore = "runs in the containerd 2.1 lane (scripts/test) with FERRUM_DOCKER_DIR"]
fn healthchecks_run_in_the_container() {
    let (docker, image) = Docker::with_busybox();
    let timeout = Duration::from_secs(30);
    let health = same_on_both("healthcheck", |runtime| {
        let c = name("health", runtime);
        let flags = ["--health-cmd", "cat /tmp/healthy", "--health-interval", "300ms", "--health-retries", "2", "--health-timeout", "5s"];
        // Written aside and renamed: a probe between the shell's open (which
        // creates the file empty) and its write would pass with no output.
        let script = "sleep 1; echo ok >/tmp/h; mv /tmp/h /tmp/healthy; exec sleep 1000";
        docker.run_detached(runtime, &c, &flags, &image, &["sh", "-c", script]);
        docker.wait_for(&c, "{{.State.Health.Status}}", "healthy", timeout);
        let output = last_health_check(&docker, &c)["Output"].clone();
        docker.docker(&["exec", &c, "rm", "/tmp/healthy"]).assert_ok();
        docker.wait_for(&c, "{{.State.Health.Status}}", "unhealthy", timeout);
        let failed = last_health_check(&docker, &c)["ExitCode"].clone();
        (output, failed)
    });
    assert_eq!(health, (json!("ok\n"), json!(1)));
    finish(docker);
}

/// The newest entry of the container's health log.
fn last_health_check(docker: &Docker, container: &str) -> Value {
    let log: Value = serde_json::from_str(&docker.inspect(container, "{{json .State.Health.Log}}")).unwrap();
    log.as_array().and_then(|l| l.last()).cloned().unwrap_or_else(|| panic!("{container} has no health log"))
}

/// --init: Docker's tini (docker-init, from tini-static) is PID 1, passes the
/// exit status on and forwards SIGTERM, which a plain `sleep` as PID 1 would
/// never get.
#[test]
#[ignore = "runs in the containerd 2.1 lane (scripts/test) with FERRUM_DOCKER_DIR"]
fn init_runs_tini_as_pid_1() {
    let (docker, image) = Docker::with_busybox();
    let init = same_on_both("--init", |runtime| {
        let pid1 = docker.run(runtime, &["--rm", "--init"], &image, &["sh", "-c", "tr '\\0' ' ' </proc/1/cmdline; exit 4"]);
        let c = name("init", runtime);
        docker.run_detached(runtime, &c, &["--init"], &image, &["sleep", "1000"]);
        let started = Instant::now();
        docker.docker(&["stop", "-t", "30", &c]).assert_ok();
        (shown(&pid1), started.elapsed() < Duration::from_secs(10), docker.inspect(&c, "{{.State.ExitCode}}"))
    });
    assert_eq!(init.0 .0, Some(4));
    assert!(init.0 .1.starts_with("/sbin/docker-init -- sh -c "), "{:?}", init.0);
    assert_eq!((init.1, init.2.as_str()), (true, "143"));
    finish(docker);
}
