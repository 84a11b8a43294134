//! The shim's ttrpc socket fuzzed while it serves a real container started by
//! containerd: garbage bytes, truncated frames, huge declared lengths, frames
//! of every type with random flags and stream ids, valid headers around
//! garbage Requests, valid Requests whose payload is garbage for each Task
//! method (v2 and v3), well-formed requests with hostile ids and fields,
//! unknown services and methods, and a hundred connections at once.
//!
//! After every batch: the shim is the same process, it answers Connect and
//! State within a deadline, its log has no panic, and at the end `ctr`
//! still execs in the container and the shim's memory and fds have not grown
//! in the second half of the run.
//! Requests never name the real container where they could stop it (Kill,
//! Delete, Pause, Shutdown, Wait, Start); Create is sent only with stdio and
//! bundles inside the test's temp dir, since the shim opens and mounts what
//! containerd tells it to.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use containerd_shim_protos::protobuf::{Message, MessageDyn};
use containerd_shim_protos::{api, TaskClient};
use ferrum_fuzz::{mutate_bytes, string, Rng, Run};
use ferrum_tests::{mounts_at, root_mount, Env};

const REPLY_DEADLINE: Duration = Duration::from_secs(5);
const BATCH: usize = 50;
/// An idle shim gives memory back after a second (shim/src/idle.rs).
const IDLE_TRIM: Duration = Duration::from_secs(2);

const SERVICES: [&str; 2] = ["containerd.task.v2.Task", "containerd.task.v3.Task"];
const METHODS: [&str; 17] = [
    "State", "Create", "Start", "Delete", "Pids", "Pause", "Resume", "Checkpoint", "Kill", "Exec", "ResizePty",
    "CloseIO", "Update", "Wait", "Stats", "Connect", "Shutdown",
];
/// Methods that may name the live container: they only read or fail.
const HARMLESS_ON_LIVE: [&str; 5] = ["State", "Pids", "Stats", "Connect", "ResizePty"];

fn header(length: u32, stream: u32, typ: u8, flags: u8) -> Vec<u8> {
    let mut h = Vec::with_capacity(10);
    h.extend_from_slice(&length.to_be_bytes());
    h.extend_from_slice(&stream.to_be_bytes());
    h.extend_from_slice(&[typ, flags]);
    h
}

fn frame(stream: u32, typ: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = header(payload.len() as u32, stream, typ, 0);
    f.extend_from_slice(payload);
    f
}

fn request(service: &str, method: &str, payload: Vec<u8>) -> Vec<u8> {
    let mut r = ttrpc::Request::new();
    r.service = service.into();
    r.method = method.into();
    r.payload = payload;
    r.timeout_nano = Duration::from_secs(4).as_nanos() as i64;
    r.write_to_bytes().unwrap()
}

/// The fuzz's view of the running test: where ids and paths may point.
struct Target {
    live: String,
    scratch: PathBuf,
}

impl Target {
    fn id(&self, rng: &mut Rng, method: &str) -> String {
        if HARMLESS_ON_LIVE.contains(&method) && rng.chance(40) {
            return self.live.clone();
        }
        match rng.below(3) {
            0 => format!("fz-{}", rng.below(4)),
            _ => string(rng).replace(&self.live, "x"),
        }
    }

    /// A path inside the scratch dir, or an empty one.
    fn path(&self, rng: &mut Rng) -> String {
        match rng.below(3) {
            0 => String::new(),
            _ => self.scratch.join(string(rng).replace(['/', '\0'], "_").replace("..", "_")).display().to_string(),
        }
    }

    /// A well-formed message for `method` with hostile values.
    fn message(&self, rng: &mut Rng, method: &str) -> Box<dyn MessageDyn> {
        let id = self.id(rng, method);
        let exec_id = if rng.chance(50) { String::new() } else { string(rng) };
        let any = |rng: &mut Rng| containerd_shim_protos::protobuf::well_known_types::any::Any {
            type_url: string(rng),
            value: rng.some_bytes(64),
            ..Default::default()
        };
        match method {
            "Create" => {
                let mount = api::Mount {
                    type_: rng.pick(&["tmpfs", "bind", "overlay", "proc", ""]).to_string(),
                    source: self.path(rng),
                    options: (0..rng.len(3)).map(|_| string(rng)).collect(),
                    ..Default::default()
                };
                Box::new(api::CreateTaskRequest {
                    id,
                    bundle: self.path(rng),
                    rootfs: if rng.chance(30) { vec![mount] } else { vec![] },
                    terminal: rng.chance(20),
                    stdin: self.path(rng),
                    stdout: self.path(rng),
                    stderr: self.path(rng),
                    checkpoint: if rng.chance(10) { string(rng) } else { String::new() },
                    options: if rng.chance(30) { Some(any(rng)).into() } else { None.into() },
                    ..Default::default()
                })
            }
            "Exec" => Box::new(api::ExecProcessRequest {
                id,
                exec_id,
                spec: Some(any(rng)).into(),
                stdout: self.path(rng),
                ..Default::default()
            }),
            "Kill" => Box::new(api::KillRequest { id, exec_id, signal: rng.next_u64() as u32, all: rng.chance(50), ..Default::default() }),
            "ResizePty" => Box::new(api::ResizePtyRequest {
                id,
                exec_id,
                width: rng.next_u64() as u32,
                height: rng.next_u64() as u32,
                ..Default::default()
            }),
            "Update" => Box::new(api::UpdateTaskRequest { id, resources: Some(any(rng)).into(), ..Default::default() }),
            "CloseIO" => Box::new(api::CloseIORequest { id, exec_id, stdin: rng.chance(50), ..Default::default() }),
            "Delete" => Box::new(api::DeleteRequest { id, exec_id, ..Default::default() }),
            "Start" => Box::new(api::StartRequest { id, exec_id, ..Default::default() }),
            "Wait" => Box::new(api::WaitRequest { id, exec_id, ..Default::default() }),
            "Pids" => Box::new(api::PidsRequest { id, ..Default::default() }),
            "Stats" => Box::new(api::StatsRequest { id, ..Default::default() }),
            "Connect" => Box::new(api::ConnectRequest { id, ..Default::default() }),
            "Pause" => Box::new(api::PauseRequest { id, ..Default::default() }),
            "Resume" => Box::new(api::ResumeRequest { id, ..Default::default() }),
            "Checkpoint" => Box::new(api::CheckpointTaskRequest { id, path: string(rng), ..Default::default() }),
            "Shutdown" => Box::new(api::ShutdownRequest { id, now: rng.chance(50), ..Default::default() }),
            _ => Box::new(api::StateRequest { id, exec_id, ..Default::default() }),
        }
    }
}

/// What one case sends, and whether a reply must come.
struct Case {
    bytes: Vec<u8>,
    answer: bool,
    what: String,
}

fn make_case(rng: &mut Rng, target: &Target) -> Case {
    let service = *rng.pick(&SERVICES);
    let method = *rng.pick(&METHODS);
    let stream = *rng.pick(&[1, 3, 5, 0, 2, u32::MAX]);
    let (bytes, answer, what) = match rng.below(10) {
        0 => (rng.some_bytes(4096), false, "random bytes".to_string()),
        1 => {
            let length = *rng.pick(&[u32::MAX, 4 << 20 | 1, 1 << 30, 100]);
            let mut b = header(length, stream, 1, 0);
            b.extend(rng.some_bytes(64));
            (b, false, format!("a header declaring {length} bytes"))
        }
        2 => {
            let mut b = frame(stream, 1, &request(service, method, vec![]));
            b.truncate(rng.below(b.len()));
            (b, false, "a truncated frame".into())
        }
        3 => {
            let typ = *rng.pick(&[0, 2, 3, 4, 0xff]);
            let mut b = header(rng.len(64) as u32, stream, typ, rng.next_u64() as u8);
            b.extend(rng.bytes(64));
            (b, false, format!("a frame of type {typ}"))
        }
        4 => (frame(stream, 1, &rng.some_bytes(512)), false, "a garbage Request".into()),
        5 => {
            let mut r = request(service, method, vec![]);
            mutate_bytes(rng, &mut r);
            (frame(stream, 1, &r), false, "a damaged Request".into())
        }
        6 if !matches!(method, "Create" | "Wait") || rng.chance(10) => {
            // Garbage in a valid Request: it must be refused, never block.
            let payload = rng.some_bytes(256);
            let answer = !matches!(method, "Wait" | "Create");
            (frame(1, 1, &request(service, method, payload)), answer, format!("{service}/{method} with a garbage payload"))
        }
        7 => {
            let (s, m) = match rng.below(3) {
                0 => (string(rng), method.to_string()),
                1 => (service.to_string(), string(rng)),
                _ => (service.to_string(), method.to_lowercase()),
            };
            (frame(1, 1, &request(&s, &m, vec![])), true, format!("unknown {s:?}/{m:?}"))
        }
        _ => {
            let mut payload = target.message(rng, method).write_to_bytes_dyn().unwrap();
            if rng.chance(30) {
                mutate_bytes(rng, &mut payload);
            }
            // A damaged Create may point anywhere: send only the intact ones.
            if method == "Create" && rng.chance(30) {
                payload = target.message(rng, method).write_to_bytes_dyn().unwrap();
            }
            let answer = method != "Wait";
            (frame(1, 1, &request(service, method, payload)), answer, format!("{service}/{method} with hostile fields"))
        }
    };
    Case { bytes, answer, what }
}

/// Sends a case; when it must be answered, reads the response frame.
fn send(socket: &Path, case: &Case) -> Result<(), String> {
    let mut conn = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    conn.set_write_timeout(Some(REPLY_DEADLINE)).unwrap();
    conn.set_read_timeout(Some(REPLY_DEADLINE)).unwrap();
    // The shim may close on garbage before reading everything: that is fine.
    let _ = conn.write_all(&case.bytes);
    if !case.answer {
        return Ok(());
    }
    let started = Instant::now();
    let mut head = [0u8; 10];
    conn.read_exact(&mut head).map_err(|e| format!("no reply after {:?}: {e}", started.elapsed()))?;
    if head[8] != 2 {
        return Err(format!("the reply is a frame of type {}", head[8]));
    }
    let length = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
    let mut body = vec![0; length];
    conn.read_exact(&mut body).map_err(|e| format!("a truncated reply: {e}"))?;
    ttrpc::Response::parse_from_bytes(&body).map_err(|e| format!("a reply that is no Response: {e}"))?;
    Ok(())
}

fn rss_anon_kb(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("RssAnon:")?.split_whitespace().next()?.parse().ok()).unwrap()
}

fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// The shim is the same process, answers Connect and State, logged no panic,
/// and the container's rootfs is mounted as it was: in its own mount
/// namespace, with nothing mounted over its bundle's rootfs on the host.
fn assert_serving(env: &Env, address: &str, shim: i32, live: &str, after: &str) {
    assert_eq!(env.shim_pid(live), Some(shim), "the shim is gone after {after}");
    let rootfs = env.root_dir().join("state/io.containerd.runtime.v2.task").join(env.namespace()).join(live).join("rootfs");
    assert_eq!(mounts_at(&rootfs), 0, "a mount on the container's rootfs after {after}");
    let init = env.task_pid(live).expect("the container's init") as u64;
    assert_eq!(root_mount(init).0, "overlay", "the container's root after {after}");
    let client = TaskClient::new(ttrpc::Client::connect(address).expect("connect to the shim"));
    let ctx = || ttrpc::context::with_timeout(REPLY_DEADLINE.as_nanos() as i64);
    let reply = client.connect(ctx(), &api::ConnectRequest { id: live.into(), ..Default::default() });
    assert_eq!(reply.map(|r| r.shim_pid as i32).ok(), Some(shim), "Connect after {after}");
    let state = client.state(ctx(), &api::StateRequest { id: live.into(), ..Default::default() }).expect("State");
    assert_eq!(state.status, api::Status::RUNNING.into(), "the container after {after}");
    let log = std::fs::read_to_string(env.root_dir().join("containerd.log")).unwrap_or_default();
    assert!(!log.contains("panicked"), "the shim panicked after {after}:\n{log}");
}

#[test]
fn fuzz_the_shims_ttrpc_socket() {
    let (env, image) = Env::with_busybox();
    let live = "fuzzed";
    env.run_on_ferrum(&["-d"], &image, live, &["sleep", "600"]).assert_ok();
    let shim = env.shim_pid(live).expect("the shim of the container");
    let bundle = env.root_dir().join("state/io.containerd.runtime.v2.task").join(env.namespace()).join(live);
    let address = std::fs::read_to_string(bundle.join("address")).unwrap().trim().to_string();
    let socket = PathBuf::from(address.trim_start_matches("unix://"));
    let target = Target { live: live.into(), scratch: env.root_dir().join("fuzz-scratch") };
    std::fs::create_dir_all(&target.scratch).unwrap();

    let run = Run::new("shim ttrpc socket", 5000);
    let mut baseline = None;
    let mut answered = 0;
    run.each(|n, rng| {
        let case = make_case(rng, &target);
        if let Err(e) = send(&socket, &case) {
            panic!("{}: {e}", case.what);
        }
        answered += case.answer as usize;
        if n % BATCH == BATCH - 1 {
            assert_serving(&env, &address, shim, live, &format!("case {n} ({})", case.what));
        }
        // The shim's heap grows in steps to a high-water mark (the allocator
        // keeps pages of requests long gone): a leak shows as growth in the
        // second half of the run, measured once the idle shim trimmed.
        if n == run.cases() / 2 {
            std::thread::sleep(IDLE_TRIM);
            baseline = Some((rss_anon_kb(shim), fds(shim)));
        }
    });

    // A hundred connections at once, each holding half a frame.
    let mut held: Vec<UnixStream> = (0..100).filter_map(|_| UnixStream::connect(&socket).ok()).collect();
    assert_eq!(held.len(), 100, "the shim refused connections");
    for conn in &mut held {
        let _ = conn.write_all(&header(64, 1, 1, 0)[..7]);
    }
    assert_serving(&env, &address, shim, live, "100 connections holding half a frame");
    drop(held);

    assert_serving(&env, &address, shim, live, "the whole run");
    let out = env.ctr(&["tasks", "exec", "--exec-id", "after-fuzz", live, "echo", "still serving"]);
    assert!(out.success() && out.stdout.contains("still serving"), "{out}");
    std::thread::sleep(IDLE_TRIM);
    if let Some((rss, fd_count)) = baseline {
        let (rss_now, fds_now) = (rss_anon_kb(shim), fds(shim));
        assert!(
            rss_now <= rss + 1024,
            "the shim's anonymous memory grew from {rss} to {rss_now} kB in the second half of the run"
        );
        assert!(fds_now <= fd_count, "the shim's fds grew from {fd_count} to {fds_now}");
    }
    run.report(&format!("{answered} answered requests, 100 concurrent connections"));
    env.remove_task(live);
}
