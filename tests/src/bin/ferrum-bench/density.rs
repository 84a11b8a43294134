//! `ferrum-bench density [N]`: N idle containers per runtime, each runtime on
//! a fresh private containerd (`ctr run -d … sleep`, one shim each), runc-v2 +
//! runc first, then ferrum: the shims' memory in all and per container, containerd's
//! with them all up, how long the first and the last containers took to
//! start, and the teardown of them all. After each runtime nothing may be
//! left (mounts, shims, cgroups, state): a run that leaves anything fails.

use anyhow::{bail, Context, Result};
use ferrum_tests::Env;
use std::time::{Duration, Instant};

use super::{median, memory, millis, phases, watch_events, Memory, Run, FERRUM, RUNC};

/// The events of a `ctr run -d`, with the phase each one ends.
const DETACHED_PHASES: [(&str, &str); 3] = [
    ("/containers/create", "client: image, spec, snapshot"),
    ("/tasks/create", "shim start + Create"),
    ("/tasks/start", "Start"),
];

/// The first and the last this many containers' start times are compared.
const EDGE: usize = 20;

/// One runtime's figures.
struct Density {
    shims: Memory,
    containerd: Memory,
    first_ms: f64,
    last_ms: f64,
    /// Each phase's median over the first and over the last EDGE starts.
    phases: Vec<(String, f64, f64)>,
    teardown_ms: f64,
}

pub fn run(n: usize) -> Result<()> {
    if n == 0 {
        bail!("density: N must be at least 1");
    }
    // A containerd of its own for each runtime: one that has already served
    // the other's containers holds more memory (Go keeps its heap), whichever
    // comes second (measured: 1.11 with runc-v2 first, 0.89 with ferrum first).
    let on_fresh_containerd = |runtime, prefix| -> Result<Density> {
        let env = Env::start().context("start containerd")?;
        let image = env.import_busybox()?;
        one_runtime(&env, &image, runtime, prefix, n)
    };
    let runc = on_fresh_containerd(RUNC, "r")?;
    let ferrum = on_fresh_containerd(FERRUM, "f")?;
    let edge = EDGE.min(n);
    println!("{n} idle containers per runtime, one shim each, a containerd each:");
    println!("  {:44} {:>10} {:>10} {:>7}", "", "runc-v2", "ferrum", "ratio");
    let rows = [
        ("shims' PSS, all (kB)", runc.shims.pss_kb as f64, ferrum.shims.pss_kb as f64),
        ("shims' PSS per container (kB)", runc.shims.pss_kb as f64 / n as f64, ferrum.shims.pss_kb as f64 / n as f64),
        ("shims' RSS, all (kB)", runc.shims.rss_kb as f64, ferrum.shims.rss_kb as f64),
        ("shims' threads, all", runc.shims.threads as f64, ferrum.shims.threads as f64),
        ("containerd's PSS with them up (kB)", runc.containerd.pss_kb as f64, ferrum.containerd.pss_kb as f64),
        (&format!("start, median of the first {edge} (ms)"), runc.first_ms, ferrum.first_ms),
        (&format!("start, median of the last {edge} (ms)"), runc.last_ms, ferrum.last_ms),
        ("teardown of all (ms)", runc.teardown_ms, ferrum.teardown_ms),
    ];
    for (what, r, f) in rows {
        println!("  {what:44} {r:10.1} {f:10.1} {:7.2}", f / r);
    }
    println!(
        "  last/first start: runc-v2 {:.2}, ferrum {:.2}",
        runc.last_ms / runc.first_ms,
        ferrum.last_ms / ferrum.first_ms
    );
    // Where the growth goes: containerd's phases grow with both runtimes.
    println!("  start phases, median of the first / last {edge} (ms):");
    for ((name, r1, r2), (_, f1, f2)) in runc.phases.iter().zip(&ferrum.phases) {
        println!("    {name:42} runc-v2 {r1:6.1} / {r2:6.1}   ferrum {f1:6.1} / {f2:6.1}");
    }
    Ok(())
}

/// Start `n` idle containers on `runtime`, measure, tear them all down and
/// check that nothing is left.
fn one_runtime(env: &Env, image: &str, runtime: &str, prefix: &str, n: usize) -> Result<Density> {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let (mut events_ctr, events) = watch_events(env)?;
    // Time for `ctr events` to subscribe before the first container's events.
    std::thread::sleep(Duration::from_millis(300));
    let mut runs = Vec::with_capacity(n);
    for id in &ids {
        let began = super::unix_ms(std::time::SystemTime::now());
        let started = Instant::now();
        let out = env.ctr(&["run", "-d", "--runtime", runtime, image, id, "sleep", "1000000"]);
        if !out.success() {
            bail!("{runtime}: container {id} did not start\n{out}");
        }
        runs.push(Run { id: id.clone(), began, ended: began + millis(started) });
    }
    // Let start-up transients settle, as an idle node's shims would (and the
    // last events reach ctr events).
    std::thread::sleep(Duration::from_secs(5));
    let _ = events_ctr.kill();
    let _ = events_ctr.wait();
    let starts: Vec<f64> = runs.iter().map(|r| r.ended - r.began).collect();
    let mut shims = Memory { rss_kb: 0, pss_kb: 0, threads: 0 };
    for id in &ids {
        let pid = env.shim_pid(id).with_context(|| format!("{runtime}: no shim serves {id}"))?;
        let m = memory(pid)?;
        shims.rss_kb += m.rss_kb;
        shims.pss_kb += m.pss_kb;
        shims.threads += m.threads;
    }
    let containerd = memory(env.containerd_pid().context("containerd is not running")?)?;
    let edge = EDGE.min(n);
    let first_ms = median(&mut starts[..edge].to_vec());
    let last_ms = median(&mut starts[n - edge..].to_vec());
    let last = phases(&runs[n - edge..], &events, &DETACHED_PHASES);
    let phases = phases(&runs[..edge], &events, &DETACHED_PHASES)
        .into_iter()
        .filter_map(|(name, a)| Some((name.clone(), a, last.iter().find(|(n, _)| *n == name)?.1)))
        .collect();

    let torn = Instant::now();
    for id in &ids {
        env.ctr(&["tasks", "kill", "--signal", "SIGKILL", id]);
    }
    for id in &ids {
        env.remove_killed_task(id);
    }
    let teardown_ms = millis(torn);
    let left = env.leftovers_after(Duration::from_secs(10));
    if !left.is_empty() {
        bail!("{runtime}: left behind after the teardown: {left:#?}");
    }
    Ok(Density { shims, containerd, first_ms, last_ms, phases, teardown_ms })
}
