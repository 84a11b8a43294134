//! The benchmark: ferrum against containerd's runc-v2 shim + runc, on one
//! private containerd, in the same run, reported as ratios.
//!
//! - `ctr run --rm IMAGE ID true`, alternating the two runtimes N times (both on
//!   containerd's overlayfs snapshotter, so the runtimes are what differs), then
//!   once more for ferrum on ferrum's snapshotter;
//! - where each run's time goes, from containerd's events (median per phase);
//! - the memory of one idle shim of each (RSS, PSS, threads), with one container
//!   and with a pod of three (one shim per pod for both, by sandbox id), and
//!   where ferrum's resident pages come from (/proc/PID/smaps);
//! - ferrum-snapshotter against containerd's overlayfs (see
//!   `ferrum_tests::snapshot_bench`).
//!
//! - `density`: N idle containers per runtime at once (see `density.rs`).
//! - `checkpoint`: checkpoint and live restore of a container holding ~100 MB
//!   (see `checkpoint.rs`).
//!
//! Usage: ferrum-bench [snapshotter|systemd|baseline|density|checkpoint|cri] [N]   (scripts/bench
//! builds release binaries and runs it; `snapshotter` runs only the
//! snapshotter part, `cri` only the CRI's pod start, `systemd` only `ctr run` with both runtimes' systemd
//! cgroup drivers, in a `SystemdNode`; `baseline` ferrum against another
//! build of its own shim, `containerd-shim-ferrumbase-v2` beside it, which
//! `scripts/bench baseline REV` builds from a git revision)

#[path = "ferrum-bench/checkpoint.rs"]
mod checkpoint;
#[path = "ferrum-bench/cri.rs"]
mod cri;
#[path = "ferrum-bench/density.rs"]
mod density;

use anyhow::{bail, Context, Result};
use ferrum_tests::{millis, Env};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const RUNC: &str = "io.containerd.runc.v2";
const FERRUM: &str = "io.containerd.ferrum.v2";
/// Another build of ferrum's shim, for before/after comparisons.
const BASELINE: &str = "io.containerd.ferrumbase.v2";

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn unix_ms(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64() * 1000.0
}

/// When one `ctr run` began and ended (Unix ms), to place its events between.
struct Run {
    id: String,
    began: f64,
    ended: f64,
}

fn timed_run(env: &Env, image: &str, runtime: &str, snapshotter: &str, id: &str) -> Result<Run> {
    timed_run_with(env, image, runtime, &["--snapshotter", snapshotter], id)
}

fn timed_run_with(env: &Env, image: &str, runtime: &str, flags: &[&str], id: &str) -> Result<Run> {
    let began = SystemTime::now();
    let t = Instant::now();
    let mut args = vec!["run", "--rm", "--runtime", runtime];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[image, id, "true"]);
    let out = env.ctr(&args);
    let ms = millis(t);
    if !out.success() {
        bail!("{runtime} run failed: {out}");
    }
    let began = unix_ms(began);
    Ok(Run { id: id.into(), began, ended: began + ms })
}

/// The events of a container, in the order a `ctr run --rm` produces them,
/// with the phase each one ends.
const PHASES: [(&str, &str); 6] = [
    ("/containers/create", "client: image, spec, snapshot"),
    ("/tasks/create", "shim start + Create"),
    ("/tasks/start", "Start"),
    ("/tasks/exit", "process runs and exits"),
    ("/tasks/delete", "Delete"),
    ("/containers/delete", "container and snapshot removal"),
];

/// Event times (Unix ms) by container id and topic, from `ctr events`.
type Events = Arc<Mutex<HashMap<(String, String), f64>>>;

/// `2026-11-29 08:35:14.308057866 +0000 UTC ns /tasks/create {"container_id":"b0",…}`
fn parse_event(line: &str) -> Option<(String, String, f64)> {
    let mut parts = line.splitn(7, ' ');
    let (date, time, _zone, _utc, _ns, topic, json) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let id = v.get("container_id").or_else(|| v.get("id"))?.as_str()?.to_string();
    let days = {
        let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
        days_from_civil(d.next()??, d.next()??, d.next()??)
    };
    let mut hms = time.split(':');
    let (h, m, s): (f64, f64, f64) = (hms.next()?.parse().ok()?, hms.next()?.parse().ok()?, hms.next()?.parse().ok()?);
    let ms = (days as f64 * 86400.0 + h * 3600.0 + m * 60.0 + s) * 1000.0;
    Some((id, topic.to_string(), ms))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn watch_events(env: &Env) -> Result<(std::process::Child, Events)> {
    let mut child = env
        .ctr_command(&["events"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("spawning ctr events")?;
    let events: Events = Arc::default();
    let stdout = child.stdout.take().context("ctr events stdout")?;
    let sink = events.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((id, topic, at)) = parse_event(&line) {
                sink.lock().unwrap().insert((id, topic), at);
            }
        }
    });
    Ok((child, events))
}

/// Median time of each phase over `runs` (ms); the last phase ends when ctr does.
fn phases(runs: &[Run], events: &Events, phases: &[(&str, &str)]) -> Vec<(String, f64)> {
    phase_durations(runs, events, phases).into_iter().map(|(n, v)| (n, v[v.len() / 2])).collect()
}

/// Each phase's durations over `runs` (ms), sorted: `phases` are the events
/// (topic, and the phase it ends) each run produces in order.
fn phase_durations(runs: &[Run], events: &Events, phases: &[(&str, &str)]) -> Vec<(String, Vec<f64>)> {
    let events = events.lock().unwrap();
    let mut per_phase: Vec<Vec<f64>> = vec![Vec::new(); phases.len() + 1];
    for run in runs {
        let mut times = vec![run.began];
        for (topic, _) in phases {
            match events.get(&(run.id.clone(), topic.to_string())) {
                Some(t) => times.push(*t),
                None => break,
            }
        }
        if times.len() != phases.len() + 1 {
            continue;
        }
        times.push(run.ended);
        for (i, w) in times.windows(2).enumerate() {
            per_phase[i].push(w[1] - w[0]);
        }
    }
    let names = phases.iter().map(|(_, n)| n.to_string()).chain(["ctr exits".to_string()]);
    names
        .zip(per_phase)
        .filter(|(_, v)| !v.is_empty())
        .map(|(n, mut v)| {
            v.sort_by(|a, b| a.total_cmp(b));
            (n, v)
        })
        .collect()
}

struct Memory {
    rss_kb: u64,
    pss_kb: u64,
    threads: usize,
}

fn field(text: &str, name: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(name)?.split_whitespace().next()?.parse().ok()).unwrap_or(0)
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

/// Resident kB per mapped object (file, [heap], [stack], anonymous...) and permissions.
fn resident_by_mapping(pid: i32) -> Result<Vec<(String, u64)>> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let mut by: HashMap<String, u64> = HashMap::new();
    let mut current = String::new();
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            let f: Vec<&str> = line.split_whitespace().collect();
            current = format!("{} {}", f[1], f.get(5).unwrap_or(&"[anonymous]"));
        } else if let Some(kb) = line.strip_prefix("Rss:") {
            *by.entry(current.clone()).or_default() += kb.split_whitespace().next().unwrap_or("0").parse::<u64>()?;
        }
    }
    let mut v: Vec<(String, u64)> = by.into_iter().filter(|(_, kb)| *kb > 0).collect();
    v.sort_by_key(|(_, kb)| std::cmp::Reverse(*kb));
    Ok(v)
}

/// Start `ids` detached under `runtime` (one pod when `pod` names a sandbox),
/// let the shim settle, measure it, remove the containers.
fn idle_shim(env: &Env, image: &str, runtime: &str, ids: &[&str], pod: Option<&str>) -> Result<(Memory, i32)> {
    let annotation = pod.map(|p| format!("io.kubernetes.cri.sandbox-id={p}"));
    for id in ids {
        let mut args = vec!["run", "-d", "--runtime", runtime];
        if let Some(a) = &annotation {
            args.extend(["--annotation", a.as_str()]);
        }
        args.extend([image, id, "sleep", "600"]);
        let out = env.ctr(&args);
        if !out.success() {
            bail!("{runtime}: {out}");
        }
    }
    // Let start-up transients (e.g. tokio's blocking-pool thread) settle.
    std::thread::sleep(Duration::from_secs(12));
    let pid = env.shim_pid(ids[0]).with_context(|| format!("no shim found for {}", ids[0]))?;
    // containerd keeps the address `start` answered in each task's bundle.
    let bundles = env.root_dir().join("state/io.containerd.runtime.v2.task").join(env.namespace());
    let addresses: Vec<String> =
        ids.iter().map(|id| std::fs::read_to_string(bundles.join(id).join("address")).unwrap_or_default()).collect();
    if addresses.iter().any(|a| a.is_empty() || *a != addresses[0]) {
        bail!("{runtime}: the containers {ids:?} are not served by one shim: {addresses:?}");
    }
    let mem = memory(pid)?;
    Ok((mem, pid))
}

fn remove(env: &Env, ids: &[&str]) {
    for id in ids {
        env.ctr(&["tasks", "kill", "--signal", "SIGKILL", id]);
    }
    std::thread::sleep(Duration::from_millis(300));
    for id in ids {
        env.ctr(&["tasks", "delete", id]);
        env.ctr(&["containers", "rm", id]);
    }
}

fn print_memory(title: &str, runc: &Memory, ferrum: &Memory) {
    println!("{title}:");
    println!("  runc-v2  RSS {:6} kB  PSS {:6} kB  threads {}", runc.rss_kb, runc.pss_kb, runc.threads);
    println!("  ferrum   RSS {:6} kB  PSS {:6} kB  threads {}", ferrum.rss_kb, ferrum.pss_kb, ferrum.threads);
    println!(
        "  ratio ferrum/runc-v2: RSS {:.2}  PSS {:.2}",
        ferrum.rss_kb as f64 / runc.rss_kb as f64,
        ferrum.pss_kb as f64 / runc.pss_kb as f64
    );
}

/// `ctr run --rm IMAGE ID true` under runtimes `a` and `b`, alternating which
/// goes first, `n` times each (after one warm-up run of each); the runs of
/// each, with the events of all of them.
fn alternate(env: &Env, image: &str, [a, b]: [&str; 2], n: usize) -> Result<(Vec<Run>, Vec<Run>, Events)> {
    timed_run(env, image, a, "overlayfs", "warm-a")?;
    timed_run(env, image, b, "overlayfs", "warm-b")?;
    let (mut events_ctr, events) = watch_events(env)?;
    let (mut runs_a, mut runs_b) = (Vec::new(), Vec::new());
    for i in 0..n {
        let order: [(&str, &str, &mut Vec<Run>); 2] =
            if i % 2 == 0 { [(a, "a", &mut runs_a), (b, "b", &mut runs_b)] } else { [(b, "b", &mut runs_b), (a, "a", &mut runs_a)] };
        for (rt, tag, runs) in order {
            runs.push(timed_run(env, image, rt, "overlayfs", &format!("{tag}{i}"))?);
        }
    }
    // The last events reach ctr events a moment after ctr run returned.
    std::thread::sleep(Duration::from_millis(500));
    let _ = events_ctr.kill();
    let _ = events_ctr.wait();
    Ok((runs_a, runs_b, events))
}

fn median_total(runs: &[Run]) -> f64 {
    median(&mut runs.iter().map(|r| r.ended - r.began).collect::<Vec<_>>())
}

/// ferrum against the baseline build of its shim: what a change costs a
/// container start, phase by phase.
fn against_baseline(n: usize) -> Result<()> {
    let env = Env::start().context("start containerd")?;
    let image = env.import_busybox()?;
    let (base, ferrum, events) = alternate(&env, &image, [BASELINE, FERRUM], n)?;
    let (b, f) = (median_total(&base), median_total(&ferrum));
    println!("ctr run --rm … true, median of {n} (ms), this build against the baseline build:");
    println!("  baseline {b:8.1}   this build {f:8.1}   difference {:+.1}   ratio {:.3}", f - b, f / b);
    // Quartiles too: a phase whose spread is the kernel's (a cgroup v1 attach
    // waits for an RCU grace period) moves its median by more than any change.
    println!("  {:34} {:>20} {:>20} {:>8}", "phase (p25 median p75)", "baseline", "this", "diff");
    let quartiles = |v: &[f64]| (v[v.len() / 4], v[v.len() / 2], v[v.len() * 3 / 4]);
    for ((name, x), (_, y)) in phase_durations(&base, &events, &PHASES).iter().zip(&phase_durations(&ferrum, &events, &PHASES)) {
        let ((x1, x2, x3), (y1, y2, y3)) = (quartiles(x), quartiles(y));
        println!("  {name:34} {x1:6.2} {x2:6.2} {x3:6.2} {y1:6.2} {y2:6.2} {y3:6.2} {:+8.2}", y2 - x2);
    }
    Ok(())
}

/// `ctr run --rm … true` with runc's and ferrum's systemd cgroup drivers, in a
/// systemd node (each run is a transient scope systemd starts and stops).
fn systemd_drivers(n: usize) -> Result<()> {
    let node = ferrum_tests::SystemdNode::boot()?;
    let env = Env::start_with(ferrum_tests::Options { node: Some(node.pid()), ..Default::default() })?;
    let image = env.import_busybox()?;
    let options = env.root_dir().join("systemd.toml");
    std::fs::write(&options, "SystemdCgroup = true\n")?;
    let options = options.to_string_lossy().into_owned();
    let run = |runtime: &str, id: &str| {
        let (flags, path) = match runtime {
            RUNC => (vec!["--runc-systemd-cgroup"], format!("system.slice:runc:{id}")),
            _ => (vec!["--runtime-config-path", options.as_str()], format!("system.slice:ferrum:{id}")),
        };
        let mut all = vec!["--snapshotter", "overlayfs", "--cgroup", path.as_str()];
        all.extend(flags);
        timed_run_with(&env, &image, runtime, &all, id)
    };
    run(RUNC, "warm-runc")?;
    run(FERRUM, "warm-ferrum")?;
    let (mut runc, mut ferrum) = (Vec::new(), Vec::new());
    for i in 0..n {
        let order = if i % 2 == 0 { [RUNC, FERRUM] } else { [FERRUM, RUNC] };
        for rt in order {
            let (tag, runs) = if rt == RUNC { ("r", &mut runc) } else { ("f", &mut ferrum) };
            let r = run(rt, &format!("{tag}{i}"))?;
            runs.push(r.ended - r.began);
        }
    }
    let (r, f) = (median(&mut runc), median(&mut ferrum));
    println!("ctr run --rm … true with the systemd cgroup driver (a systemd 252 node), median of {n} (ms):");
    println!("  runc-v2 + runc (SystemdCgroup)     {r:8.1}");
    println!("  ferrum (SystemdCgroup)             {f:8.1}   ratio ferrum/runc-v2 = {:.2}", f / r);
    drop(env);
    drop(node);
    Ok(())
}

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // `ferrum-bench snapshotter [N]`: only ferrum-snapshotter against overlayfs.
    let only_snapshotter = args.first().is_some_and(|a| a == "snapshotter");
    let only_systemd = args.first().is_some_and(|a| a == "systemd");
    let baseline = args.first().is_some_and(|a| a == "baseline");
    let density = args.first().is_some_and(|a| a == "density");
    let checkpoint = args.first().is_some_and(|a| a == "checkpoint");
    let only_cri = args.first().is_some_and(|a| a == "cri");
    if only_snapshotter || only_systemd || baseline || density || checkpoint || only_cri {
        args.remove(0);
    }
    let n: usize = args.first().map(|a| a.parse()).transpose()?.unwrap_or(20);
    if density {
        return density::run(n);
    }
    if checkpoint {
        return checkpoint::run(n);
    }
    if only_systemd {
        return systemd_drivers(n);
    }
    if only_cri {
        return cri::run(n);
    }
    if baseline {
        return against_baseline(n);
    }
    let env = Env::start().context("start containerd")?;
    if only_snapshotter {
        print!("{}", ferrum_tests::snapshot_bench::run(&env, n)?);
        return Ok(());
    }
    let image = env.import_busybox()?;
    // Alternating which goes first, so that drift affects both alike.
    let (runc, ferrum, events) = alternate(&env, &image, [RUNC, FERRUM], n)?;
    // Unpacks into ferrum's snapshotter first.
    timed_run(&env, &image, FERRUM, "ferrum", "warm-ferrum-snap")?;
    let ferrum_snap =
        (0..n).map(|i| timed_run(&env, &image, FERRUM, "ferrum", &format!("s{i}"))).collect::<Result<Vec<_>>>()?;
    let (r, f, fs) = (median_total(&runc), median_total(&ferrum), median_total(&ferrum_snap));
    println!("ctr run --rm … true, median of {n} (ms):");
    println!("  runc-v2 + runc (overlayfs)         {r:8.1}");
    println!("  ferrum (overlayfs)                 {f:8.1}   ratio ferrum/runc-v2 = {:.2}", f / r);
    println!("  ferrum (ferrum-snapshotter)        {fs:8.1}   ratio ferrum/runc-v2 = {:.2}", fs / r);
    println!("where the time goes, median per phase from containerd's events (ms):");
    println!("  {:34} {:>8} {:>8}", "phase", "runc-v2", "ferrum");
    let (pr, pf) = (phases(&runc, &events, &PHASES), phases(&ferrum, &events, &PHASES));
    for ((name, a), (_, b)) in pr.iter().zip(&pf) {
        println!("  {name:34} {a:8.1} {b:8.1}");
    }

    let one = ["idle-runc"];
    let (rm, _) = idle_shim(&env, &image, RUNC, &one, None)?;
    remove(&env, &one);
    let one = ["idle-ferrum"];
    let (fm, pid) = idle_shim(&env, &image, FERRUM, &one, None)?;
    let mappings = resident_by_mapping(pid)?;
    remove(&env, &one);
    print_memory("idle shim, one container", &rm, &fm);
    println!("  ferrum's resident kB by mapping:");
    for (name, kb) in mappings.iter().take(8) {
        println!("    {kb:6}  {name}");
    }

    let pod = ["pod-runc-a", "pod-runc-b", "pod-runc-c"];
    let (rp, _) = idle_shim(&env, &image, RUNC, &pod, Some("bench-pod-runc"))?;
    remove(&env, &pod);
    let pod = ["pod-ferrum-a", "pod-ferrum-b", "pod-ferrum-c"];
    let (fp, _) = idle_shim(&env, &image, FERRUM, &pod, Some("bench-pod-ferrum"))?;
    remove(&env, &pod);
    print_memory("idle shim of a pod of three containers (one shim per pod for both)", &rp, &fp);
    print!("{}", ferrum_tests::snapshot_bench::run(&env, n)?);
    drop(env);
    cri::run(n)
}
