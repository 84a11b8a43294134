//! ferrum-bench's snapshotter part: ferrum-snapshotter against containerd's
//! built-in overlayfs, both through the same containerd, alternating.
//!
//! - unpacking a locally built 10-layer image and starting a container on it
//!   (`ctr run --rm --snapshotter S`, a fresh image each time so every layer
//!   is unpacked);
//! - Prepare, Mounts, Usage (of an active snapshot of 200 files) and Commit
//!   through containerd's Snapshots API, median latency of each.

use std::fmt;
use std::fs;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::image::{busybox_layer, ImageBuilder, Layer};
use crate::labels;
use crate::snapshots::SnapshotClient;
use crate::{millis, Env, FERRUM_RUNTIME};

const SNAPSHOTTERS: [&str; 2] = ["overlayfs", "ferrum"];
/// Layers above the busybox one, and files in each.
const UPPER_LAYERS: usize = 9;
const FILES_PER_LAYER: usize = 50;
const USAGE_FILES: usize = 200;

/// One measured operation: median milliseconds on each snapshotter.
pub struct Row {
    pub what: &'static str,
    pub overlayfs_ms: f64,
    pub ferrum_ms: f64,
}

pub struct Figures {
    pub rows: Vec<Row>,
    /// Runs of the unpack row, and of every other row.
    pub unpacks: usize,
    pub samples: usize,
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "snapshotters through containerd, median of {} unpacks and {} API calls (ms):",
            self.unpacks, self.samples
        )?;
        writeln!(
            f,
            "  {:44} {:>10} {:>10} {:>7}",
            "", "overlayfs", "ferrum", "ratio"
        )?;
        for row in &self.rows {
            writeln!(
                f,
                "  {:44} {:10.2} {:10.2} {:7.2}",
                row.what,
                row.overlayfs_ms,
                row.ferrum_ms,
                row.ferrum_ms / row.overlayfs_ms
            )?;
        }
        Ok(())
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Each unpack writes some 500 files: at most this many per snapshotter.
const MAX_UNPACKS: usize = 10;

/// Runs both parts `n` times per snapshotter (the unpack at most
/// MAX_UNPACKS times) on `env`, which must run ferrum-snapshotter.
pub fn run(env: &Env, n: usize) -> Result<Figures> {
    let unpacks = n.min(MAX_UNPACKS);
    let mut rows = vec![unpack_and_start(env, unpacks)?];
    rows.extend(api_latencies(env, n)?);
    Ok(Figures {
        rows,
        unpacks,
        samples: n,
    })
}

/// A 10-layer image whose bottom layer carries `salt`, so that no two share a
/// chain id and each `ctr run` unpacks all ten layers.
fn ten_layer_image(env: &Env, name: &str, salt: &str) -> Result<ImageBuilder> {
    let base = busybox_layer(env.busybox_path())?.file("salt", salt, 0o644);
    let mut image = ImageBuilder::new(name).layer(base);
    for l in 0..UPPER_LAYERS {
        let dir = format!("l{l}");
        let mut layer = Layer::new().dir(&dir, 0o755);
        for f in 0..FILES_PER_LAYER {
            layer = layer.file(&format!("{dir}/{f}"), vec![b'x'; 4096], 0o644);
        }
        image = image.layer(layer);
    }
    Ok(image)
}

fn unpack_and_start(env: &Env, n: usize) -> Result<Row> {
    // Import everything first, without unpacking: only unpack + start is timed.
    let mut names = Vec::new();
    for i in 0..n {
        for snapshotter in SNAPSHOTTERS {
            let name = format!("docker.io/library/bench-{snapshotter}-{i}:10");
            let tar = env.root_dir().join(format!("bench-{snapshotter}-{i}.tar"));
            ten_layer_image(env, &name, &format!("{snapshotter}-{i}"))?.write_tar(&tar)?;
            let out = env.ctr(&[
                "images",
                "import",
                "--no-unpack",
                &tar.display().to_string(),
            ]);
            if !out.success() {
                bail!("importing {name}: {out}");
            }
            fs::remove_file(&tar).with_context(|| format!("removing {}", tar.display()))?;
            names.push((snapshotter, i, name));
        }
    }
    let mut samples = [Vec::new(), Vec::new()];
    for (snapshotter, i, name) in names {
        let id = format!("bench-{snapshotter}-{i}");
        let start = Instant::now();
        let out = env.ctr(&[
            "run",
            "--rm",
            "--runtime",
            FERRUM_RUNTIME,
            "--snapshotter",
            snapshotter,
            &name,
            &id,
            "true",
        ]);
        let ms = millis(start);
        if !out.success() {
            bail!("unpacking and running {name} on {snapshotter}: {out}");
        }
        samples[usize::from(snapshotter == "ferrum")].push(ms);
    }
    let [overlayfs, ferrum] = samples;
    Ok(Row {
        what: "unpack 10-layer image + run a container",
        overlayfs_ms: median(overlayfs),
        ferrum_ms: median(ferrum),
    })
}

/// Per-snapshotter state for the API latencies: a client and a parent.
struct Target {
    client: SnapshotClient,
    prepare: Vec<f64>,
    mounts: Vec<f64>,
    usage: Vec<f64>,
    commit: Vec<f64>,
}

fn api_latencies(env: &Env, n: usize) -> Result<Vec<Row>> {
    let mut targets = Vec::new();
    for snapshotter in SNAPSHOTTERS {
        let mut client = env.snapshots(snapshotter)?;
        let call = |what: &str| format!("{what} on {snapshotter}");
        client
            .prepare("bench-base-extract", "", labels! {})
            .context(call("Prepare"))?;
        client
            .commit("bench-base", "bench-base-extract", labels! {})
            .context(call("Commit"))?;
        let m = client
            .prepare("bench-usage", "", labels! {})
            .context(call("Prepare"))?;
        for f in 0..USAGE_FILES {
            fs::write(Path::new(&m[0].source).join(f.to_string()), [b'u'; 100])?;
        }
        targets.push(Target {
            client,
            prepare: Vec::new(),
            mounts: Vec::new(),
            usage: Vec::new(),
            commit: Vec::new(),
        });
    }
    for i in 0..n {
        // Alternate which goes first, so drift affects both alike.
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for t in order {
            let target = &mut targets[t];
            let c = &mut target.client;
            let key = format!("bench-{i}");
            let start = Instant::now();
            c.prepare(&key, "bench-base", labels! {})?;
            target.prepare.push(millis(start));
            let start = Instant::now();
            c.mounts(&key)?;
            target.mounts.push(millis(start));
            let start = Instant::now();
            c.usage("bench-usage")?;
            target.usage.push(millis(start));
            let start = Instant::now();
            c.commit(&format!("bench-c{i}"), &key, labels! {})?;
            target.commit.push(millis(start));
            c.remove(&format!("bench-c{i}"))?;
        }
    }
    let [overlayfs, ferrum] = <[Target; 2]>::try_from(targets)
        .map_err(|_| anyhow::anyhow!("one target per snapshotter"))?;
    let row = |what, pick: fn(&Target) -> &Vec<f64>| Row {
        what,
        overlayfs_ms: median(pick(&overlayfs).clone()),
        ferrum_ms: median(pick(&ferrum).clone()),
    };
    Ok(vec![
        row("Prepare (on a committed parent)", |t| &t.prepare),
        row("Mounts", |t| &t.mounts),
        row("Usage (active, 200 files)", |t| &t.usage),
        row("Commit", |t| &t.commit),
    ])
}
