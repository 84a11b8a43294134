//! Log URIs (`ctr run --log-uri`): file:// and binary:// logging drivers, as
//! containerd's runc shim runs them.

use std::time::{Duration, Instant};

use ferrum_tests::Env;

const GRACE: Duration = Duration::from_secs(5);
const SCRIPT: &str = "echo to-stdout; echo to-stderr >&2";

/// A logging binary by containerd's contract: stdout on fd 3, stderr on fd 4,
/// fd 5 closed once ready; CONTAINER_ID and CONTAINER_NAMESPACE set.
const LOGGER: &str = r#"#!/bin/sh
out="$2"
exec 5>&-
cat <&4 >"$out.stderr" &
cat <&3 >"$out.stdout"
wait
echo "$CONTAINER_NAMESPACE/$CONTAINER_ID" >"$out.tmp" && mv "$out.tmp" "$out.owner"
"#;

fn wait_for(path: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn file_uri_collects_both_outputs() {
    let (env, image) = Env::with_busybox();
    let log = env.root_dir().join("c1.log");
    let uri = format!("file://{}", log.display());
    env.run_on_ferrum(&["--rm", "--log-uri", &uri], &image, "c1", &["sh", "-c", SCRIPT]).assert_ok();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("to-stdout\n") && text.contains("to-stderr\n"), "{text:?}");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

#[test]
fn binary_uri_runs_a_logging_driver() {
    let (env, image) = Env::with_busybox();
    let logger = env.root_dir().join("logger.sh");
    std::fs::write(&logger, LOGGER).unwrap();
    std::fs::set_permissions(&logger, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = env.root_dir().join("c1");
    let uri = format!("binary://{}?out={}", logger.display(), out.display());
    env.run_on_ferrum(&["--rm", "--log-uri", &uri], &image, "c1", &["sh", "-c", SCRIPT]).assert_ok();
    let owner = wait_for(&out.with_extension("owner"));
    assert_eq!(owner, format!("{}/c1\n", env.namespace()));
    assert_eq!(std::fs::read_to_string(out.with_extension("stdout")).unwrap(), "to-stdout\n");
    assert_eq!(std::fs::read_to_string(out.with_extension("stderr")).unwrap(), "to-stderr\n");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

#[test]
fn a_logging_binary_that_cannot_start_fails_the_container_cleanly() {
    let (env, image) = Env::with_busybox();
    let uri = "binary:///no/such/logger";
    let out = env.run_on_ferrum(&["--rm", "--log-uri", uri], &image, "c1", &["true"]);
    assert!(!out.success() && out.stderr.contains("/no/such/logger"), "{out}");
    env.run_on_ferrum(&["--rm"], &image, "c2", &["true"]).assert_ok();
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}
