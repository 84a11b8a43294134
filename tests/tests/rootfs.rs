//! The container's filesystem view through ctr -> containerd -> ferrum:
//! containerd's default mounts, masked and read-only paths, cgroup mounts.

use std::time::Duration;

use ferrum_tests::{mounts_at, root_mount, CtrOutput, Env, FERRUM_RUNTIME, RUNC_RUNTIME};

const GRACE: Duration = Duration::from_secs(5);

fn run_script(extra: &[&str], script: &str) -> CtrOutput {
    let (env, image) = Env::with_busybox();
    let mut flags = vec!["--rm"];
    flags.extend_from_slice(extra);
    let out = env.run_on_ferrum(&flags, &image, "c1", &["sh", "-c", script]);
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
    out
}

/// containerd's rootfs mounts go into the container's own mount namespace
/// (runtime-core's container/layers.rs): the container runs on its image's
/// overlay, an exec sees it too, and the host's mount table does not grow by
/// the container, so there is nothing to unmount when it goes. runc-v2, the
/// reference in the same run, mounts it on the host.
#[test]
fn the_rootfs_is_mounted_in_the_containers_own_namespace() {
    let (env, image) = Env::with_busybox();
    let cases = [
        (FERRUM_RUNTIME, "overlayfs", "ferrum-overlayfs", 0),
        (FERRUM_RUNTIME, "ferrum", "ferrum-ferrum", 0),
        (RUNC_RUNTIME, "overlayfs", "runc-overlayfs", 1),
    ];
    for (runtime, snapshotter, id, on_host) in cases {
        env.run_on(runtime, &["-d", "--snapshotter", snapshotter], &image, id, &["sleep", "600"]).assert_ok();
        let bundle = env.root_dir().join("state/io.containerd.runtime.v2.task").join(env.namespace()).join(id);
        assert_eq!(mounts_at(&bundle.join("rootfs")), on_host, "{id}: mounts on the host's {}/rootfs", bundle.display());
        let init = env.task_pid(id).expect("the container's init") as u64;
        assert_eq!(root_mount(init).0, "overlay", "{id}: the container's root");
        let exec = env.ctr(&["tasks", "exec", "--exec-id", "look", id, "sh", "-c", "echo x > /written && cat /written"]);
        exec.assert_ok();
        assert_eq!(exec.stdout, "x\n", "{id}: {exec}");
    }
    for (_, _, id, _) in cases {
        env.remove_task(id);
    }
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

#[test]
fn masked_and_readonly_paths_of_containerds_default_spec() {
    // Files are masked by /dev/null, directories by an empty tmpfs.
    let script = "\
        test -c /proc/keys && echo keys-masked; \
        echo firmware=$(ls /sys/firmware | wc -l); \
        echo 1 > /proc/sys/kernel/domainname 2>/dev/null || echo proc-sys-ro; \
        echo x > /sys/kernel/foo 2>/dev/null || echo sys-ro";
    let out = run_script(&[], script);
    out.assert_ok();
    assert!(out.stdout.contains("keys-masked"), "{out}");
    assert!(out.stdout.contains("firmware=0\n"), "{out}");
    assert!(out.stdout.contains("proc-sys-ro"), "{out}");
    assert!(out.stdout.contains("sys-ro"), "{out}");
}

#[test]
fn read_only_rootfs() {
    let out = run_script(&["--read-only"], "touch /x 2>&1 || echo rootfs-ro; touch /tmp/y 2>&1; echo done");
    out.assert_ok();
    assert!(out.stdout.contains("rootfs-ro"), "{out}");
}

#[test]
fn cgroup_mount_shows_only_the_containers_own_cgroup() {
    let out = run_script(
        &["--mount", "type=cgroup,src=cgroup,dst=/sys/fs/cgroup,options=ro:nosuid:nodev:noexec"],
        "ls /sys/fs/cgroup; echo procs=$(cat /sys/fs/cgroup/memory/cgroup.procs | tr '\\n' ' '); \
         touch /sys/fs/cgroup/memory/x 2>/dev/null || echo cgroup-ro",
    );
    out.assert_ok();
    for h in ["cpu", "memory", "pids", "freezer"] {
        assert!(out.stdout.lines().any(|l| l == h), "no {h} hierarchy: {out}");
    }
    // Its own cgroup is the root it sees: only its own processes are in it.
    assert!(out.stdout.contains("procs=1 "), "{out}");
    assert!(out.stdout.contains("cgroup-ro"), "{out}");
}

/// A bind mount with uidMappings/gidMappings (runtime-spec 1.1) is idmapped:
/// files of host root show as the mapped ids inside, nothing changes on disk.
#[test]
fn a_bind_mount_with_id_mappings_is_idmapped() {
    use ferrum_tests::SpecFile;
    let env = ferrum_tests::Env::start().unwrap();
    let source = env.root_dir().join("idmap-src");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(source.join("f"), "x").unwrap();
    let mut file = SpecFile::new(&env, "idmap", &["ls", "-ln", "/data/f"]).unwrap();
    let map = serde_json::json!([{ "containerID": 0, "hostID": 1000, "size": 1 }]);
    file.spec["mounts"].as_array_mut().unwrap().push(serde_json::json!({
        "destination": "/data", "type": "bind", "source": source, "options": ["rbind", "ro"],
        "uidMappings": map, "gidMappings": map,
    }));
    let out = file.run(&env, ferrum_tests::FERRUM_RUNTIME, &["--rm"]).unwrap();
    out.assert_ok();
    let owner: Vec<&str> = out.stdout.split_whitespace().skip(2).take(2).collect();
    assert_eq!(owner, ["1000", "1000"], "{out}");
    let meta = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(source.join("f")).unwrap());
    assert_eq!(meta, 0, "the file's owner on disk changed");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

/// Kubernetes' Bidirectional mounts (CSI node plugins, storage daemons):
/// rootfsPropagation rshared and a volume that is a shared mount on the host.
/// The container starts — pivot_root refuses a shared mount under the new
/// root, which runc makes private first —, and mounts propagate both ways:
/// one the host makes under the volume shows in the container, one the
/// container makes shows on the host. runc is the reference.
#[test]
fn a_bidirectional_volume_propagates_both_ways() {
    use ferrum_tests::{SpecFile, FERRUM_RUNTIME, RUNC_RUNTIME};
    use nix::mount::{mount, MsFlags};
    use serde_json::json;
    let env = Env::start().unwrap();
    for (runtime, id) in [(RUNC_RUNTIME, "bidir-runc"), (FERRUM_RUNTIME, "bidir")] {
        // A shared mount of its own on the host (the Env unmounts what is left).
        let vol = env.root_dir().join(format!("{id}-vol"));
        std::fs::create_dir_all(vol.join("from-host")).unwrap();
        mount(Some(&vol), &vol, None::<&str>, MsFlags::MS_BIND, None::<&str>).unwrap();
        mount(None::<&str>, &vol, None::<&str>, MsFlags::MS_SHARED, None::<&str>).unwrap();
        let mut file = SpecFile::new(&env, id, &["sleep", "600"]).unwrap();
        file.spec["linux"]["rootfsPropagation"] = json!("rshared");
        let vol_mount = json!({"destination": "/vol", "type": "bind", "source": vol, "options": ["rbind", "rshared"]});
        file.spec["mounts"].as_array_mut().unwrap().push(vol_mount);
        for set in ["bounding", "effective", "permitted"] {
            file.spec["process"]["capabilities"][set].as_array_mut().unwrap().push(json!("CAP_SYS_ADMIN"));
        }
        file.run(&env, runtime, &["-d"]).unwrap().assert_ok();

        let host_made = vol.join("from-host");
        mount(Some("tmpfs"), &host_made, Some("tmpfs"), MsFlags::empty(), None::<&str>).unwrap();
        std::fs::write(host_made.join("marker"), "host").unwrap();
        let script = "cat /vol/from-host/marker; mkdir -p /vol/from-container && \
            mount -t tmpfs c /vol/from-container && echo container > /vol/from-container/marker";
        let out = env.ctr(&["tasks", "exec", "--exec-id", "e", id, "sh", "-c", script]);
        out.assert_ok();
        assert_eq!(out.stdout, "host", "{runtime}: the host's mount is not in the container: {out}");
        let seen = std::fs::read_to_string(vol.join("from-container/marker"));
        assert_eq!(seen.ok().as_deref(), Some("container\n"), "{runtime}: the container's mount is not on the host");
        env.remove_task(id);
        for m in [vol.join("from-container"), host_made, vol] {
            nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH).unwrap();
        }
    }
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

/// A recursive read-only bind (`rro`, Kubernetes' recursiveReadOnly volumes):
/// the volume and the mounts under it are read-only, where `ro` leaves the
/// submounts writable. runc is the reference.
#[test]
fn a_recursive_read_only_bind_covers_its_submounts() {
    use ferrum_tests::{FERRUM_RUNTIME, RUNC_RUNTIME};
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    let (env, image) = Env::with_busybox();
    let vol = env.root_dir().join("rro-vol");
    std::fs::create_dir_all(vol.join("sub")).unwrap();
    mount(Some("tmpfs"), &vol.join("sub"), Some("tmpfs"), MsFlags::empty(), None::<&str>).unwrap();
    let script = "touch /v/top 2>/dev/null && echo top-writable; touch /v/sub/below 2>/dev/null && echo sub-writable; true";
    for (runtime, option, expected) in [
        (RUNC_RUNTIME, "rro", ""),
        (FERRUM_RUNTIME, "rro", ""),
        (FERRUM_RUNTIME, "ro", "sub-writable\n"),
    ] {
        let m = format!("type=bind,src={},dst=/v,options=rbind:{option}", vol.display());
        let out = env.run_on(runtime, &["--rm", "--mount", &m], &image, "rro", &["sh", "-c", script]);
        out.assert_ok();
        assert_eq!(out.stdout, expected, "{runtime} with {option}: {out}");
    }
    umount2(&vol.join("sub"), MntFlags::MNT_DETACH).unwrap();
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}
