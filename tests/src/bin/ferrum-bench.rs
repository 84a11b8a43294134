//! The benchmark: ferrum against containerd's runc-v2 shim + runc, on one
//! private containerd, in the same run, reported as ratios.
//!
//! - `ctr run --rm IMAGE ID true`, alternating the two runtimes N times (both on
//!   containerd's overlayfs snapshotter, so the runtimes are what differs), then
//!   once more for ferrum on ferrum's snapshotter;
//! - the memory of one idle shim of each (RSS, PSS, threads).
//!
//! Usage: ferrum-bench [N]   (scripts/bench builds release binaries and runs it)

use anyhow::{bail, Context, Result};
use ferrum_tests::Env;
use std::time::{Duration, Instant};

const RUNC: &str = "io.containerd.runc.v2";
const FERRUM: &str = "io.containerd.ferrum.v2";

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn timed_run(env: &Env, image: &str, runtime: &str, snapshotter: &str, id: &str) -> Result<f64> {
    let t = Instant::now();
    let out = env.ctr(&["run", "--rm", "--runtime", runtime, "--snapshotter", snapshotter, image, id, "true"]);
    let secs = t.elapsed().as_secs_f64();
    if !out.success() {
        bail!("{runtime} run failed: {out}");
    }
    Ok(secs * 1000.0)
}

struct Memory {
    rss_kb: u64,
    pss_kb: u64,
    threads: usize,
}

fn field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn memory(pid: i32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    Ok(Memory {
        rss_kb: field(&status, "VmRSS:"),
        pss_kb: field(&rollup, "Pss:"),
        threads: std::fs::read_dir(format!("/proc/{pid}/task"))?.count(),
    })
}

fn idle_shim(env: &Env, image: &str, runtime: &str, id: &str) -> Result<Memory> {
    let out = env.ctr(&["run", "-d", "--runtime", runtime, image, id, "sleep", "600"]);
    if !out.success() {
        bail!("{runtime}: {out}");
    }
    // Let start-up transients (e.g. tokio's blocking-pool thread) settle.
    std::thread::sleep(Duration::from_secs(12));
    let pid = env.shim_pid(id).with_context(|| format!("no shim found for {id}"))?;
    let mem = memory(pid)?;
    env.ctr(&["tasks", "kill", "--signal", "SIGKILL", id]);
    std::thread::sleep(Duration::from_millis(300));
    env.ctr(&["tasks", "delete", id]);
    env.ctr(&["containers", "rm", id]);
    Ok(mem)
}

fn main() -> Result<()> {
    let n: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(20);
    let env = Env::start().context("start containerd")?;
    let image = env.import_busybox()?;
    // Unpack into both snapshotters and warm both shims' binaries up.
    timed_run(&env, &image, RUNC, "overlayfs", "warm-runc")?;
    timed_run(&env, &image, FERRUM, "overlayfs", "warm-ferrum")?;
    timed_run(&env, &image, FERRUM, "ferrum", "warm-ferrum-snap")?;

    let (mut runc, mut ferrum, mut ferrum_snap) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        // Alternate which goes first, so drift affects both alike.
        let order: [(&str, &mut Vec<f64>); 2] = if i % 2 == 0 {
            [(RUNC, &mut runc), (FERRUM, &mut ferrum)]
        } else {
            [(FERRUM, &mut ferrum), (RUNC, &mut runc)]
        };
        for (rt, samples) in order {
            samples.push(timed_run(&env, &image, rt, "overlayfs", &format!("b{i}"))?);
        }
        ferrum_snap.push(timed_run(&env, &image, FERRUM, "ferrum", &format!("s{i}"))?);
    }
    let (r, f, fs) = (median(&mut runc), median(&mut ferrum), median(&mut ferrum_snap));
    println!("ctr run --rm … true, median of {n} (ms):");
    println!("  runc-v2 + runc (overlayfs)         {r:8.1}");
    println!("  ferrum (overlayfs)                 {f:8.1}   ratio ferrum/runc-v2 = {:.2}", f / r);
    println!("  ferrum (ferrum-snapshotter)        {fs:8.1}   ratio ferrum/runc-v2 = {:.2}", fs / r);

    let rm = idle_shim(&env, &image, RUNC, "idle-runc")?;
    let fm = idle_shim(&env, &image, FERRUM, "idle-ferrum")?;
    println!("idle shim, one container:");
    println!("  runc-v2  RSS {:6} kB  PSS {:6} kB  threads {}", rm.rss_kb, rm.pss_kb, rm.threads);
    println!("  ferrum   RSS {:6} kB  PSS {:6} kB  threads {}", fm.rss_kb, fm.pss_kb, fm.threads);
    println!(
        "  ratio ferrum/runc-v2: RSS {:.2}  PSS {:.2}",
        fm.rss_kb as f64 / rm.rss_kb as f64,
        fm.pss_kb as f64 / rm.pss_kb as f64
    );
    Ok(())
}
