//! Snapshot keys, labels and update paths, for the snapshotter's in-process
//! fuzz and the one against a live daemon: the same inputs both ways.

use crate::{string, Rng};

/// Keys that meet often, so that parents exist, are committed or are taken.
const POOL: &[&str] = &["a", "b", "c", "layer-1", "sha256:abc", "default/1/x"];

/// containerd's unpacker label; a snapshotter indexes it.
const REF_LABEL: &str = "containerd.io/snapshot.ref";

/// A key or parent: from the pool, or hostile.
pub fn key(rng: &mut Rng) -> String {
    if rng.chance(70) {
        rng.pick(POOL).to_string()
    } else {
        string(rng)
    }
}

/// A parent: none (a base layer) as often as not, else a key.
pub fn parent(rng: &mut Rng) -> String {
    if rng.chance(50) {
        String::new()
    } else {
        key(rng)
    }
}

/// Labels: a few hostile ones, one over containerd's 4096-byte limit or at
/// it, a snapshot.ref, or thousands.
pub fn labels(rng: &mut Rng) -> Vec<(String, String)> {
    match rng.below(10) {
        0 => (0..*rng.pick(&[100, 3000])).map(|i| (format!("k{i}"), "v".repeat(rng.below(64)))).collect(),
        1 => vec![(string(rng), "x".repeat(*rng.pick(&[4000, 4096, 5000])))],
        2 => vec![(REF_LABEL.to_string(), key(rng))],
        _ => (0..rng.len(3)).map(|_| (string(rng), string(rng))).collect(),
    }
}

/// An Update's field paths: `labels`, `labels.<key>`, or anything.
pub fn update_paths(rng: &mut Rng) -> Vec<String> {
    (0..rng.len(3))
        .map(|_| match rng.below(3) {
            0 => "labels".into(),
            1 => format!("labels.{}", string(rng)),
            _ => string(rng),
        })
        .collect()
}
