//! What containerd 2.x gives a runtime handler that 1.6 did not, through the
//! CRI: the handler's features read from the runtime (`-info`), pods with
//! `hostUsers: false`, `recursiveReadOnly` volumes, `SupplementalGroupsPolicy:
//! Strict`, and the handler's own snapshotter.
//!
//! containerd 2.1 reads a runtime's features only for runtime type
//! io.containerd.runc.v2, so the checks that need them run under the
//! `ferrum-features` handler (ferrum's shim as that type's `runtime_path`),
//! with runc as the reference. On containerd 1.6 every check asserts what 1.6
//! does instead: its CRI knows none of these fields and drops them. 1.6 also
//! ignores `runtime_path`, so there `ferrum-features` runs runc's shim (each
//! check asserts which shim serves the pod): on 1.6 those variants show
//! containerd's behaviour, the `ferrum` ones ferrum's.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use ferrum_tests::containerd::{containerd_config_schema, Schema};
use ferrum_tests::cri::api::{
    ContainerConfig, IdMapping, ImageSpec, Int64Value, Mount, NamespaceMode, PodSandboxConfig,
    SupplementalGroupsPolicy, UserNamespace,
};
use ferrum_tests::cri::{
    pod_security_context, security_context, CriEnv, CriOptions, FerrumHandler, Handler, CRI_NAMESPACE,
};
use ferrum_tests::{for_handlers, root_mount};
use ferrum_tests::image::{busybox_layer, ImageBuilder, Layer};

const GRACE: Duration = Duration::from_secs(10);

fn schema() -> Schema {
    containerd_config_schema().expect("finding containerd")
}

fn sleeper(cri: &CriEnv, pod: &PodSandboxConfig, name: &str) -> ContainerConfig {
    cri.container_config(pod, name, &["sleep", "600"])
}

/// Each handler's (recursive read-only mounts, user namespaces) as the CRI's
/// Status reports them to kubelet; None when containerd could not learn them.
fn handler_features(cri: &CriEnv) -> Vec<(String, Option<(bool, bool)>)> {
    let mut handlers: Vec<_> = cri
        .runtime_status()
        .runtime_handlers
        .into_iter()
        .filter(|h| !h.name.is_empty()) // the default handler, again
        .map(|h| {
            let features = h.features.map(|f| (f.recursive_read_only_mounts, f.user_namespaces));
            (h.name, features)
        })
        .collect();
    handlers.sort();
    handlers
}

/// containerd 2.1 offers user namespaces and recursive read-only mounts for
/// the handler of runc's runtime type: io.containerd.ferrum.v2 gets no
/// features (so kubelet refuses `hostUsers: false` pods and recursive
/// read-only volumes for it), `ferrum-features` gets both. runc 1.1.5 lists
/// `rro` but not idmapped mounts. 1.6 reports no handlers at all.
#[test]
fn handlers_report_the_runtimes_features() {
    let cri = CriEnv::start();
    let status = cri.runtime_status();
    match schema() {
        Schema::V2 => {
            assert_eq!(status.runtime_handlers, [], "containerd 1.6 reports no handler features");
            assert_eq!(status.features, None, "{status:?}");
        }
        Schema::V3 => {
            assert_eq!(
                handler_features(&cri),
                [
                    ("ferrum".to_string(), None),
                    ("ferrum-features".to_string(), Some((true, true))),
                    ("runc".to_string(), Some((true, false))),
                ]
            );
            assert_eq!(status.features.map(|f| f.supplemental_groups_policy), Some(true), "{status:?}");
        }
    }
}

/// The ids kubelet gives a pod with `hostUsers: false`: 65536 of them, from a
/// multiple of 65536.
const POD_IDS: IdMapping = IdMapping { host_id: 5 * 65536, container_id: 0, length: 65536 };

/// A `hostUsers: false` pod whose container sees a file of host root's
/// through a hostPath volume: the pod's sandbox and container run in a user
/// namespace of the pod's mapping, root inside owns its rootfs and the files
/// containerd binds in (idmapped: /etc/hosts, resolv.conf, hostname), but is
/// nobody to the host's files and cannot write them. runc 1.1.5 runs the
/// sandbox, but has no idmapped mounts: containerd's runc shim refuses the
/// container; under io.containerd.ferrum.v2 containerd itself refuses it (so
/// such pods need `ferrum-features`). 1.6 drops `userns_options`: the pod
/// runs in the host's user namespace and its root is host root.
fn pods_with_user_namespaces(handler: Handler) {
    user_namespace_pod(handler, CriOptions::default());
}

/// The same on ferrum-snapshotter, the handler's snapshotter as examples/ ships it.
#[test]
fn a_pod_with_a_user_namespace_on_ferrum_snapshotter() {
    user_namespace_pod(Handler::FerrumFeatures, on_ferrum_snapshotter());
}

fn on_ferrum_snapshotter() -> CriOptions {
    CriOptions {
        ferrum: FerrumHandler { snapshotter: Some("ferrum".into()), ..Default::default() },
        ferrum_snapshotter: true,
        ..Default::default()
    }
}

fn user_namespace_pod(handler: Handler, options: CriOptions) {
    let cri = CriEnv::start_with(options).expect("starting containerd with the CRI plugin");
    let host_dir = cri.dir().join("host-owned");
    fs::create_dir(&host_dir).unwrap();
    fs::write(host_dir.join("file"), "host root's\n").unwrap();

    let mut pod = cri.pod_config("userns");
    pod_security_context(&mut pod).namespace_options.as_mut().unwrap().userns_options = Some(UserNamespace {
        mode: NamespaceMode::Pod as i32,
        uids: vec![POD_IDS],
        gids: vec![POD_IDS],
    });
    let pod_id = cri.run_pod(handler, &pod).expect("RunPodSandbox");
    assert_served(&cri, handler);
    let sandbox = pid_of_pod(&cri, &pod_id);
    let sandbox_map = fs::read_to_string(format!("/proc/{sandbox}/uid_map")).unwrap();
    let sandbox_map: Vec<&str> = sandbox_map.split_whitespace().collect();
    let expected_map = match schema() {
        Schema::V3 => ["0", "327680", "65536"],
        Schema::V2 => ["0", "0", "4294967295"],
    };
    assert_eq!(sandbox_map, expected_map, "{handler:?}: the sandbox's uid_map");

    let mut config = sleeper(&cri, &pod, "app");
    config.mounts.push(Mount {
        container_path: "/host".into(),
        host_path: host_dir.display().to_string(),
        ..Default::default()
    });
    let id = cri.create_container(&pod_id, &pod, &config).expect("CreateContainer");
    let refused = match (handler, schema()) {
        // runc 1.1.5 lists no idmapped mounts in its features.
        (Handler::Runc, Schema::V3) => Some("idmap mounts not supported"),
        // containerd checks the features of a runtime given idmapped mounts
        // by decoding its options as runc's: not io.containerd.ferrum.v2's.
        (Handler::Ferrum, Schema::V3) => Some("can't unmarshal type \"runtimeoptions.v1.Options\""),
        _ => None,
    };
    if let Some(message) = refused {
        let err = cri.start_container(&id).expect_err("a container with idmapped mounts");
        assert!(err.message().contains(message), "{handler:?}: {err}");
        cri.remove_pod_fully(&pod_id);
        assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
        return;
    }
    cri.start_container(&id).expect("StartContainer");

    let uid_map = cri.exec_ok(&id, &["cat", "/proc/self/uid_map"]);
    assert_eq!(uid_map.split_whitespace().collect::<Vec<_>>(), expected_map, "{handler:?}");
    let sandbox_userns = fs::read_link(format!("/proc/{sandbox}/ns/user")).unwrap();
    let userns = cri.exec_ok(&id, &["readlink", "/proc/self/ns/user"]);
    assert_eq!(userns.trim(), sandbox_userns.display().to_string(), "the container is in the pod's user namespace");
    assert_eq!(cri.exec_ok(&id, &["id", "-u"]).trim(), "0");
    // Root inside owns its rootfs (containerd idmaps the image's layers) and
    // the files containerd binds in.
    for file in ["/bin/busybox", "/etc/hosts", "/etc/resolv.conf"] {
        assert_eq!(cri.exec_ok(&id, &["stat", "-c", "%u:%g", file]).trim(), "0:0", "{file}");
    }
    cri.exec_ok(&id, &["touch", "/written-by-root"]);
    let owner = cri.exec_ok(&id, &["stat", "-c", "%u:%g", "/host/file"]);
    let write = cri.exec_sync(&id, &["sh", "-c", "echo more >> /host/file"], 30).expect("ExecSync");
    let chown = cri.exec_sync(&id, &["chown", "0:0", "/host/file"], 30).expect("ExecSync");
    match schema() {
        Schema::V3 => {
            assert_eq!(owner.trim(), "65534:65534", "host root is unmapped: nobody inside");
            assert_ne!(write.exit_code, 0, "root inside wrote host root's file");
            assert!(String::from_utf8_lossy(&write.stderr).contains("Permission denied"), "{write:?}");
            assert_ne!(chown.exit_code, 0, "root inside chowned host root's file");
            assert_eq!(fs::read_to_string(host_dir.join("file")).unwrap(), "host root's\n");
        }
        Schema::V2 => {
            assert_eq!(owner.trim(), "0:0");
            assert_eq!(write.exit_code, 0, "{write:?}");
            assert_eq!(chown.exit_code, 0, "{chown:?}");
        }
    }
    cri.remove_pod_fully(&pod_id);
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

/// The pod's shim is the one its handler names, or on 1.6 runc's for
/// `ferrum-features` (`CriEnv::served_by`).
#[track_caller]
fn assert_served(cri: &CriEnv, handler: Handler) {
    let shim = cri.served_by(handler);
    let other = if shim == Handler::Runc { Handler::Ferrum } else { Handler::Runc };
    assert!(!cri.shims(shim).is_empty(), "{handler:?}: no {} serves the pod", shim.shim_binary());
    assert_eq!(cri.shims(other), Vec::<i32>::new(), "{handler:?}: a {} serves the pod", other.shim_binary());
}

fn pid_of_pod(cri: &CriEnv, pod_id: &str) -> u64 {
    let (_, info) = cri.pod_status(pod_id);
    info["pid"].as_u64().expect("the sandbox's pid in the verbose status")
}

/// A read-only hostPath volume of `source`, recursively so or not.
fn read_only_volume(source: &Path, path: &str, recursive: bool) -> Mount {
    Mount {
        container_path: path.into(),
        host_path: source.display().to_string(),
        readonly: true,
        recursive_read_only: recursive,
        ..Default::default()
    }
}

/// A `recursiveReadOnly: Enabled` volume whose host dir has a mount under it:
/// the submount is read-only inside too, where a plain read-only volume
/// leaves it writable. 1.6 drops `recursive_read_only`: both stay writable
/// below.
fn recursive_read_only_volumes(handler: Handler) {
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let cri = CriEnv::start();
    // In the Env's dir, whose cleanup unmounts it if the test fails first.
    let vol = cri.env().root_dir().join("rro-vol");
    fs::create_dir_all(vol.join("sub")).unwrap();
    mount(Some("tmpfs"), &vol.join("sub"), Some("tmpfs"), MsFlags::empty(), None::<&str>).unwrap();

    let pod = cri.pod_config("rro");
    let pod_id = cri.run_pod(handler, &pod).expect("RunPodSandbox");
    assert_served(&cri, handler);
    let script = "for v in /rro /ro; do touch $v/top 2>/dev/null && echo $v; touch $v/sub/below 2>/dev/null && echo $v/sub; done; true";
    let mut config = cri.container_config(&pod, "app", &["sh", "-c", &format!("{script}; sleep 600")]);
    config.mounts.push(read_only_volume(&vol, "/rro", true));
    config.mounts.push(read_only_volume(&vol, "/ro", false));
    let id = cri.run_container(&pod_id, &pod, &config);
    let writable = cri.exec_ok(&id, &["sh", "-c", script]);
    let expected = match schema() {
        Schema::V3 => "/ro/sub\n",
        Schema::V2 => "/rro/sub\n/ro/sub\n",
    };
    assert_eq!(writable, expected, "{handler:?}: what was writable");
    cri.remove_pod_fully(&pod_id);
    umount2(&vol.join("sub"), MntFlags::MNT_DETACH).unwrap();
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

/// busybox plus a user `app` (1000:1000) whom the image's /etc/group also
/// puts in group `extra` (5000).
const GROUPS_IMAGE: &str = "localhost/ferrum/groups:local";

fn import_groups_image(cri: &CriEnv) {
    let env = cri.env();
    let users = Layer::new()
        .file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n", 0o644)
        .file("etc/group", "root:x:0:\napp:x:1000:\nextra:x:5000:app\n", 0o644);
    let image = ImageBuilder::new(GROUPS_IMAGE)
        .layer(busybox_layer(env.busybox_path()).unwrap())
        .layer(users);
    env.import_image_into(CRI_NAMESPACE, "groups", &image).expect("importing the groups image");
}

/// The groups of the container's process, from /proc/self/status.
fn groups_inside(cri: &CriEnv, id: &str) -> BTreeSet<u32> {
    let status = cri.exec_ok(id, &["cat", "/proc/self/status"]);
    let line = status.lines().find_map(|l| l.strip_prefix("Groups:")).expect("a Groups line");
    line.split_whitespace().map(|g| g.parse().unwrap()).collect()
}

/// `supplementalGroupsPolicy: Strict`: the container's groups are its
/// primary group and those the pod gives, not the image's /etc/group
/// memberships, which Merge (the default) adds; ContainerStatus reports the
/// identity. 1.6 drops the policy: Strict merges too.
fn supplemental_groups_policy_strict(handler: Handler) {
    let cri = CriEnv::start();
    import_groups_image(&cri);
    let pod = cri.pod_config("groups");
    let pod_id = cri.run_pod(handler, &pod).expect("RunPodSandbox");
    assert_served(&cri, handler);
    let mut groups = Vec::new();
    for policy in [SupplementalGroupsPolicy::Merge, SupplementalGroupsPolicy::Strict] {
        let mut config = sleeper(&cri, &pod, policy.as_str_name());
        config.image = Some(ImageSpec { image: GROUPS_IMAGE.into(), ..Default::default() });
        let sc = security_context(&mut config);
        sc.run_as_user = Some(Int64Value { value: 1000 });
        sc.supplemental_groups = vec![3000];
        sc.supplemental_groups_policy = policy as i32;
        let id = cri.run_container(&pod_id, &pod, &config);
        let (status, _) = cri.container_status(&id);
        let reported = status.user.and_then(|u| u.linux).map(|l| (l.uid, l.gid, l.supplemental_groups));
        groups.push((groups_inside(&cri, &id), reported));
    }
    let set = |ids: &[u32]| ids.iter().copied().collect::<BTreeSet<u32>>();
    match schema() {
        Schema::V3 => assert_eq!(
            groups,
            [
                (set(&[1000, 3000, 5000]), Some((1000, 1000, vec![1000, 3000, 5000]))),
                (set(&[1000, 3000]), Some((1000, 1000, vec![1000, 3000]))),
            ],
            "{handler:?}: Merge, then Strict"
        ),
        Schema::V2 => assert_eq!(
            groups,
            [(set(&[1000, 3000, 5000]), None), (set(&[1000, 3000, 5000]), None)],
            "{handler:?}: 1.6 merges whatever the policy"
        ),
    }
    cri.remove_pod_fully(&pod_id);
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

/// With `snapshotter = "ferrum"` on the handler (containerd 2.x), the pod's
/// sandbox and container root filesystems are overlays of ferrum-snapshotter's
/// dirs: what the container writes lands in the snapshotter's upper dir. 1.6
/// has no per-handler snapshotter: the pod stays on the CRI's (overlayfs).
fn pod_rootfs_from_the_handlers_snapshotter(handler: Handler) {
    let cri = CriEnv::start_with(on_ferrum_snapshotter()).expect("starting containerd with ferrum-snapshotter");
    let pod = cri.pod_config("snap");
    let pod_id = cri.run_pod(handler, &pod).expect("RunPodSandbox");
    assert_served(&cri, handler);
    let id = cri.run_container(&pod_id, &pod, &sleeper(&cri, &pod, "app"));
    cri.exec_ok(&id, &["sh", "-c", "echo from the pod > /marker"]);
    let (_, info) = cri.container_status(&id);
    let info: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
    let container_pid = info["pid"].as_u64().expect("the container's pid");
    let snapshots = cri.env().snapshotter_root().join("snapshots");
    let upper_dirs: Vec<String> = [pid_of_pod(&cri, &pod_id), container_pid]
        .into_iter()
        .map(|pid| {
            let (fstype, options) = root_mount(pid);
            assert_eq!(fstype, "overlay", "{options}");
            let upper = options.split(',').find_map(|o| o.strip_prefix("upperdir=")).unwrap_or_default();
            upper.to_string()
        })
        .collect();
    match schema() {
        Schema::V3 => {
            assert_eq!(info["snapshotter"], "ferrum", "{info}");
            for upper in &upper_dirs {
                assert!(Path::new(upper).starts_with(&snapshots), "{upper} is not ferrum-snapshotter's");
            }
            let marker = Path::new(&upper_dirs[1]).join("marker");
            assert_eq!(fs::read_to_string(&marker).unwrap(), "from the pod\n", "{}", marker.display());
        }
        Schema::V2 => {
            assert_eq!(info["snapshotter"], "overlayfs", "1.6 has no per-handler snapshotter: {info}");
            for upper in &upper_dirs {
                assert!(!Path::new(upper).starts_with(&snapshots), "{upper}");
            }
        }
    }
    cri.remove_pod_fully(&pod_id);
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

for_handlers!(
    [Ferrum => ferrum, FerrumFeatures => ferrum_features, Runc => runc]
    pods_with_user_namespaces,
);
// Not under `ferrum`: containerd 2.1.9 dereferences the missing features of
// its handler and crashes (internal/cri/opts/spec_linux_opts.go, withMounts).
for_handlers!(
    [FerrumFeatures => ferrum_features, Runc => runc]
    recursive_read_only_volumes,
);
for_handlers!(
    [Ferrum => ferrum, FerrumFeatures => ferrum_features, Runc => runc]
    supplemental_groups_policy_strict,
);
for_handlers!(
    [Ferrum => ferrum, FerrumFeatures => ferrum_features]
    pod_rootfs_from_the_handlers_snapshotter,
);
for_handlers!([Ferrum => ferrum, Runc => runc] a_prestart_hook_reads_the_rootfs_on_the_host);

/// Writes `found` or `missing` into the bundle, after whether the rootfs's
/// /bin/sh is there: the bundle is in the state on stdin.
const ROOTFS_PROBE: &str = r#"b=$(sed -n 's/.*"bundle": *"\([^"]*\)".*/\1/p'); if test -e "$b/rootfs/bin/sh"; then echo found; else echo missing; fi > "$b/prestart-saw""#;

/// A hook that runs in the runtime's namespaces may read the rootfs at its
/// path on the host, as under runc: given such hooks (here a prestart hook in
/// the handlers' base runtime spec, as a node operator would add one), ferrum
/// mounts the layers on the host rather than in the container's own mount
/// namespace (runtime-core's container/layers.rs). Only the app container is
/// checked: containerd 1.6's CRI starts a sandbox from its own spec.
fn a_prestart_hook_reads_the_rootfs_on_the_host(handler: Handler) {
    let hook = serde_json::json!({ "path": "/bin/sh", "args": ["sh", "-c", ROOTFS_PROBE], "env": ["PATH=/usr/bin:/bin"] });
    let options = CriOptions { base_spec_hooks: Some(serde_json::json!({ "prestart": [hook] })), ..Default::default() };
    let cri = CriEnv::start_with(options).expect("starting containerd with a base runtime spec");
    let pod = cri.pod_config("hooked");
    let pod_id = cri.run_pod(handler, &pod).expect("RunPodSandbox");
    assert_served(&cri, handler);
    let id = cri.run_container(&pod_id, &pod, &sleeper(&cri, &pod, "app"));
    let bundle = cri.env().root_dir().join("state/io.containerd.runtime.v2.task").join(CRI_NAMESPACE).join(&id);
    let saw = fs::read_to_string(bundle.join("prestart-saw")).unwrap_or_else(|e| format!("no record: {e}"));
    assert_eq!(saw, "found\n", "{handler:?}: what the container's prestart hook found");
    cri.remove_pod_fully(&pod_id);
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

