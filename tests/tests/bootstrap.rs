//! The shim's `start` protocol at the protocol level, with our own client, for
//! the three generations of containerd: 1.x (bare address on stdout), 2.0–2.2
//! (MAX_SHIM_VERSION set, JSON reply) and 2.3+ (BootstrapParams on stdin,
//! BootstrapResult on stdout). Each reply must lead to a live Task service.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::{api, TaskClient};
use ferrum_tests::ferrum_binary;

/// A bundle dir of its own; on drop, kills the shim it started and removes it.
struct Bundle {
    dir: PathBuf,
    shim_pid: Option<i32>,
}

impl Bundle {
    fn new(tag: &str) -> Bundle {
        let dir = PathBuf::from(format!("/tmp/ferrum-boot-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("s")).unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        Bundle { dir, shim_pid: None }
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        if let Some(pid) = self.shim_pid {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(bundle: &Bundle, id: &str, env: &[(&str, &str)], stdin: &[u8]) -> Vec<u8> {
    let mut cmd = Command::new(ferrum_binary("containerd-shim-ferrum-v2"));
    let grpc = bundle.dir.join("no-containerd.sock");
    cmd.args(["-namespace", "ferrum-boot", "-address", &grpc.to_string_lossy(), "-publish-binary", "/bin/true"])
        .args(["-id", id, "start"])
        .current_dir(&bundle.dir)
        .env_remove("MAX_SHIM_VERSION")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn the shim");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "start failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Talk to the shim at `address`, then shut it down and see it go.
fn connect_and_shut_down(bundle: &mut Bundle, address: &str, id: &str) {
    let client = TaskClient::new(ttrpc::Client::connect(address).expect("connect to the shim"));
    let ctx = || ttrpc::context::with_timeout(Duration::from_secs(5).as_nanos() as i64);
    let reply = client
        .connect(ctx(), &api::ConnectRequest { id: id.into(), ..Default::default() })
        .expect("Connect");
    assert!(reply.shim_pid > 0);
    bundle.shim_pid = Some(reply.shim_pid as i32);
    client.shutdown(ctx(), &api::ShutdownRequest { id: id.into(), ..Default::default() }).expect("Shutdown");
    let socket = Path::new(address.trim_start_matches("unix://")).to_path_buf();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{}", reply.shim_pid)).exists() || socket.exists() {
        assert!(Instant::now() < deadline, "the shim did not exit and remove its socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    bundle.shim_pid = None;
}

#[test]
fn containerd_1_gets_a_bare_address() {
    let mut bundle = Bundle::new("v1");
    let out = String::from_utf8(start(&bundle, "boot-v1", &[], b"")).unwrap();
    assert!(out.starts_with("unix:///") && !out.contains('{'), "{out:?}");
    assert_eq!(std::fs::read_to_string(bundle.dir.join("address")).unwrap(), out);
    connect_and_shut_down(&mut bundle, &out, "boot-v1");
}

#[test]
fn containerd_2_gets_json_for_task_api_v3() {
    let mut bundle = Bundle::new("v2");
    let out = start(&bundle, "boot-v2", &[("MAX_SHIM_VERSION", "2")], b"");
    let reply: serde_json::Value = serde_json::from_slice(&out).expect("a JSON reply");
    assert_eq!(reply["version"], 3);
    assert_eq!(reply["protocol"], "ttrpc");
    let address = reply["address"].as_str().unwrap().to_string();
    connect_and_shut_down(&mut bundle, &address, "boot-v2");
}

#[test]
fn containerd_2_3_bootstraps_over_stdin() {
    let mut bundle = Bundle::new("v3");
    let socket_dir = bundle.dir.join("s").to_string_lossy().into_owned();
    let params = BootstrapParams {
        instance_id: "boot-v3".into(),
        namespace: "ferrum-boot".into(),
        containerd_ttrpc_address: format!("unix://{}/no-containerd.sock.ttrpc", bundle.dir.display()),
        containerd_grpc_address: format!("unix://{}/no-containerd.sock", bundle.dir.display()),
        socket_dir: Some(socket_dir.clone()),
        ..Default::default()
    };
    let out = start(&bundle, "boot-v3", &[("MAX_SHIM_VERSION", "3")], &params.write_to_bytes().unwrap());
    let result = BootstrapResult::parse_from_bytes(&out).expect("a BootstrapResult");
    assert_eq!((result.version, result.protocol.as_str()), (3, "ttrpc"));
    assert!(result.address.starts_with(&format!("unix://{socket_dir}/")), "socket_dir honoured: {}", result.address);
    connect_and_shut_down(&mut bundle, &result.address.clone(), "boot-v3");
}

/// Before 2.3, stdin holds the runtime options as an Any, which protobuf also
/// parses as BootstrapParams: it must still be answered as that containerd expects.
#[test]
fn runtime_options_on_stdin_are_not_bootstrap_params() {
    let mut bundle = Bundle::new("opts");
    let options = containerd_shim_protos::protobuf::well_known_types::any::Any {
        type_url: "containerd.runc.v1.Options".into(),
        value: containerd_shim_protos::shim::oci::Options { io_uid: 1, ..Default::default() }.write_to_bytes().unwrap(),
        ..Default::default()
    };
    let out = start(&bundle, "boot-opts", &[("MAX_SHIM_VERSION", "2")], &options.write_to_bytes().unwrap());
    let reply: serde_json::Value = serde_json::from_slice(&out).expect("a JSON reply");
    let address = reply["address"].as_str().unwrap().to_string();
    connect_and_shut_down(&mut bundle, &address, "boot-opts");
}

/// `shim -info`, as containerd 2.x runs it for runtime introspection: runtime
/// options on stdin, RuntimeInfo on stdout; bad options are refused by name.
#[test]
fn info_answers_runtime_info() {
    use containerd_shim_protos::protobuf::well_known_types::any::Any;
    use containerd_shim_protos::types::introspection::RuntimeInfo;
    let info = |options: &Any| {
        let mut child = Command::new(ferrum_binary("containerd-shim-ferrum-v2"))
            .arg("-info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the shim");
        child.stdin.take().unwrap().write_all(&options.write_to_bytes().unwrap()).unwrap();
        child.wait_with_output().unwrap()
    };
    let options = |toml: &str| {
        // runtimeoptions.v1.Options { config_body = 3 }
        let mut value = vec![3 << 3 | 2, toml.len() as u8];
        value.extend_from_slice(toml.as_bytes());
        Any { type_url: "runtimeoptions.v1.Options".into(), value, ..Default::default() }
    };
    let out = info(&options("IoUid = 1000"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reply = RuntimeInfo::parse_from_bytes(&out.stdout).expect("a RuntimeInfo");
    assert_eq!(reply.name, "io.containerd.ferrum.v2");
    assert!(!reply.version.version.is_empty());
    assert_eq!(reply.options.type_url, "runtimeoptions.v1.Options");
    let out = info(&options("Frobnicate = 1"));
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Frobnicate"));

    let version = Command::new(ferrum_binary("containerd-shim-ferrum-v2")).arg("-v").output().unwrap();
    let text = String::from_utf8_lossy(&version.stdout);
    assert!(version.status.success() && text.contains("Version:"), "{text}");
}
