//! Seccomp through ctr -> containerd -> ferrum: containerd's default profile and
//! custom ones, for the container's process and for its execs.

use std::time::Duration;

use ferrum_tests::Env;

const RUNTIME: &str = "io.containerd.ferrum.v2";
const GRACE: Duration = Duration::from_secs(5);

/// mkdir fails with EPERM, chdir with ENOSYS; everything else is allowed.
const PROFILE: &str = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
  {"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1},
  {"names":["chdir"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
  {"names":["no_such_syscall"],"action":"SCMP_ACT_KILL"}]}"#;

fn env() -> (Env, String) {
    let env = Env::start().expect("starting containerd with ferrum");
    let image = env.import_busybox().expect("importing busybox");
    (env, image)
}

#[test]
fn containerds_default_profile_is_enforced() {
    let (env, image) = env();
    let out = env.ctr(&[
        "run", "--rm", "--runtime", RUNTIME, "--snapshotter", "ferrum", "--seccomp", &image, "c1", "sh", "-c",
        "grep Seccomp: /proc/self/status; unshare -U true 2>&1; echo end",
    ]);
    out.assert_ok();
    assert!(out.stdout.contains("Seccomp:\t2"), "a filter is installed: {out}");
    assert!(out.stdout.contains("Operation not permitted"), "unshare is refused: {out}");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

#[test]
fn a_custom_profile_applies_to_the_container_and_its_execs() {
    let (env, image) = env();
    let profile = env.root_dir().join("profile.json");
    std::fs::write(&profile, PROFILE).unwrap();
    let profile = profile.to_string_lossy();
    env.ctr(&[
        "run", "-d", "--runtime", RUNTIME, "--snapshotter", "ferrum", "--seccomp", "--seccomp-profile", &profile,
        &image, "c1", "sleep", "600",
    ])
    .assert_ok();
    let out = env.ctr(&["tasks", "exec", "--exec-id", "e1", "c1", "sh", "-c", "mkdir /tmp/x; cd /tmp; echo end"]);
    out.assert_ok();
    assert!(out.stderr.contains("Operation not permitted"), "mkdir gets EPERM: {out}");
    assert!(out.stderr.contains("Function not implemented"), "chdir gets ENOSYS: {out}");
    assert!(out.stdout.contains("end"), "{out}");

    env.ctr(&["tasks", "kill", "--signal", "SIGKILL", "c1"]).assert_ok();
    std::thread::sleep(Duration::from_millis(300));
    env.ctr(&["tasks", "delete", "c1"]).assert_ok();
    env.ctr(&["containers", "rm", "c1"]).assert_ok();
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}
