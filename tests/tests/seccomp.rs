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

/// A seccomp listener as a supervisor would run one: it receives the filter's
/// fd with the container's process state at listenerPath, then answers every
/// notified syscall with EACCES until the container is gone. Returns the
/// state JSON and how many syscalls it answered.
fn serve_listener(socket: std::path::PathBuf) -> std::thread::JoinHandle<(serde_json::Value, usize)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 16384];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty()).unwrap();
        let fd = msg
            .cmsgs()
            .unwrap()
            .find_map(|c| match c {
                ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                _ => None,
            })
            .expect("an fd with the state");
        let len = msg.bytes;
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let state: serde_json::Value = serde_json::from_slice(&buf[..len]).unwrap();
        // linux/seccomp.h: SECCOMP_IOCTL_NOTIF_RECV / _SEND and their structs.
        const RECV: libc::c_ulong = 0xC050_2100;
        const SEND: libc::c_ulong = 0xC018_2101;
        let mut answered = 0;
        loop {
            let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            if unsafe { libc::poll(&mut pfd, 1, 30_000) } <= 0 || pfd.revents & libc::POLLHUP != 0 {
                break;
            }
            let mut notif = [0u64; 10]; // struct seccomp_notif: id, pid+flags, seccomp_data
            if unsafe { libc::ioctl(fd.as_raw_fd(), RECV, notif.as_mut_ptr()) } < 0 {
                break;
            }
            // struct seccomp_notif_resp: id, val, error (negative errno), flags.
            let resp: [u64; 3] = [notif[0], 0, (-libc::EACCES) as u32 as u64];
            if unsafe { libc::ioctl(fd.as_raw_fd(), SEND, resp.as_ptr()) } == 0 {
                answered += 1;
            }
        }
        (state, answered)
    })
}

#[test]
fn a_notify_rule_hands_the_syscall_to_the_listener_as_with_runc() {
    use ferrum_tests::{SpecFile, FERRUM_RUNTIME};
    let env = Env::start().unwrap();
    // mkdir's complaint on stdout, before rc=: runc-v2 copies each stream
    // after the exit and ctr may be gone before stderr's (seen in CI: runc's
    // stderr empty with its stdout whole).
    let script = "mkdir /tmp/x 2>&1; echo rc=$?; [ -d /tmp/x ] || echo absent";
    for (i, runtime) in [FERRUM_RUNTIME, "io.containerd.runc.v2"].into_iter().enumerate() {
        let socket = env.root_dir().join(format!("listener-{i}.sock"));
        let served = serve_listener(socket.clone());
        let id = format!("notify{i}");
        let mut file = SpecFile::new(&env, &id, &["sh", "-c", script]).unwrap();
        file.spec["linux"]["seccomp"] = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW", "listenerPath": socket, "listenerMetadata": "probe",
            "syscalls": [{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY" }],
        });
        let out = file.run(&env, runtime, &["--rm"]).unwrap();
        out.assert_ok();
        let (state, answered) = served.join().unwrap();
        assert!(out.stdout.contains("Permission denied"), "{runtime}: {out}");
        assert!(out.stdout.contains("rc=1") && out.stdout.contains("absent"), "{runtime}: {out}");
        assert_eq!(answered, 1, "{runtime}: {out}");
        assert_eq!(state["metadata"], "probe", "{runtime}: {state}");
        assert_eq!(state["fds"], serde_json::json!(["seccompFd"]), "{runtime}: {state}");
        assert_eq!(state["state"]["id"], id.as_str(), "{runtime}: {state}");
        assert!(state["pid"].as_i64().is_some_and(|p| p > 1), "{runtime}: {state}");
    }
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

#[test]
fn a_notify_rule_without_a_listener_fails_the_container_by_name() {
    use ferrum_tests::{SpecFile, FERRUM_RUNTIME};
    let env = Env::start().unwrap();
    let mut file = SpecFile::new(&env, "nolistener", &["true"]).unwrap();
    file.spec["linux"]["seccomp"] = serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{ "names": ["mkdir"], "action": "SCMP_ACT_NOTIFY" }],
    });
    let out = file.run(&env, FERRUM_RUNTIME, &["--rm"]).unwrap();
    assert!(!out.success() && out.stderr.contains("listenerPath"), "{out}");
    env.ctr(&["containers", "rm", "nolistener"]);
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}
