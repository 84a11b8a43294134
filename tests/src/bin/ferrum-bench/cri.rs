//! The CRI part of the benchmark: what kubelet waits for when it starts a pod,
//! and what the shims of a running pod cost, under the ferrum handler against
//! the runc handler of the same containerd.
//!
//! - RunPodSandbox + CreateContainer + StartContainer of one container,
//!   alternating the handlers N times (the teardown is not timed);
//! - the memory (RSS, PSS) of all shims of one idle pod of 3 containers.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ferrum_tests::cri::{CriEnv, Handler};

use super::{median, memory, millis, print_memory, Memory};

/// The targets, as ratios ferrum / runc handler.
const START_TARGET: f64 = 0.4;
const MEMORY_TARGET: f64 = 0.35;

fn status(err: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", err.message())
}

/// Milliseconds of RunPodSandbox, CreateContainer and StartContainer.
type Phases = [f64; 3];
const PHASES: [&str; 3] = ["RunPodSandbox", "CreateContainer", "StartContainer"];

/// One pod with one running container; returns each call's time and the pod id.
fn start_pod(cri: &CriEnv, handler: Handler, name: &str) -> Result<(Phases, String)> {
    let pod = cri.pod_config(name);
    let config = cri.container_config(&pod, "app", &["sleep", "600"]);
    let t = Instant::now();
    let pod_id = cri.run_pod(handler, &pod).map_err(status)?;
    let run = millis(t);
    let t = Instant::now();
    let id = cri.create_container(&pod_id, &pod, &config).map_err(status)?;
    let create = millis(t);
    let t = Instant::now();
    cri.start_container(&id).map_err(status)?;
    Ok(([run, create, millis(t)], pod_id))
}

fn remove_pod(cri: &CriEnv, pod_id: &str) -> Result<()> {
    cri.stop_pod(pod_id).map_err(status)?;
    cri.remove_pod(pod_id).map_err(status)
}

/// Sum over the shims serving a pod of 3 sleeping containers.
fn pod_shims_memory(cri: &CriEnv, handler: Handler) -> Result<(Memory, usize)> {
    let pod = cri.pod_config(&format!("mem-{}", handler.name()));
    let pod_id = cri.run_pod(handler, &pod).map_err(status)?;
    for i in 0..3 {
        let config = cri.container_config(&pod, &format!("c{i}"), &["sleep", "600"]);
        let id = cri.create_container(&pod_id, &pod, &config).map_err(status)?;
        cri.start_container(&id).map_err(status)?;
    }
    // Let start-up transients (e.g. tokio's blocking-pool threads) settle.
    std::thread::sleep(Duration::from_secs(12));
    let shims = cri.shims(handler);
    let mut total = Memory { rss_kb: 0, pss_kb: 0, threads: 0 };
    for pid in &shims {
        let m = memory(*pid)?;
        total.rss_kb += m.rss_kb;
        total.pss_kb += m.pss_kb;
        total.threads += m.threads;
    }
    remove_pod(cri, &pod_id)?;
    Ok((total, shims.len()))
}

pub fn run(n: usize) -> Result<()> {
    let cri = CriEnv::start_with(Default::default()).context("start containerd with the CRI plugin")?;
    // Warm both handlers up (shim binaries, the image's snapshots).
    for handler in [Handler::Runc, Handler::Ferrum] {
        let (_, pod_id) = start_pod(&cri, handler, &format!("warm-{}", handler.name()))?;
        remove_pod(&cri, &pod_id)?;
    }
    let (mut runc, mut ferrum) = (Vec::new(), Vec::new());
    for i in 0..n {
        let order = if i % 2 == 0 { [Handler::Runc, Handler::Ferrum] } else { [Handler::Ferrum, Handler::Runc] };
        for handler in order {
            let (phases, pod_id) = start_pod(&cri, handler, &format!("b{i}"))?;
            remove_pod(&cri, &pod_id)?;
            match handler {
                Handler::Runc => runc.push(phases),
                Handler::Ferrum | Handler::FerrumFeatures => ferrum.push(phases),
            }
        }
    }
    let total = |runs: &[Phases]| median(&mut runs.iter().map(|p| p.iter().sum()).collect::<Vec<_>>());
    let (r, f) = (total(&runc), total(&ferrum));
    println!("CRI RunPodSandbox + CreateContainer + StartContainer, median of {n} (ms):");
    println!("  runc handler                       {r:8.1}");
    println!(
        "  ferrum handler                     {f:8.1}   ratio ferrum/runc = {:.2} (target <= {START_TARGET})",
        f / r
    );
    println!("  each call's median (ms)            {:>8} {:>8} {:>7}", "runc", "ferrum", "ratio");
    for (i, phase) in PHASES.iter().enumerate() {
        let pick = |runs: &[Phases]| median(&mut runs.iter().map(|p| p[i]).collect::<Vec<_>>());
        let (r, f) = (pick(&runc), pick(&ferrum));
        println!("    {phase:32} {r:8.1} {f:8.1} {:7.2}", f / r);
    }

    let (rm, rn) = pod_shims_memory(&cri, Handler::Runc)?;
    let (fm, fn_) = pod_shims_memory(&cri, Handler::Ferrum)?;
    let title = format!(
        "CRI: all shims of an idle pod of 3 containers (+ sandbox): runc handler {rn}, ferrum handler {fn_} \
         (target ratio <= {MEMORY_TARGET})"
    );
    print_memory(&title, &rm, &fm);
    Ok(())
}
