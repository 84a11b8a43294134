//! config.json fuzzed through a live shim: containerd's default spec with
//! every field set (`ferrum_fuzz::spec`), one or two fields changed (or the
//! bytes damaged), sent as Create to the shim of a running container the way
//! containerd sends it, so that each case goes through everything the shim,
//! runtime-core and the container's init check and do. A case either creates
//! the container, which is then deleted, or fails with an error that names the
//! bundle's container and says what went wrong (never that init died without
//! a word); the shim serves on, and nothing of a case is left behind.
//!
//! Three fields stay as the harness sets them, so that a case cannot reach
//! outside the test's own directory and cgroups: root.path (the busybox rootfs
//! of the test), linux.cgroupsPath (the test namespace's cgroup; its parsing is
//! fuzzed in runtime-core) and a shared rootfsPropagation (which would let the
//! container's mounts reach the host's tree).

use std::path::PathBuf;
use std::time::Duration;

use containerd_shim_protos::{api, TaskClient};
use ferrum_fuzz::spec::full_spec;
use ferrum_fuzz::{mutate_bytes, mutate_json, short, Rng, Run};
use ferrum_tests::{Env, SpecFile};
use serde_json::{json, Value};

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(30).as_nanos() as i64)
}

/// The case's config.json and what was changed.
fn make_case(n: usize, rng: &mut Rng, base: &Value, id: &str, env: &Env) -> (Vec<u8>, String) {
    let mut spec = base.clone();
    let mut changes = Vec::new();
    if n > 0 {
        for _ in 0..1 + rng.below(2) {
            let m = mutate_json(rng, &mut spec);
            changes.push(format!("{} <- {}", m.path, m.what));
        }
    }
    // Put back what must not move (see the module doc).
    if !spec.is_object() {
        spec = base.clone();
    }
    spec["root"] = base["root"].clone();
    if !spec["linux"].is_object() {
        spec["linux"] = json!({});
    }
    spec["linux"]["cgroupsPath"] = json!(format!("/{}/{id}", env.namespace()));
    if spec["linux"]["rootfsPropagation"].as_str().is_some_and(|p| p.contains("shared")) {
        spec["linux"]["rootfsPropagation"] = json!("rprivate");
    }
    let mut bytes = serde_json::to_vec_pretty(&spec).unwrap();
    if n > 0 && rng.chance(15) {
        mutate_bytes(rng, &mut bytes);
        // Only where the bytes no longer parse: parsed, they could move the root.
        if serde_json::from_slice::<Value>(&bytes).is_ok() {
            bytes = serde_json::to_vec_pretty(&spec).unwrap();
        } else {
            changes.push("damaged bytes".into());
        }
    }
    (bytes, changes.join("; "))
}

/// What runtime-core says when its init or hook runner died without a
/// message (a panic, a signal): never acceptable as a case's error.
const SILENT_DEATHS: [&str; 3] =
    ["init exited during setup", "init answered out of turn", "exited without an answer"];

#[test]
fn fuzz_config_json_through_a_live_shim() {
    let (env, image) = Env::with_busybox();
    let anchor = "anchor";
    env.run_on_ferrum(&["-d"], &image, anchor, &["sleep", "600"]).assert_ok();
    let shim_bundle = env.root_dir().join("state/io.containerd.runtime.v2.task").join(env.namespace()).join(anchor);
    let address = std::fs::read_to_string(shim_bundle.join("address")).unwrap();
    let client = TaskClient::new(ttrpc::Client::connect(address.trim()).expect("connect to the shim"));
    let shim = env.shim_pid(anchor).expect("the shim");

    let spec = SpecFile::new(&env, "fuzz-rootfs", &["sleep", "600"]).expect("containerd's default spec");
    let base = full_spec(spec.spec.clone());
    let bundles = env.root_dir().join("fuzz-bundles");
    let run = Run::new("config.json (live shim)", 300);
    let (mut created, mut refused) = (0, 0);
    run.each(|n, rng| {
        let id = format!("fz{n}");
        let (bytes, changes) = make_case(n, rng, &base, &id, &env);
        let bundle: PathBuf = bundles.join(&id);
        std::fs::create_dir_all(&bundle).unwrap();
        std::fs::write(bundle.join("config.json"), &bytes).unwrap();
        let create = api::CreateTaskRequest { id: id.clone(), bundle: bundle.display().to_string(), ..Default::default() };
        let case = || format!("case {n}: {}", short(&changes));
        match client.create(ctx(), &create) {
            Ok(_) => {
                created += 1;
                let kill = api::KillRequest { id: id.clone(), signal: 9, ..Default::default() };
                client.kill(ctx(), &kill).unwrap_or_else(|e| panic!("{}: Kill: {e}", case()));
                let wait = api::WaitRequest { id: id.clone(), ..Default::default() };
                client.wait(ctx(), &wait).unwrap_or_else(|e| panic!("{}: Wait: {e}", case()));
                let delete = api::DeleteRequest { id: id.clone(), ..Default::default() };
                client.delete(ctx(), &delete).unwrap_or_else(|e| panic!("{}: Delete: {e}", case()));
            }
            Err(e) => {
                assert!(n != 0, "the full spec is refused: {e}");
                refused += 1;
                let message = e.to_string();
                assert!(
                    message.contains(&id) || message.contains(&bundle.display().to_string()),
                    "{}: the error names neither the container nor its bundle: {message}",
                    case()
                );
                assert!(
                    !SILENT_DEATHS.iter().any(|s| message.contains(s)),
                    "{}: init died without saying why: {message}",
                    case()
                );
            }
        }
        let state = api::StateRequest { id: id.clone(), ..Default::default() };
        assert!(client.state(ctx(), &state).is_err(), "{}: the container is still known", case());
        let _ = std::fs::remove_dir_all(&bundle);
    });
    assert_eq!(env.shim_pid(anchor), Some(shim), "the shim changed");
    let log = std::fs::read_to_string(env.root_dir().join("containerd.log")).unwrap_or_default();
    assert!(!log.contains("panicked"), "the shim panicked:\n{log}");
    let out = env.ctr(&["tasks", "exec", "--exec-id", "after", anchor, "echo", "still serving"]);
    assert!(out.success() && out.stdout.contains("still serving"), "{out}");
    run.report(&format!("{created} created and deleted, {refused} refused"));
    env.remove_task(anchor);
    assert_eq!(env.leftovers_after(Duration::from_secs(5)), Vec::<String>::new(), "left behind");
}
