//! A pod's life through containerd's CRI plugin, under the ferrum handler and
//! under runc as the reference.

use std::time::Duration;

use ferrum_tests::cri::{CriEnv, Handler};
use ferrum_tests::for_each_handler;

const GRACE: Duration = Duration::from_secs(10);

fn pod_runs_and_goes_away(handler: Handler) {
    let cri = CriEnv::start();
    let pod = cri.pod_config("smoke");
    let pod_id = cri.run_pod(handler, &pod).expect("RunPodSandbox");
    let c = cri.container_config(&pod, "app", &["sleep", "600"]);
    let id = cri.run_container(&pod_id, &pod, &c);
    assert_eq!(cri.exec_ok(&id, &["echo", "hi"]), "hi\n");
    cri.remove_pod_fully(&pod_id);
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

for_each_handler!(pod_runs_and_goes_away);
