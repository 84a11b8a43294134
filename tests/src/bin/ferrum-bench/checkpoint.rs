//! `ferrum-bench checkpoint [N]`: a container holding about 100 MB of memory
//! checkpointed (`ctr containers checkpoint --task`) and restored live
//! (`ctr containers restore --live`) on runc-v2 + runc and on ferrum, with the
//! same CRIU (FERRUM_CRIU_DIR), N rounds alternating which runtime goes
//! first; medians and their ratio. Both include containerd's archiving of the
//! images into its content store and CRIU's own work, which dominate.

use anyhow::{bail, Context, Result};
use ferrum_tests::{Env, Options};
use std::time::{Duration, Instant};

use super::{field, median, FERRUM, RUNC};

/// About 100 MB of heap the process has written (so CRIU must dump it): a
/// 32 MiB string, then a 96 MiB one made of it.
const HOLDER: &str = r#"BEGIN { s = "x"; while (length(s) < 20000000) s = s s; t = s s s; system("sleep 100000") }"#;

struct Round {
    checkpoint_ms: f64,
    restore_ms: f64,
    rss_kb: u64,
}

pub fn run(n: usize) -> Result<()> {
    if n == 0 {
        bail!("checkpoint: N must be at least 1");
    }
    let env = Env::start_with(Options { criu: true, ..Options::default() }).context("start containerd with CRIU")?;
    let image = env.import_busybox()?;
    let (mut runc, mut ferrum) = (Vec::new(), Vec::new());
    for round in 0..n {
        let order = if round % 2 == 0 { [RUNC, FERRUM] } else { [FERRUM, RUNC] };
        for runtime in order {
            let r = one_round(&env, &image, runtime, round)?;
            if runtime == RUNC { runc.push(r) } else { ferrum.push(r) }
        }
    }
    let col = |rounds: &[Round], f: fn(&Round) -> f64| median(&mut rounds.iter().map(f).collect::<Vec<_>>());
    println!("checkpoint and live restore of a container holding ~100 MB, median of {n} (ms):");
    println!("  {:40} {:>10} {:>10} {:>7}", "", "runc-v2", "ferrum", "ratio");
    for (what, f) in [
        ("ctr containers checkpoint --task", (|r: &Round| r.checkpoint_ms) as fn(&Round) -> f64),
        ("ctr containers restore --live", |r: &Round| r.restore_ms),
        ("the container's RSS at checkpoint (MB)", |r: &Round| r.rss_kb as f64 / 1024.0),
    ] {
        let (r, fe) = (col(&runc, f), col(&ferrum, f));
        println!("  {what:40} {r:10.1} {fe:10.1} {:7.2}", fe / r);
    }
    Ok(())
}

fn one_round(env: &Env, image: &str, runtime: &str, round: usize) -> Result<Round> {
    let tag = if runtime == RUNC { "r" } else { "f" };
    let (id, restored, checkpoint) = (format!("ck{tag}{round}"), format!("rs{tag}{round}"), format!("ckpt-{tag}{round}:1"));
    let run = env.run_on(runtime, &["-d"], image, &id, &["awk", HOLDER]);
    if !run.success() {
        bail!("{runtime}: {run}");
    }
    let rss_kb = wait_for_rss(env, &id, 95 * 1024)?;
    let start = Instant::now();
    let out = env.ctr(&["containers", "checkpoint", "--task", &id, &checkpoint]);
    let checkpoint_ms = start.elapsed().as_secs_f64() * 1e3;
    if !out.success() {
        bail!("{runtime}: {out}");
    }
    env.remove_task(&id);
    let start = Instant::now();
    let out = env.ctr(&["containers", "restore", "--live", &restored, &checkpoint]);
    let restore_ms = start.elapsed().as_secs_f64() * 1e3;
    if !out.success() {
        bail!("{runtime}: {out}");
    }
    env.remove_task(&restored);
    env.ctr(&["images", "rm", &checkpoint]);
    Ok(Round { checkpoint_ms, restore_ms, rss_kb })
}

/// The task's init's resident memory once it holds at least `kb` and has
/// stopped growing (the holder is done building its strings).
fn wait_for_rss(env: &Env, id: &str, kb: u64) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = 0;
    loop {
        let rss = env
            .task_pid(id)
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .map_or(0, |s| field(&s, "VmRSS:"));
        if rss >= kb && rss == last {
            return Ok(rss);
        }
        if Instant::now() > deadline {
            bail!("{id} never held a steady {kb} kB (at {rss} kB)");
        }
        last = rss;
        std::thread::sleep(Duration::from_millis(200));
    }
}
