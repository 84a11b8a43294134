//! One shim per pod: containers with the same sandbox id share a ferrum shim,
//! which exits once the last of them is deleted.

use std::time::Duration;

use ferrum_tests::Env;

const GRACE: Duration = Duration::from_secs(5);

#[test]
fn containers_of_one_sandbox_share_one_shim() {
    let (env, image) = Env::with_busybox();
    let ids = ["pod-a", "pod-b", "pod-c"];
    for id in ids {
        let flags = ["-d", "--annotation", "io.kubernetes.cri.sandbox-id=pod1"];
        env.run_on_ferrum(&flags, &image, id, &["sleep", "600"]).assert_ok();
    }
    // containerd keeps the address `start` answered in each task's bundle.
    let bundles = env.root_dir().join("state/io.containerd.runtime.v2.task").join(env.namespace());
    let addresses: Vec<String> =
        ids.iter().map(|id| std::fs::read_to_string(bundles.join(id).join("address")).unwrap()).collect();
    assert!(addresses.iter().all(|a| *a == addresses[0]), "one shim for the pod: {addresses:?}");
    let shim = env.shim_pid(ids[0]).expect("the pod's shim runs");
    // The shim holds three containers on a single thread, once the threads
    // that briefly ran blocking work (a second at most) are gone.
    let threads = || std::fs::read_dir(format!("/proc/{shim}/task")).unwrap().count();
    let deadline = std::time::Instant::now() + GRACE;
    while threads() > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(threads(), 1, "threads of the pod's shim");

    // Deleting all but one leaves the shim serving the last.
    for (n, id) in ids.iter().enumerate() {
        env.remove_task(id);
        let alive = std::path::Path::new(&format!("/proc/{shim}")).exists();
        if n + 1 < ids.len() {
            assert!(alive, "the shim exited with containers left");
        }
    }
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}
