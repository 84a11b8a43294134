//! `ferrum`, the runc-compatible command line, driven by its first real
//! consumer: containerd's own runc-v2 shim with ferrum as its binary
//! (`ctr run --runtime io.containerd.runc.v2 --runc-binary …/ferrum`), on
//! containerd 1.6 and 2.1, with runc under the same shim as the reference.

use ferrum_tests::{ferrum_binary, Env, RUNC_RUNTIME};

/// `ctr run` flags for the runc-v2 shim with `runtime` ("ferrum" or "runc") as its binary.
fn binary_flags(runtime: &str) -> Vec<String> {
    match runtime {
        "ferrum" => vec!["--runc-binary".into(), ferrum_binary("ferrum").display().to_string()],
        _ => Vec::new(),
    }
}

fn run(env: &Env, runtime: &str, flags: &[&str], image: &str, id: &str, args: &[&str]) -> ferrum_tests::CtrOutput {
    let binary = binary_flags(runtime);
    let mut all: Vec<&str> = binary.iter().map(String::as_str).collect();
    all.extend(flags);
    env.run_on(RUNC_RUNTIME, &all, image, id, args)
}

#[test]
fn run_passes_output_and_exit_status() {
    let (env, image) = Env::with_busybox();
    for runtime in ["runc", "ferrum"] {
        let out = run(&env, runtime, &["--rm"], &image, "r1", &["sh", "-c", "echo out; echo err >&2; exit 3"]);
        out.assert_exit(3);
        assert_eq!((out.stdout.trim(), out.stderr.trim()), ("out", "err"), "{runtime}: {out}");
    }
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

#[test]
fn a_terminal_reaches_the_container() {
    let (env, image) = Env::with_busybox();
    for runtime in ["runc", "ferrum"] {
        let binary = binary_flags(runtime);
        let mut args = vec!["run", "--rm", "-t", "--runtime", RUNC_RUNTIME];
        args.extend(binary.iter().map(String::as_str));
        args.extend([image.as_str(), "t1", "sh", "-c", "tty; stty size"]);
        let out = env.ctr_in_terminal(&args);
        assert!(out.assert_ok().stdout.contains("/dev/pts/0"), "{runtime}: {out}");
    }
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

/// A detached container through its life: exec (plain and with a
/// terminal), ps, pause and resume, metrics, kill, delete.
#[test]
fn exec_ps_pause_kill_and_delete() {
    let (env, image) = Env::with_busybox();
    for runtime in ["runc", "ferrum"] {
        run(&env, runtime, &["-d"], &image, "d1", &["sleep", "1000"]).assert_ok();
        // The shim's --root: ferrum's own state there, not runc's.
        let state = std::path::Path::new("/run/containerd/runc").join(env.namespace()).join("d1/state.json");
        let ours = std::fs::read_to_string(&state).unwrap_or_default().contains("\"pid_start\"");
        assert_eq!(ours, runtime == "ferrum", "{runtime}: {}", state.display());
        let exec = env.ctr(&["task", "exec", "--exec-id", "e1", "d1", "sh", "-c", "echo in-exec; exit 4"]);
        assert_eq!((exec.status, exec.stdout.trim()), (Some(4), "in-exec"), "{runtime}: {exec}");
        let tty = env.ctr_in_terminal(&["task", "exec", "-t", "--exec-id", "e2", "d1", "tty"]);
        assert!(tty.assert_ok().stdout.contains("/dev/pts/"), "{runtime}: {tty}");
        let ps = env.ctr(&["task", "ps", "d1"]);
        assert_eq!(ps.assert_ok().stdout.lines().count(), 2, "{runtime}: {ps}");
        env.ctr(&["task", "pause", "d1"]).assert_ok();
        let ls = env.ctr(&["task", "ls"]);
        assert!(ls.stdout.lines().any(|l| l.starts_with("d1") && l.contains("PAUSED")), "{runtime}: {ls}");
        env.ctr(&["task", "resume", "d1"]).assert_ok();
        env.ctr(&["task", "metrics", "d1"]).assert_ok();
        env.ctr(&["task", "kill", "--signal", "SIGKILL", "d1"]).assert_ok();
        wait_stopped(&env, "d1");
        env.ctr(&["task", "delete", "d1"]).assert_ok();
        env.ctr(&["containers", "delete", "d1"]).assert_ok();
    }
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

fn wait_stopped(env: &Env, id: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let ls = env.ctr(&["task", "ls"]);
        if ls.stdout.lines().any(|l| l.starts_with(id) && l.contains("STOPPED")) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{id} did not stop: {ls}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Through the shim and the CLI, no fd of either reaches the container's
/// init (created by one `ferrum create`, started from the exec FIFO by
/// another process) or an exec.
#[test]
fn no_runtime_fd_reaches_the_container() {
    use ferrum_tests::ctr::assert_only_stdio;
    let (env, image) = Env::with_busybox();
    assert_only_stdio(&run(&env, "ferrum", &["--rm"], &image, "f1", &["ls", "-l", "/proc/self/fd"]));
    run(&env, "ferrum", &["-d"], &image, "f2", &["sleep", "600"]).assert_ok();
    assert_only_stdio(&env.ctr(&["task", "exec", "--exec-id", "e1", "f2", "ls", "-l", "/proc/self/fd"]));
    env.ctr(&["task", "kill", "--signal", "SIGKILL", "f2"]).assert_ok();
    wait_stopped(&env, "f2");
    env.ctr(&["task", "delete", "f2"]).assert_ok();
    env.ctr(&["containers", "delete", "f2"]).assert_ok();
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

/// A missing binary fails the create with runc's words, which containerd
/// shows and Docker turns into exit 127; the next container runs.
#[test]
fn a_missing_binary_is_named() {
    let (env, image) = Env::with_busybox();
    let out = run(&env, "ferrum", &["--rm"], &image, "m1", &["/nonexistent"]);
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("/nonexistent") && out.stderr.contains("no such file or directory"), "{out}");
    env.ctr(&["containers", "rm", "m1"]);
    run(&env, "ferrum", &["--rm"], &image, "m2", &["true"]).assert_ok();
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

/// containerd restarts with a container running: its shim, and through it
/// ferrum's state under --root, are found again.
#[test]
fn a_containerd_restart_keeps_the_container() {
    let (mut env, image) = Env::with_busybox();
    run(&env, "ferrum", &["-d"], &image, "k1", &["sleep", "1000"]).assert_ok();
    env.restart_containerd().expect("restarting containerd");
    let exec = env.ctr(&["task", "exec", "--exec-id", "e1", "k1", "echo", "still-here"]);
    assert_eq!(exec.assert_ok().stdout.trim(), "still-here");
    env.ctr(&["task", "kill", "--signal", "SIGKILL", "k1"]).assert_ok();
    wait_stopped(&env, "k1");
    env.ctr(&["task", "delete", "k1"]).assert_ok();
    env.ctr(&["containers", "delete", "k1"]).assert_ok();
    assert_eq!(env.leftovers(), Vec::<String>::new());
}

/// Podman 4.3 with conmon, ferrum as its `--runtime`, runc as the reference
/// (bookworm's crun refuses this hybrid cgroup layout).
mod podman {
    use ferrum_tests::podman::Podman;

    fn with_flags<'a>(pm: &'a Podman, flags: &'a [String], rest: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["run"];
        args.extend(flags.iter().map(String::as_str));
        args.extend(rest);
        let _ = pm;
        args
    }

    #[test]
    fn run_exec_stop_logs_and_rm() {
        let pm = Podman::start().expect("podman");
        let flags = pm.run_flags();
        let image = ferrum_tests::image::DEFAULT_IMAGE;
        for runtime in ["runc", "ferrum"] {
            let out = pm.podman(runtime, &with_flags(&pm, &flags, &["--rm", image, "sh", "-c", "echo out; exit 3"]));
            assert_eq!((out.status, out.stdout.trim()), (Some(3), "out"), "{runtime}: {out}");
            // The sleep: conmon loses a terminal's output when the process
            // exits at once (measured: runc 5 of 25 runs, ferrum 1 of 25).
            let tty = pm.podman_in_terminal(runtime, &with_flags(&pm, &flags, &["--rm", "-it", image, "sh", "-c", "tty; sleep 0.2"]));
            assert!(tty.assert_ok().stdout.contains("/dev/pts/0"), "{runtime}: {tty}");
            let missing = pm.podman(runtime, &with_flags(&pm, &flags, &["--rm", image, "/nonexistent"]));
            assert_eq!(missing.status, Some(127), "{runtime}: {missing}");

            pm.podman(runtime, &with_flags(&pm, &flags, &["-d", "--name", "p1", image, "sh", "-c", "echo started; sleep 1000"])).assert_ok();
            let exec = pm.podman(runtime, &["exec", "p1", "sh", "-c", "echo in-exec; exit 4"]);
            assert_eq!((exec.status, exec.stdout.trim()), (Some(4), "in-exec"), "{runtime}: {exec}");
            let ps = pm.podman(runtime, &["ps", "--format", "{{.Names}} {{.Status}}"]);
            assert!(ps.assert_ok().stdout.lines().any(|l| l.starts_with("p1 Up")), "{runtime}: {ps}");
            // sleep as pid 1 ignores SIGTERM: Podman's SIGKILL after the timeout ends it.
            pm.podman(runtime, &["stop", "--time", "1", "p1"]).assert_ok();
            let state = pm.podman(runtime, &["inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", "p1"]);
            assert_eq!(state.assert_ok().stdout.trim(), "exited 137", "{runtime}: {state}");
            let logs = pm.podman(runtime, &["logs", "p1"]);
            assert_eq!(logs.assert_ok().stdout.trim(), "started", "{runtime}: {logs}");
            pm.podman(runtime, &["rm", "p1"]).assert_ok();
        }
        assert_eq!(pm.leftovers(), Vec::<String>::new());
    }
}

/// The CLI on its own, as go-runc's users and scripts call it, on a bundle
/// made from `runc spec` (runc on the same bundle as the reference).
mod direct {
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};

    /// A bundle and a --root per runtime under a temp dir; Drop deletes
    /// every container by force and removes the dir.
    struct Bundle {
        dir: PathBuf,
        ids: Vec<(String, String)>,
        /// Global flags before every command (`--criu PATH`).
        global: Vec<String>,
    }

    impl Bundle {
        fn new(name: &str, args: &[&str], edit: impl FnOnce(&mut serde_json::Value)) -> Bundle {
            let dir = PathBuf::from(format!("/tmp/ferrum-cli-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("rootfs/bin")).unwrap();
            std::fs::copy("/bin/busybox", dir.join("rootfs/bin/busybox")).unwrap();
            let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
            for applet in String::from_utf8_lossy(&list.stdout).lines().filter(|a| *a != "busybox") {
                std::os::unix::fs::symlink("busybox", dir.join("rootfs/bin").join(applet)).unwrap();
            }
            assert!(Command::new("runc").arg("spec").current_dir(&dir).status().unwrap().success());
            let file = dir.join("config.json");
            let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
            spec["process"]["terminal"] = false.into();
            spec["process"]["args"] = serde_json::json!(args);
            edit(&mut spec);
            std::fs::write(&file, spec.to_string()).unwrap();
            Bundle { dir, ids: Vec::new(), global: Vec::new() }
        }

        fn binary(runtime: &str) -> PathBuf {
            if runtime == "ferrum" { ferrum_tests::ferrum_binary("ferrum") } else { PathBuf::from("runc") }
        }

        /// `RUNTIME --root ROOT ARGS…`, stdio null; stdout as text.
        fn cmd(&self, runtime: &str, args: &[&str]) -> Command {
            let mut c = Command::new(Self::binary(runtime));
            c.arg("--root").arg(self.dir.join(format!("root-{runtime}"))).args(&self.global).args(args);
            c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
            c
        }

        fn ok(&mut self, runtime: &str, args: &[&str]) -> String {
            let (ok, stdout, stderr) = self.attempt(runtime, args);
            assert!(ok, "{runtime} {args:?}: {stderr}");
            stdout
        }

        /// `runtime ARGS…`: whether it succeeded, its stdout and stderr.
        fn attempt(&mut self, runtime: &str, args: &[&str]) -> (bool, String, String) {
            let mut c = self.cmd(runtime, args);
            let detached = matches!(args[0], "create") || args[..2] == ["run", "-d"] || args[..2] == ["restore", "-d"];
            let log = self.dir.join(format!("stderr-{runtime}"));
            if let Some(id) = args.last().filter(|_| matches!(args[0], "create" | "run" | "restore")) {
                self.ids.push((runtime.into(), id.to_string()));
            }
            if detached {
                // The container keeps the runtime's stdio: no pipe of ours
                // to wait on; its stderr goes to a file we read on failure.
                c.stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
            }
            let out = c.output().unwrap();
            let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            if detached {
                stderr += &std::fs::read_to_string(&log).unwrap_or_default();
            }
            (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
        }

        /// The container's status, or "(none)" when `state` fails.
        fn status(&mut self, runtime: &str, id: &str) -> String {
            match self.attempt(runtime, &["state", id]) {
                (true, out, _) => serde_json::from_str::<serde_json::Value>(&out).unwrap()["status"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                _ => "(none)".into(),
            }
        }

        /// Waits (up to 10 s) until the container's status is `want`.
        fn wait_status(&mut self, runtime: &str, id: &str, want: &str) -> String {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let status = self.status(runtime, id);
                if status == want || std::time::Instant::now() > deadline {
                    return status;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }

        fn path(&self) -> &Path {
            &self.dir
        }
    }

    impl Drop for Bundle {
        fn drop(&mut self) {
            for (runtime, id) in &self.ids {
                let _ = self.cmd(runtime, &["delete", "--force", id]).output();
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Both runtimes with the same CRIU: a counter checkpointed (it stops),
    /// deleted, and restored under a new id carries on; the prestart and
    /// createRuntime hooks run again at the restore with the restored pid,
    /// as runc runs them; a hook that fails there fails the restore by name
    /// and leaves no state.
    #[test]
    fn checkpoint_and_restore_run_the_hooks_again_as_runc() {
        let dir = PathBuf::from(format!("/tmp/ferrum-cli-{}-restore-hooks", std::process::id()));
        let (log, logger) = (dir.join("hooks.log"), dir.join("logger.sh"));
        let hook = |name: &str| serde_json::json!({ "path": logger, "args": ["logger", name] });
        let mut b = Bundle::new("restore-hooks", &["sh", "-c", ferrum_tests::counter::COUNTER], |spec| {
            spec["root"]["readonly"] = false.into();
            spec["hooks"] = serde_json::json!({ "prestart": [hook("prestart")], "createRuntime": [hook("createRuntime")] });
        });
        let criu = ferrum_tests::criu_dir().expect("CRIU").join("criu");
        b.global = vec!["--criu".into(), criu.display().to_string()];
        let script = format!("#!/bin/sh\nstate=$(cat)\necho \"$1 $state\" >> {}\n", log.display());
        std::fs::write(&logger, script).unwrap();
        std::fs::set_permissions(&logger, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let bundle = b.path().display().to_string();
        let count = || ferrum_tests::counter::read(&b_rootfs_count(&bundle));
        let wait_for = |at_least| ferrum_tests::counter::wait_for("the bundle's counter", count, at_least);
        let mut seen = Vec::new();
        for runtime in ["runc", "ferrum"] {
            let _ = std::fs::remove_file(&log);
            let _ = std::fs::remove_file(b_rootfs_count(&bundle));
            // Ids no other test takes: without cgroupsPath the cgroup is /<id>.
            let (id, again) = (format!("ckpt-{runtime}"), format!("rstr-{runtime}"));
            let images = dir.join(format!("images-{runtime}"));
            let images = images.display().to_string();
            // stdio /dev/null: runc cannot dump a container whose stdio is a
            // file outside it (ferrum declares such files external).
            let ran = b.cmd(runtime, &["run", "-d", "--bundle", &bundle, &id]).stdout(Stdio::null()).stderr(Stdio::null()).status();
            assert!(ran.unwrap().success(), "{runtime} run -d");
            b.ids.push((runtime.into(), id.clone()));
            let before = wait_for(5);
            b.ok(runtime, &["checkpoint", "--image-path", &images, &id]);
            // Without --leave-running the container is gone, state and all.
            assert_eq!(b.wait_status(runtime, &id, "(none)"), "(none)", "{runtime}: checkpointed without --leave-running");
            // Dumped between truncating and writing, the file stays empty.
            let stopped_at = count().unwrap_or(before);
            b.ok(runtime, &["restore", "-d", "--image-path", &images, "--bundle", &bundle, &again]);
            let first = wait_for(stopped_at + 1);
            assert!(first >= before && first <= stopped_at + 30, "{runtime}: restored at {first}, stopped at {stopped_at}");
            let state: serde_json::Value = serde_json::from_str(&b.ok(runtime, &["state", &again])).unwrap();
            let pid = state["pid"].as_i64().unwrap();
            let lines: Vec<String> = std::fs::read_to_string(&log).unwrap().lines().map(String::from).collect();
            let shape: Vec<String> = lines
                .iter()
                .map(|l| {
                    let (name, state) = l.split_once(' ').unwrap();
                    let state: serde_json::Value = serde_json::from_str(state).unwrap();
                    let which = if state["pid"].as_i64() == Some(pid) { "restored" } else { "first" };
                    format!("{name} {which}")
                })
                .collect();
            b.ok(runtime, &["delete", "--force", &again]);
            seen.push(shape);
        }
        let want = ["prestart first", "createRuntime first", "prestart restored", "createRuntime restored"];
        assert_eq!(seen[0], want, "runc");
        assert_eq!(seen[1], want, "ferrum");

        // A hook that fails at the restore fails it, by name, and nothing is left.
        let failing = "#!/bin/sh\necho 'no restore for you' >&2\nexit 3\n";
        b.ok("ferrum", &["run", "-d", "--bundle", &bundle, "ckpt-fail"]);
        wait_for(3);
        let images = dir.join("images-failing").display().to_string();
        b.ok("ferrum", &["checkpoint", "--image-path", &images, "ckpt-fail"]);
        std::fs::write(&logger, failing).unwrap();
        let (ok, _, stderr) = b.attempt("ferrum", &["restore", "-d", "--image-path", &images, "--bundle", &bundle, "rstr-fail"]);
        assert!(!ok && stderr.contains("prestart hook #0") && stderr.contains("no restore for you"), "{stderr}");
        assert_eq!(b.status("ferrum", "rstr-fail"), "(none)", "the failed restore left its state");
        // Without cgroupsPath the cgroup is <our own>/<id> (v1's memory
        // hierarchy here, the unified one on a pure v2 host).
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let (base, own) = match own.lines().find_map(|l| l.split_once(":memory:")) {
            Some((_, p)) => ("/sys/fs/cgroup/memory", p.to_string()),
            None => ("/sys/fs/cgroup", own.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or("/").to_string()),
        };
        let cgroup = Path::new(base).join(own.trim_start_matches('/')).join("rstr-fail");
        assert!(!cgroup.exists(), "the failed restore left {}", cgroup.display());
    }

    fn b_rootfs_count(bundle: &str) -> PathBuf {
        Path::new(bundle).join("rootfs/count")
    }

    fn keys(v: &serde_json::Value) -> Vec<String> {
        v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
    }

    #[test]
    fn state_ps_and_stats_have_runcs_shape() {
        let mut b = Bundle::new("shape", &["sleep", "1000"], |_| {});
        let bundle = b.path().display().to_string();
        let mut seen = Vec::new();
        for runtime in ["runc", "ferrum"] {
            // Ids of their own: with no cgroupsPath both take /<id> as cgroup.
            let id = format!("s-{runtime}");
            b.ok(runtime, &["run", "-d", "--bundle", &bundle, &id]);
            let state: serde_json::Value = serde_json::from_str(&b.ok(runtime, &["state", &id])).unwrap();
            assert_eq!((state["status"].as_str(), state["id"].as_str()), (Some("running"), Some(id.as_str())), "{runtime}");
            let ps: Vec<i32> = serde_json::from_str(&b.ok(runtime, &["ps", "--format", "json", &id])).unwrap();
            assert_eq!(ps, [state["pid"].as_i64().unwrap() as i32], "{runtime}");
            let stats: serde_json::Value = serde_json::from_str(&b.ok(runtime, &["events", "--stats", &id])).unwrap();
            assert_eq!(stats["type"], "stats");
            assert!(stats["data"]["memory"]["usage"]["usage"].as_u64().unwrap() > 0, "{runtime}: {stats}");
            assert_eq!(stats["data"]["pids"]["current"], 1, "{runtime}: {stats}");
            b.ok(runtime, &["kill", &id, "KILL"]);
            seen.push((keys(&state), keys(&stats["data"]["cpu"]["usage"]), keys(&stats["data"]["memory"]["usage"])));
        }
        // Every field runc prints that go-runc decodes, ferrum prints too.
        let (runc, ferrum) = (&seen[0], &seen[1]);
        for (theirs, ours) in [(&runc.0, &ferrum.0), (&runc.1, &ferrum.1), (&runc.2, &ferrum.2)] {
            let missing: Vec<&String> = theirs.iter().filter(|k| !ours.contains(k) && !k.starts_with("percpu_")).collect();
            assert!(missing.is_empty(), "ferrum lacks {missing:?} (runc: {theirs:?}, ferrum: {ours:?})");
        }
    }

    #[test]
    fn an_oom_kill_is_an_oom_event() {
        let allocate = ["sh", "-c", "x=0123456789abcdef; while :; do x=$x$x; done"];
        let mut b = Bundle::new("oom", &allocate, |spec| {
            spec["linux"]["resources"]["memory"] = serde_json::json!({ "limit": 16 << 20 });
        });
        let bundle = b.path().display().to_string();
        b.ok("ferrum", &["create", "--bundle", &bundle, "o1"]);
        let events = b.cmd("ferrum", &["events", "--interval", "1s", "o1"]).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        b.ok("ferrum", &["start", "o1"]);
        // events ends with the container.
        let out = events.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.lines().any(|l| l == r#"{"id":"o1","type":"oom"}"#), "no oom event: {text}");
        let state: serde_json::Value = serde_json::from_str(&b.ok("ferrum", &["state", "o1"])).unwrap();
        assert_eq!(state["status"], "stopped");
    }

    /// Commands on one container, each noted with whether it succeeded and
    /// the status after it.
    struct Walk<'a> {
        b: &'a mut Bundle,
        runtime: &'a str,
        id: &'a str,
        steps: Vec<String>,
    }

    impl Walk<'_> {
        fn step(&mut self, args: &[&str]) {
            let (ok, _, _) = self.b.attempt(self.runtime, args);
            let status = self.b.status(self.runtime, self.id);
            let outcome = if ok { "ok" } else { "fails" };
            self.steps.push(format!("{} -> {outcome} ({status})", args.join(" ").replace(self.id, "ID")));
        }

        /// A kill with SIGKILL: whether it was taken, then the status once
        /// the process is gone (right after the kill it is a race).
        fn kill(&mut self) {
            let (ok, _, _) = self.b.attempt(self.runtime, &["kill", self.id, "KILL"]);
            let status = self.b.wait_status(self.runtime, self.id, "stopped");
            self.steps.push(format!("kill ID KILL -> {} ({status})", if ok { "ok" } else { "fails" }));
        }
    }

    /// The runtime-spec's lifecycle, command by command, under runc and
    /// ferrum: every command succeeds or fails alike, every status is the same.
    #[test]
    fn the_lifecycle_walks_as_runcs() {
        let mut b = Bundle::new("walk", &["sleep", "1000"], |_| {});
        let bundle = b.path().display().to_string();
        let walks = ["runc", "ferrum"].map(|runtime| {
            let id = format!("w-{runtime}");
            let mut walk = Walk { b: &mut b, runtime, id: &id, steps: Vec::new() };
            walk.step(&["create", "--bundle", &bundle, &id]);
            walk.step(&["start", &id]);
            walk.step(&["start", &id]);
            walk.step(&["delete", &id]);
            walk.kill();
            walk.step(&["start", &id]);
            walk.step(&["delete", &id]);
            walk.step(&["delete", &id]);
            // A created container: killed, and deleted without --force.
            walk.step(&["create", "--bundle", &bundle, &id]);
            walk.kill();
            walk.step(&["delete", &id]);
            walk.step(&["create", "--bundle", &bundle, &id]);
            walk.step(&["delete", &id]);
            // A running one needs --force.
            walk.step(&["run", "-d", "--bundle", &bundle, &id]);
            walk.step(&["delete", "--force", &id]);
            walk.step(&["delete", "--force", &id]);
            walk.steps
        });
        assert_eq!(walks[0], walks[1], "runc walked left, ferrum right");
        assert!(walks[1].iter().any(|s| s == "start ID -> fails (running)"), "{:#?}", walks[1]);
    }

    /// runc's extra fds: systemd's socket activation (LISTEN_FDS with
    /// LISTEN_PID the runtime's pid) first, then --preserve-fds, as the
    /// process's 3, 4, …, with LISTEN_FDS/LISTEN_PID=1 in its environment.
    #[test]
    fn preserved_and_activated_fds_reach_the_process_as_with_runc() {
        let script = "cat <&3; cat <&4; echo \"$LISTEN_FDS $LISTEN_PID\"; ls /proc/self/fd";
        let b = Bundle::new("fds", &["sh", "-c", script], |_| {});
        std::fs::write(b.path().join("f3"), "activated\n").unwrap();
        std::fs::write(b.path().join("f4"), "preserved\n").unwrap();
        let run = |runtime: &str, preserve: &str| {
            let id = format!("f-{runtime}");
            let c = b.cmd(runtime, &["run", "--preserve-fds", preserve, "--bundle", &b.path().display().to_string(), &id]);
            // The runtime as a socket-activated service: its own pid in
            // LISTEN_PID, which only a shell exec'ing it knows.
            let program = c.get_program().to_owned();
            let args: Vec<_> = c.get_args().map(|a| a.to_owned()).collect();
            let mut sh = Command::new("sh");
            sh.arg("-c").arg("exec 3<f3 4<f4; LISTEN_PID=$$ LISTEN_FDS=1 exec \"$@\"").arg("sh").arg(program).args(args);
            sh.current_dir(b.path()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
            let out = sh.output().unwrap();
            (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
        };
        let runc = run("runc", "1");
        let ferrum = run("ferrum", "1");
        assert!(runc.0, "runc: {runc:?}");
        assert_eq!(ferrum, runc, "ferrum's process saw other fds than runc's");
        assert!(ferrum.1.starts_with("activated\npreserved\n1 1\n0\n1\n2\n3\n4\n"), "{ferrum:?}");
        // fds 5 and 6 are not open: named, where runc passes its own.
        let missing = run("ferrum", "3");
        assert!(!missing.0 && missing.2.contains("preserved-fd 1 (of 3)"), "{missing:?}");
    }

    /// Commands on one container take turns: of four concurrent
    /// `delete --force`, each succeeds and the container is gone once.
    #[test]
    fn concurrent_deletes_each_succeed_once() {
        let mut b = Bundle::new("deletes", &["sleep", "1000"], |_| {});
        let bundle = b.path().display().to_string();
        b.ok("ferrum", &["run", "-d", "--bundle", &bundle, "d1"]);
        let deletes: Vec<_> =
            (0..4).map(|_| b.cmd("ferrum", &["delete", "--force", "d1"]).spawn().unwrap()).collect();
        for d in deletes {
            let out = d.wait_with_output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        assert_eq!(b.status("ferrum", "d1"), "(none)");
        let cgroup = ["/sys/fs/cgroup/d1", "/sys/fs/cgroup/pids/d1", "/sys/fs/cgroup/memory/d1"];
        assert!(cgroup.iter().all(|c| !Path::new(c).exists()), "a cgroup of d1 is left");
    }

    /// The differential probe on one bundle with the CLI's own --no-pivot
    /// (through ctr that flag becomes a task option, and runc runs instead).
    #[test]
    fn without_pivot_root_the_container_is_runcs() {
        use ferrum_tests::probe::{Probe, PROBE};
        let b = Bundle::new("nopivot", &["sh", "-c", PROBE], |_| {});
        let bundle = b.path().display().to_string();
        // One id: each runtime's container is gone before the next one's.
        let [mut runc, ferrum] = ["runc", "ferrum"].map(|runtime| {
            let out = b.cmd(runtime, &["run", "--no-pivot", "--bundle", &bundle, "probe"]).output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{runtime}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
            Probe::parse(&stdout).unwrap_or_else(|e| panic!("{runtime}: {e}\n{stdout}"))
        });
        // Deliberate: runc 1.1.5 leaves a v1 host's cgroup tmpfs writable
        // though the spec's cgroup mount says ro; ferrum makes it ro.
        let tmpfs = "/ /sys/fs/cgroup {},nosuid,nodev,noexec,relatime - tmpfs tmpfs {},mode=755";
        let writable = tmpfs.replace("{}", "rw");
        if runc.section("mountinfo").contains(&writable) {
            runc.replace_line("mountinfo", &writable, &tmpfs.replace("{}", "ro"));
        }
        let diff = runc.differences("runc", &ferrum, "ferrum");
        assert!(diff.is_empty(), "ferrum's container differs from runc's:\n{diff}");
    }

    /// The six hook kinds, each noting its kind and the status it was given,
    /// through create, start, the process's exit and delete: the spec's order
    /// under ferrum, runc 1.1.5's where it keeps the spec's.
    #[test]
    fn hooks_run_in_the_specs_order() {
        let b = Bundle::new("hooks", &["true"], |_| {});
        let log_dir = b.path().join("hooks");
        std::fs::create_dir(&log_dir).unwrap();
        // The status from the state on stdin; startContainer runs in the
        // container, where the log dir is bound at /hooks.
        let note = |kind: &str, dir: &str| {
            let script = format!(r#"read -r s; echo "{kind} $(echo "$s" | sed 's/.*"status":"\([a-z]*\)".*/\1/')" >> {dir}/log"#);
            serde_json::json!({ "path": "/bin/sh", "args": ["sh", "-c", script] })
        };
        let host = log_dir.display().to_string();
        let hooks = serde_json::json!({
            "prestart": [note("prestart", &host)],
            "createRuntime": [note("createRuntime", &host)],
            // Before pivot_root: the container's mount namespace, the host's root.
            "createContainer": [note("createContainer", &host)],
            "startContainer": [note("startContainer", "/hooks")],
            "poststart": [note("poststart", &host)],
            "poststop": [note("poststop", &host)],
        });
        let mount = serde_json::json!({ "destination": "/hooks", "type": "bind", "source": host, "options": ["rbind", "rw"] });
        let file = b.path().join("config.json");
        let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        spec["hooks"] = hooks;
        spec["mounts"].as_array_mut().unwrap().push(mount);
        std::fs::write(&file, spec.to_string()).unwrap();
        let bundle = b.path().display().to_string();
        let mut b = b;
        let [runc, ferrum] = ["runc", "ferrum"].map(|runtime| {
            let id = format!("h-{runtime}");
            b.ok(runtime, &["create", "--bundle", &bundle, &id]);
            b.ok(runtime, &["start", &id]);
            b.wait_status(runtime, &id, "stopped");
            b.ok(runtime, &["delete", &id]);
            let log = std::fs::read_to_string(log_dir.join("log")).unwrap_or_default();
            std::fs::remove_file(log_dir.join("log")).ok();
            log.lines().map(str::to_string).collect::<Vec<_>>()
        });
        let spec_order = [
            "prestart creating",
            "createRuntime creating",
            "createContainer creating",
            "startContainer created",
            "poststart running",
            "poststop stopped",
        ];
        assert_eq!(ferrum, spec_order, "ferrum's hooks (runc's: {runc:?})");
        // runc 1.1.5 runs poststart as soon as init opens the exec FIFO:
        // before startContainer, with the status still `created`.
        let runc_order = [spec_order[0], spec_order[1], spec_order[2], "poststart created", spec_order[3], spec_order[5]];
        assert_eq!(runc, runc_order, "runc's hooks");
    }

    /// `run` and `exec -t` in the foreground without a console socket attach
    /// our own terminal, as runc's do: the process's tty, what it prints,
    /// what is typed to it, and its exit status.
    #[test]
    fn run_and_exec_attach_our_terminal_as_runcs() {
        use ferrum_tests::ctr::in_terminal;
        let script = "tty; read -r line; echo \"got $line\"; exit 3";
        let tty = Bundle::new("tty", &["sh", "-c", script], |spec| spec["process"]["terminal"] = true.into());
        let mut idle = Bundle::new("tty-exec", &["sleep", "1000"], |_| {});
        // The terminals echo what is typed whenever it arrives: those lines
        // are left out, the rest is the process's. Carriage returns too: a
        // line may pass one or two ONLCR translations, as the caller's
        // terminal turns raw before or after it.
        let shown = |out: ferrum_tests::CtrOutput| {
            let text = out.stdout.replace('\r', "");
            let lines: Vec<&str> = text.split('\n').collect();
            (out.status, lines.into_iter().filter(|l| !["typed", "more", ""].contains(l)).collect::<Vec<_>>().join("\n"))
        };
        let [runc, ferrum] = ["runc", "ferrum"].map(|runtime| {
            let bundle = tty.path().display().to_string();
            let run = tty.cmd(runtime, &["run", "--bundle", &bundle, &format!("t-{runtime}")]);
            let run = shown(in_terminal(run, Some(b"typed\n")));
            let id = format!("x-{runtime}");
            idle.ok(runtime, &["run", "-d", "--bundle", &idle.path().display().to_string(), &id]);
            let exec = idle.cmd(runtime, &["exec", "-t", &id, "sh", "-c", script]);
            let exec = shown(in_terminal(exec, Some(b"more\n")));
            idle.ok(runtime, &["delete", "--force", &id]);
            (run, exec)
        });
        assert_eq!(ferrum, runc, "ferrum (left) differs from runc (right)");
        let ((status, out), (exec_status, exec_out)) = ferrum;
        assert_eq!((status, exec_status), (Some(3), Some(3)));
        assert_eq!(out, "/dev/pts/0\ngot typed");
        assert!(exec_out.starts_with("/dev/pts/") && exec_out.ends_with("\ngot more"), "{exec_out:?}");
    }

    /// A foreground `run` passes its terminal's size changes on to the
    /// container's pty, as runc's does: the terminal is a pty of the test's,
    /// resized (and the runtime sent SIGWINCH, as a terminal does) while the
    /// process waits; it then prints its size.
    #[test]
    fn a_foreground_run_passes_on_resizes_as_runcs() {
        use nix::pty::{openpty, Winsize};
        use std::io::Read;
        let b = Bundle::new("winch", &["sh", "-c", "stty size; sleep 1; stty size"], |spec| {
            spec["process"]["terminal"] = true.into()
        });
        let bundle = b.path().display().to_string();
        let [runc, ferrum] = ["runc", "ferrum"].map(|runtime| {
            let size = |rows, cols| Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
            let pty = openpty(Some(&size(24, 80)), None).unwrap();
            let run = b.cmd(runtime, &["run", "--bundle", &bundle, &format!("w-{runtime}")]);
            // Bounded: a runtime that hangs must fail the test, not stall it.
            let mut c = std::process::Command::new("timeout");
            c.arg("20").arg(run.get_program()).args(run.get_args());
            c.stdin(pty.slave.try_clone().unwrap()).stdout(pty.slave.try_clone().unwrap());
            let mut child = c.spawn().unwrap();
            // The Command holds its copies of the slave: only once they and
            // ours are closed does the master read EIO after the runtime.
            drop(c);
            drop(pty.slave);
            std::thread::sleep(std::time::Duration::from_millis(500));
            // SAFETY: TIOCSWINSZ with a valid winsize on the master we own.
            unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&pty.master), libc::TIOCSWINSZ, &size(40, 100)) };
            // timeout(1) does not pass SIGWINCH on: the runtime, its only
            // child, gets it directly, as a terminal would send it.
            let runtime_pid = std::fs::read_to_string(format!("/proc/{}/task/{}/children", child.id(), child.id())).unwrap();
            let runtime_pid: i32 = runtime_pid.trim().parse().unwrap();
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(runtime_pid), nix::sys::signal::Signal::SIGWINCH).unwrap();
            let mut out = Vec::new();
            // Ends with EIO once the runtime and the container are gone.
            let _ = std::fs::File::from(pty.master).read_to_end(&mut out);
            assert!(child.wait().unwrap().success(), "{runtime}");
            String::from_utf8_lossy(&out).replace('\r', "")
        });
        // After the resize, the same. Before it runc 1.1.5 sizes the pty only
        // once the process runs, and loses that race here (its process's
        // first `stty size` fails); ferrum sizes it before the start.
        assert_eq!(ferrum.lines().last(), runc.lines().last(), "after the resize: ferrum (left), runc (right)");
        assert_eq!(ferrum, "24 80\n40 100\n");
    }
}
