//! Seccomp through ctr -> containerd -> ferrum: containerd's default profile and
//! custom ones, for the container's process and for its execs.

use std::time::Duration;

use ferrum_tests::Env;

const GRACE: Duration = Duration::from_secs(5);

/// mkdir fails with EPERM, chdir with ENOSYS; everything else is allowed.
const PROFILE: &str = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
  {"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
  {"names":["chdir"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
  {"names":["no_such_syscall"],"action":"SCMP_ACT_KILL"}]}"#;

#[test]
fn containerds_default_profile_is_enforced() {
    let (env, image) = Env::with_busybox();
    let script = "grep Seccomp: /proc/self/status; unshare -U true 2>&1; echo end";
    let out = env.run_on_ferrum(&["--rm", "--seccomp"], &image, "c1", &["sh", "-c", script]);
    out.assert_ok();
    assert!(out.stdout.contains("Seccomp:\t2"), "a filter is installed: {out}");
    assert!(out.stdout.contains("Operation not permitted"), "unshare is refused: {out}");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

#[test]
fn a_custom_profile_applies_to_the_container_and_its_execs() {
    let (env, image) = Env::with_busybox();
    let profile = env.root_dir().join("profile.json");
    std::fs::write(&profile, PROFILE).unwrap();
    let profile = profile.to_string_lossy();
    env.run_on_ferrum(&["-d", "--seccomp", "--seccomp-profile", &profile], &image, "c1", &["sleep", "600"])
        .assert_ok();
    let out = env.ctr(&["tasks", "exec", "--exec-id", "e1", "c1", "sh", "-c", "mkdir /tmp/x; cd /tmp; echo end"]);
    out.assert_ok();
    assert!(out.stderr.contains("Operation not permitted"), "mkdir gets EPERM: {out}");
    assert!(out.stderr.contains("Function not implemented"), "chdir gets ENOSYS: {out}");
    assert!(out.stdout.contains("end"), "{out}");

    env.remove_task("c1");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}
