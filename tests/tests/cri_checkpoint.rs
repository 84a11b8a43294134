//! Kubernetes' forensic container checkpointing: the CRI's CheckpointContainer
//! on containerd 2.1 writes the archive kubelet expects, and a container
//! created from that archive (kubelet's restore) carries on from the
//! checkpoint, under the ferrum handler and under runc (the reference), with
//! the same CRIU; containerd 1.6 has no such call.

use std::path::Path;
use std::time::Duration;

use ferrum_tests::containerd::{containerd_config_schema, Schema};
use ferrum_tests::cri::api::CheckpointContainerRequest;
use ferrum_tests::cri::{CriEnv, CriOptions, Handler, APP_IMAGE, CRI_NAMESPACE};
use ferrum_tests::counter::{self, COUNTER};
use ferrum_tests::for_each_handler;
use ferrum_tests::registry::Registry;

const GRACE: Duration = Duration::from_secs(10);

fn count(pid: i64) -> Option<u64> {
    counter::read(Path::new(&format!("/proc/{pid}/root/count")))
}

fn pid_of(cri: &CriEnv, id: &str) -> i64 {
    let (_, info) = cri.container_status(id);
    let info: serde_json::Value = serde_json::from_str(&info["info"]).expect("the container's info");
    info["pid"].as_i64().expect("a pid in the container's info")
}

fn wait_for_count(pid: i64, at_least: u64) -> u64 {
    counter::wait_for(&format!("pid {pid}"), || count(pid), at_least)
}

/// The names in a tar archive.
fn entries(archive: &Path) -> Vec<String> {
    let out = std::process::Command::new("tar").arg("-tf").arg(archive).output().expect("tar -tf");
    assert!(out.status.success(), "tar -tf {}: {}", archive.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim_start_matches("./").to_string()).collect()
}

fn checkpoint_container(handler: Handler) {
    let cri = CriEnv::start_with(CriOptions { criu: true, ..Default::default() }).expect("starting the CRI");
    let pod = cri.pod_config("ckpt");
    let schema = containerd_config_schema().expect("finding containerd");
    // kubelet's restore pulls the checkpoint's base image by the NAME@DIGEST
    // the checkpoint recorded (containerd 2.1 even when it is there): the app
    // runs from an image a registry of the test's own serves on loopback,
    // with the NAME@DIGEST name a pulled image has.
    let registry = (schema == Schema::V3).then(|| {
        let registry = Registry::start(&cri.dir().join("registry")).expect("starting the registry");
        let pushed = registry.push(cri.env(), CRI_NAMESPACE, APP_IMAGE).expect("pushing the app image");
        let images = cri.env().ctr_in(CRI_NAMESPACE, &["images", "ls"]);
        let digest = images.stdout.lines().find(|l| l.starts_with(&pushed)).and_then(|l| l.split_whitespace().nth(2));
        let digest = digest.unwrap_or_else(|| panic!("{pushed} in {images}"));
        let pinned = format!("{}@{digest}", pushed.rsplit_once(':').unwrap().0);
        cri.env().ctr_in(CRI_NAMESPACE, &["images", "tag", &pushed, &pinned]).assert_ok();
        (registry, pushed)
    });
    let image = registry.as_ref().map_or(APP_IMAGE.to_string(), |(_, pushed)| pushed.clone());
    let app = |name: &str| {
        let mut config = cri.container_config(&pod, name, &["sh", "-c", COUNTER]);
        config.image.as_mut().unwrap().image = image.clone();
        config
    };
    let pod_id = cri.run_pod(handler, &pod).expect("RunPodSandbox");
    let id = cri.run_container(&pod_id, &pod, &app("counter"));
    let pid = pid_of(&cri, &id);
    let before = wait_for_count(pid, 5);
    let archive = cri.dir().join("checkpoint.tar");
    let request = CheckpointContainerRequest {
        container_id: id.clone(),
        location: archive.to_string_lossy().into_owned(),
        timeout: 60,
    };
    let checkpointed = cri.client().call(cri.client().runtime().checkpoint_container(request));
    match schema {
        Schema::V2 => {
            let e = checkpointed.expect_err("containerd 1.6 checkpoints nothing");
            assert_eq!(e.code(), tonic::Code::Unimplemented, "{e}");
        }
        Schema::V3 => {
            checkpointed.unwrap_or_else(|e| panic!("{handler:?}: CheckpointContainer: {e}"));
            let names = entries(&archive);
            for want in ["checkpoint/inventory.img", "config.dump", "spec.dump"] {
                assert!(names.iter().any(|n| n == want), "{handler:?}: no {want} in the archive: {names:?}");
            }
            // The container runs on, counting.
            let after = wait_for_count(pid, before + 3);
            // kubelet's restore: a container whose image is the archive.
            let mut config = app("restored");
            config.image.as_mut().unwrap().image = archive.to_string_lossy().into_owned();
            let restored = cri.create_container(&pod_id, &pod, &config).unwrap_or_else(|e| panic!("{handler:?}: restore: {e}"));
            cri.start_container(&restored).unwrap_or_else(|e| panic!("{handler:?}: start restored: {e}"));
            let first = wait_for_count(pid_of(&cri, &restored), before);
            assert!(first <= after + 30, "{handler:?}: restored at {first}, checkpointed from {before}: not its memory");
        }
    }
    cri.remove_pod_fully(&pod_id);
    drop(registry);
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new(), "{handler:?}: left behind");
}

for_each_handler!(checkpoint_container);
