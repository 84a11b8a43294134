//! OCI hooks through containerd: all six kinds run in order with the state on
//! stdin, their args and env, the same as under runc; a failing or hanging
//! hook fails the container with the hook's own words and leaves nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use ferrum_tests::{Env, SpecFile, FERRUM_RUNTIME};
use serde_json::{json, Value};

const RUNC: &str = "io.containerd.runc.v2";
const GRACE: Duration = Duration::from_secs(5);

/// Appends `<name> <$HOOK_ENV> <state JSON>` to the log given as $2.
const LOGGER: &str =
    "#!/bin/sh\nstate=$(cat)\nprintf '%s %s %s\\n' \"$1\" \"$HOOK_ENV\" \"$state\" >> \"$2\"\n";

fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::os::unix::fs::PermissionsExt::set_mode(
        &mut std::fs::metadata(path).unwrap().permissions(),
        0o755,
    );
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

fn hook(path: &Path, name: &str, log: &Path) -> Value {
    json!({ "path": path, "args": ["logger", name, log], "env": ["HOOK_ENV=set"], "timeout": 10 })
}

/// Runs `true` with one logging hook of each kind, and returns the log as
/// (hook, env, status, pid) with pids reduced to what must match across
/// runtimes: 1 inside the container, "host" outside, "none" without.
fn hook_sequence(env: &Env, runtime: &str, id: &str) -> Vec<String> {
    let mut file = SpecFile::new(env, id, &["true"]).unwrap();
    let host_logger = env.root_dir().join(format!("{id}-logger.sh"));
    write_script(&host_logger, LOGGER);
    // startContainer runs in the container, after pivot_root: its own copy.
    write_script(&file.rootfs.join("logger.sh"), LOGGER);
    let host_log = file.rootfs.join("hooks.log");
    let in_container = Path::new("/logger.sh");
    file.spec["hooks"] = json!({
        "prestart": [hook(&host_logger, "prestart", &host_log)],
        "createRuntime": [hook(&host_logger, "createRuntime", &host_log)],
        "createContainer": [hook(&host_logger, "createContainer", &host_log)],
        "startContainer": [hook(in_container, "startContainer", Path::new("/hooks.log"))],
        "poststart": [hook(&host_logger, "poststart", &host_log)],
        "poststop": [hook(&host_logger, "poststop", &host_log)],
    });
    file.run(env, runtime, &["--rm"]).unwrap().assert_ok();
    let log = std::fs::read_to_string(&host_log)
        .unwrap_or_else(|e| panic!("{}: {e}", host_log.display()));
    log.lines()
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            let (name, hook_env, state) = (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            let state: Value =
                serde_json::from_str(state).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(state["id"], id, "{line}");
            assert!(
                state["bundle"].as_str().is_some_and(|b| b.ends_with(id)),
                "{line}"
            );
            let pid = match state["pid"].as_i64() {
                Some(1) => "1",
                Some(p) if p > 1 => "host",
                _ => "none",
            };
            format!(
                "{name} env={hook_env} status={} pid={pid}",
                state["status"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

#[test]
fn every_hook_kind_runs_in_order_with_the_state_as_runc() {
    let env = Env::start().unwrap();
    let ours = hook_sequence(&env, FERRUM_RUNTIME, "f1");
    let names: Vec<&str> = ours.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        names,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ],
        "{ours:#?}"
    );
    assert!(ours.iter().all(|l| l.contains("env=set")), "{ours:#?}");
    assert_eq!(ours[4], "poststart env=set status=running pid=host");
    // A deliberate difference: runc runs poststart as soon as it has told init
    // to go, racing the startContainer hooks, with the state still "created".
    // The spec says after the user's process has started, as ferrum does (it
    // waits for the exec). Everything else must be the same.
    let normalise = |mut lines: Vec<String>| {
        lines.retain(|l| !l.starts_with("poststart "));
        lines
    };
    let runcs = hook_sequence(&env, RUNC, "r1");
    assert!(
        runcs
            .iter()
            .any(|l| l.starts_with("poststart env=set status=created pid=host")),
        "{runcs:#?}"
    );
    assert_eq!(
        normalise(ours),
        normalise(runcs),
        "ferrum's hooks differ from runc's"
    );
    assert_eq!(
        env.leftovers_after(GRACE),
        Vec::<String>::new(),
        "left behind"
    );
}

#[test]
fn a_failing_hook_fails_the_container_with_its_own_words_and_the_next_one_runs() {
    let env = Env::start().unwrap();
    let failing = env.root_dir().join("failing.sh");
    write_script(
        &failing,
        "#!/bin/sh\necho 'no network for you' >&2\nexit 3\n",
    );
    let mut file = SpecFile::new(&env, "bad", &["true"]).unwrap();
    file.spec["hooks"] = json!({ "createRuntime": [{ "path": failing }] });
    let out = file.run(&env, FERRUM_RUNTIME, &["--rm"]).unwrap();
    assert!(!out.success(), "{out}");
    assert!(out.stderr.contains("createRuntime hook #0"), "{out}");
    assert!(
        out.stderr.contains("exited with status 3") && out.stderr.contains("no network for you"),
        "{out}"
    );
    env.ctr(&["containers", "rm", "bad"]);

    let good = SpecFile::new(&env, "good", &["echo", "still serving"]).unwrap();
    let out = good.run(&env, FERRUM_RUNTIME, &["--rm"]).unwrap();
    out.assert_ok();
    assert!(out.stdout.contains("still serving"), "{out}");
    assert_eq!(
        env.leftovers_after(GRACE),
        Vec::<String>::new(),
        "left behind"
    );
}

#[test]
fn a_hook_past_its_timeout_is_killed_and_fails_the_container() {
    let env = Env::start().unwrap();
    let hanging = env.root_dir().join("hanging.sh");
    write_script(&hanging, "#!/bin/sh\nsleep 60\n");
    let mut file = SpecFile::new(&env, "slow", &["true"]).unwrap();
    file.spec["hooks"] = json!({ "prestart": [{ "path": hanging, "timeout": 1 }] });
    let started = Instant::now();
    let out = file.run(&env, FERRUM_RUNTIME, &["--rm"]).unwrap();
    assert!(
        !out.success() && out.stderr.contains("timed out after 1s"),
        "{out}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    env.ctr(&["containers", "rm", "slow"]);
    assert_eq!(
        env.leftovers_after(GRACE),
        Vec::<String>::new(),
        "left behind"
    );
}

#[test]
fn a_failing_poststop_hook_is_only_a_warning() {
    let env = Env::start().unwrap();
    let failing = env.root_dir().join("failing.sh");
    write_script(&failing, "#!/bin/sh\nexit 1\n");
    let mut file = SpecFile::new(&env, "ps", &["true"]).unwrap();
    file.spec["hooks"] = json!({ "poststop": [{ "path": failing }] });
    file.run(&env, FERRUM_RUNTIME, &["--rm"])
        .unwrap()
        .assert_ok();
    assert_eq!(
        env.leftovers_after(GRACE),
        Vec::<String>::new(),
        "left behind"
    );
}
