//! The seeded input generator every ferrum fuzz suite shares: the unit-level
//! ones next to the code (config.json, runtime options, stdio URIs, filters,
//! snapshot metadata) and the live ones in `tests/` (a shim's ttrpc socket, a
//! snapshotter's gRPC socket).
//!
//! Why our own generator rather than proptest: half the suites drive a live
//! daemon whose state carries over from case to case, where shrinking replays
//! cases against a daemon that has moved on, and multiplies the run time
//! unpredictably. A case here is instead reproduced exactly from the seed and
//! its number (`FERRUM_FUZZ_SEED`, `FERRUM_FUZZ_ONLY`), the same vocabulary of
//! hostile values (NULs, `..`, huge numbers, long and odd Unicode strings,
//! wrong JSON types, deep nesting, bit flips) serves all five surfaces, and the
//! number of cases each suite runs is exact and printed, which keeps CI's time
//! predictable on two cores. Stable Rust, no extra dependencies.
//!
//! Environment:
//! - `FERRUM_FUZZ_SCALE` (default 1): multiplies every suite's CI case count;
//!   a long local run is e.g. `FERRUM_FUZZ_SCALE=50`.
//! - `FERRUM_FUZZ_SEED` (default a fixed seed, so that CI is reproducible): a
//!   number, or `random` for a seed from the clock (printed).
//! - `FERRUM_FUZZ_ONLY`: run only the case of that number (to replay a failure).

pub mod snapshot;
pub mod spec;

use serde_json::{json, Map, Value};
use std::io::Write;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What CI runs with when FERRUM_FUZZ_SEED is not set.
const DEFAULT_SEED: u64 = 0x6665_7272_756d; // "ferrum"

/// splitmix64: small, fast, and good enough to pick inputs.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u32) -> bool {
        self.below(100) < percent as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }

    /// `len(max)` random bytes.
    pub fn some_bytes(&mut self, max: usize) -> Vec<u8> {
        let len = self.len(max);
        self.bytes(len)
    }

    /// A length that is usually small and now and then large.
    pub fn len(&mut self, max: usize) -> usize {
        match self.below(10) {
            0..=6 => self.below(16.min(max + 1)),
            7 | 8 => self.below(256.min(max + 1)),
            _ => self.below(max + 1),
        }
    }
}

/// One suite's run: how many cases, from which seed; prints what it did.
pub struct Run {
    surface: String,
    cases: usize,
    seed: u64,
    only: Option<usize>,
    started: Instant,
}

impl Run {
    /// `ci_cases` is what CI runs; FERRUM_FUZZ_SCALE multiplies it.
    pub fn new(surface: &str, ci_cases: usize) -> Run {
        let scale: f64 = env_parse("FERRUM_FUZZ_SCALE").unwrap_or(1.0);
        let seed = match std::env::var("FERRUM_FUZZ_SEED").as_deref() {
            Ok("random") => SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64,
            Ok(n) => n.parse().unwrap_or_else(|_| panic!("FERRUM_FUZZ_SEED {n:?} is not a number or `random`")),
            Err(_) => DEFAULT_SEED,
        };
        Run {
            surface: surface.into(),
            cases: ((ci_cases as f64 * scale).round() as usize).max(1),
            seed,
            only: env_parse("FERRUM_FUZZ_ONLY"),
            started: Instant::now(),
        }
    }

    pub fn cases(&self) -> usize {
        self.cases
    }

    /// The generator of case `n`: every case can be replayed on its own.
    pub fn rng(&self, n: usize) -> Rng {
        let mut surface = Rng::new(self.surface.bytes().fold(self.seed, |h, b| h.rotate_left(8) ^ b as u64));
        Rng::new(surface.next_u64() ^ (n as u64).wrapping_mul(0x2545_f491_4f6c_dd1d))
    }

    /// Runs every case (or only FERRUM_FUZZ_ONLY's); a failing case is named
    /// with what replays it before its panic goes on.
    pub fn each(&self, mut case: impl FnMut(usize, &mut Rng)) {
        for n in 0..self.cases {
            if self.only.is_some_and(|only| only != n) {
                continue;
            }
            let mut rng = self.rng(n);
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| case(n, &mut rng))) {
                say(&format!(
                    "fuzz {}: case {n} failed; replay it with FERRUM_FUZZ_SEED={} FERRUM_FUZZ_ONLY={n}",
                    self.surface, self.seed
                ));
                resume_unwind(panic);
            }
        }
    }

    /// Prints the count (past the test harness's capture, so CI shows it).
    pub fn report(&self, detail: &str) {
        let ran = if self.only.is_some() { 1 } else { self.cases };
        let detail = if detail.is_empty() { String::new() } else { format!(", {detail}") };
        say(&format!(
            "fuzz {}: {ran} cases in {:.1} s (seed {}{detail})",
            self.surface,
            self.started.elapsed().as_secs_f64(),
            self.seed
        ));
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

fn env_parse<T: std::str::FromStr>(name: &str) -> Option<T> {
    let text = std::env::var(name).ok()?;
    Some(text.parse().unwrap_or_else(|_| panic!("{name} {text:?} is not a number")))
}

/// Straight to fd 2: cargo test captures the print macros only.
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Strings that have broken parsers and path handling before.
const HOSTILE: &[&str] = &[
    "",
    " ",
    "\0",
    "a\0b",
    ".",
    "..",
    "../..",
    "../../../../etc/passwd",
    "/",
    "//",
    "/..",
    "/proc/self/attr/exec",
    "a/../../b",
    "\n",
    "\r\n",
    "\t",
    "%",
    "%00",
    "%zz",
    "%2F",
    "?",
    "&",
    "=",
    "==",
    ":",
    "::",
    ",",
    "\"",
    "\\",
    "\\x",
    "\\u00",
    "`",
    "'",
    "*",
    "-1",
    "0x",
    "1e999",
    "NaN",
    "\u{202e}",
    "\u{feff}",
    "\u{fffd}",
    "é",
    "e\u{301}",
    "😀",
    "\u{10ffff}",
    "日本",
    "unix://",
    "file://",
    "binary://",
    "fifo://",
    "labels.",
    "system.slice",
    "-.slice",
];

/// A string meant to hurt: a known-bad one, random ASCII, random Unicode,
/// a mix, or a long one.
pub fn string(rng: &mut Rng) -> String {
    match rng.below(10) {
        0..=3 => rng.pick(HOSTILE).to_string(),
        4 => (0..rng.len(64)).map(|_| (0x20 + rng.below(0x5f)) as u8 as char).collect(),
        5 => (0..rng.len(32)).filter_map(|_| char::from_u32(rng.below(0x11_0000) as u32)).collect(),
        6 => (0..rng.len(4)).map(|_| *rng.pick(HOSTILE)).collect(),
        7 => {
            let unit = rng.pick(&["a", "/", "..", "\0", "é", "/a"]).to_string();
            unit.repeat(*rng.pick(&[255, 256, 4095, 4096, 4097, 65536]))
        }
        _ => (0..rng.len(8)).map(|_| (b'a' + rng.below(26) as u8) as char).collect(),
    }
}

/// A JSON number at the edges: of i32, u32, i64, u64, f64, and zero.
pub fn number(rng: &mut Rng) -> Value {
    match rng.below(16) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(1),
        3 => json!(u32::MAX),
        4 => json!(u32::MAX as u64 + 1),
        5 => json!(i32::MIN),
        6 => json!(i32::MAX as u64 + 1),
        7 => json!(u64::MAX),
        8 => json!(i64::MIN),
        9 => json!(i64::MAX),
        10 => json!(1.5),
        11 => json!(-0.0),
        12 => json!(1e308),
        13 => json!(u16::MAX as u32 + 1),
        14 => json!(rng.next_u64() as i64),
        _ => json!(rng.below(1 << 16)),
    }
}

/// Any JSON value, nested at most `depth` deep.
pub fn value(rng: &mut Rng, depth: usize) -> Value {
    let top = if depth == 0 { 5 } else { 7 };
    match rng.below(top) {
        0 => Value::Null,
        1 => json!(rng.chance(50)),
        2 | 3 => number(rng),
        4 => json!(string(rng)),
        5 => Value::Array((0..rng.len(4)).map(|_| value(rng, depth - 1)).collect()),
        _ => Value::Object((0..rng.len(4)).map(|_| (string(rng), value(rng, depth - 1))).collect()),
    }
}

/// `[[[…]]]` or `{"a":{"a":…}}` `depth` deep: more than a recursive parser's stack.
pub fn deep(rng: &mut Rng, depth: usize) -> Value {
    let mut v = value(rng, 0);
    let in_array = rng.chance(50);
    for _ in 0..depth {
        v = if in_array { Value::Array(vec![v]) } else { Value::Object(Map::from_iter([("a".to_string(), v)])) };
    }
    v
}

/// Where a mutation landed: the field path as serde_path_to_error prints it
/// (`linux.namespaces[2].type`), and the named fields along it.
#[derive(Debug, Clone, Default)]
pub struct Mutation {
    pub path: String,
    pub fields: Vec<String>,
    pub what: String,
}

/// Change one node of `root`: a value of its type at an edge, a key removed
/// or added, an element removed, changed or repeated; or a value of another
/// type, deep nesting included.
pub fn mutate_json(rng: &mut Rng, root: &mut Value) -> Mutation {
    // Every node is as likely as any other: a walk from the root would
    // mostly stop near it and seldom reach a field four levels down.
    let mut nodes = Vec::new();
    collect(root, String::new(), Mutation::default(), &mut nodes);
    let (pointer, mut m) = nodes.swap_remove(rng.below(nodes.len()));
    let node = root.pointer_mut(&pointer).expect("a pointer just collected");
    // Mostly a value of the node's own type (so that the spec still loads and
    // the change reaches the field's own checks), else of any type.
    if rng.chance(60) && mutate_in_kind(rng, node, &mut m) {
        return m;
    }
    // Else a value of any type: structure (keys, elements) is changed above.
    let (what, new) = match rng.below(10) {
        0 => ("null", Value::Null),
        1 => ("a boolean", json!(rng.chance(50))),
        2 | 3 => ("an edge number", number(rng)),
        4 | 5 => ("a hostile string", json!(string(rng))),
        6 => {
            let depth = *rng.pick(&[16, 127, 128, 129, 300]);
            ("deep nesting", deep(rng, depth))
        }
        7 => ("a random value", value(rng, 3)),
        8 => ("an empty array", json!([])),
        _ => ("an empty object", json!({})),
    };
    m.what = format!("{what}: {}", short(&new.to_string()));
    *node = new;
    m
}

/// Every node of `value` with its JSON pointer and its path.
fn collect(value: &Value, pointer: String, at: Mutation, out: &mut Vec<(String, Mutation)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let mut m = at.clone();
                if !m.path.is_empty() {
                    m.path.push('.');
                }
                m.path.push_str(key);
                m.fields.push(key.clone());
                let escaped = key.replace('~', "~0").replace('/', "~1");
                collect(child, format!("{pointer}/{escaped}"), m, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let mut m = at.clone();
                m.path.push_str(&format!("[{i}]"));
                collect(child, format!("{pointer}/{i}"), m, out);
            }
        }
        _ => {}
    }
    out.push((pointer, at));
}

/// Changes `node` keeping its JSON type (not a null), noting it in `m`.
fn mutate_in_kind(rng: &mut Rng, node: &mut Value, m: &mut Mutation) -> bool {
    m.what = match node {
        Value::Null => return false,
        Value::Bool(b) => {
            *b = !*b;
            format!("{b}")
        }
        Value::Number(_) => {
            *node = number(rng);
            format!("the number {node}")
        }
        Value::String(s) => {
            *s = string(rng);
            format!("the string {}", short(&format!("{s:?}")))
        }
        Value::Array(items) => match rng.below(4) {
            0 => {
                items.clear();
                "emptied".into()
            }
            1 if !items.is_empty() => {
                items.remove(rng.below(items.len()));
                "an element removed".into()
            }
            2 if !items.is_empty() => {
                let mut copy = items[rng.below(items.len())].clone();
                let inner = mutate_json(rng, &mut copy);
                items.push(copy);
                m.path.push_str(&format!("[{}]", items.len() - 1));
                if !inner.path.is_empty() && !inner.path.starts_with('[') {
                    m.path.push('.');
                }
                m.path.push_str(&inner.path);
                m.fields.extend(inner.fields);
                format!("an element added: {}", inner.what)
            }
            _ => {
                let times = *rng.pick(&[2, 100, 1000]);
                let copy = items.first().cloned().unwrap_or(Value::Null);
                items.extend(std::iter::repeat_n(copy, times));
                format!("{times} elements added")
            }
        },
        Value::Object(map) => match rng.below(2) {
            0 if !map.is_empty() => {
                let key = map.keys().nth(rng.below(map.len())).cloned().expect("not empty");
                map.remove(&key);
                format!("removed key {key:?}")
            }
            _ => {
                let key = string(rng);
                map.insert(key.clone(), value(rng, 2));
                format!("added key {}", short(&format!("{key:?}")))
            }
        },
    };
    true
}

/// Tokens that make JSON, TOML and protobuf parsers take unusual paths.
const TOKENS: &[&[u8]] = &[
    b"{", b"}", b"[", b"]", b"\"", b"\\", b"\\u0000", b"\\ud800", b":", b",", b"=", b"\n", b"\0", b"1e99999",
    b"-0", b"null", b"true", b"[[[[[[[[", b"\"\"\"", b"'''", b"\xff\xfe", b"\xc3", b"\xf0\x9f\x98",
    b"\x08\x96\x01", b"\x12\xff\xff\xff\xff\x0f", b"\x0a\x80\x80\x80\x80\x10",
];

/// Byte-level damage: bit flips, inserted tokens or random bytes, cut or
/// repeated ranges, truncation.
pub fn mutate_bytes(rng: &mut Rng, data: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(data.len() + 1);
        match rng.below(7) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 => {
                let token = rng.pick(TOKENS);
                data.splice(at..at, token.iter().copied());
            }
            2 => {
                let junk = rng.some_bytes(32);
                data.splice(at..at, junk);
            }
            3 => {
                let end = (at + rng.len(64)).min(data.len());
                data.drain(at..end);
            }
            4 => {
                let end = (at + rng.len(64)).min(data.len());
                let copy = data[at..end].to_vec();
                data.splice(at..at, copy);
            }
            5 => data.truncate(at),
            _ if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = *rng.pick(&[0, 0xff, b'"', b'\\', b'{', b'}', b'\n', 0x80]);
            }
            _ => data.extend(rng.bytes(8)),
        }
    }
}

/// How an error quoting `name` starts: `{:?}` of its first 200 bytes, open
/// at the end (errors may cut a long name after that).
pub fn quoted_start(name: &str) -> String {
    let mut end = name.len().min(200);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let quoted = format!("{:?}", &name[..end]);
    quoted[..quoted.len() - 1].to_string()
}

/// At most 200 characters of `text`, for messages.
pub fn short(text: &str) -> String {
    let mut out: String = text.chars().take(200).collect();
    if out.len() < text.len() {
        out.push_str(&format!("… ({} bytes)", text.len()));
    }
    out
}

/// A directory of the test's own, removed on drop (also when a case panics).
pub struct Scratch(std::path::PathBuf);

impl Scratch {
    /// In /dev/shm where there is one: a case may write a few dozen files.
    pub fn new(tag: &str) -> Scratch {
        let shm = std::path::Path::new("/dev/shm");
        let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        let dir = base.join(format!("ferrum-fuzz-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Scratch(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_replay_from_seed_and_number() {
        let run = Run::new("self-test", 10);
        let a: Vec<u64> = (0..3).map(|n| run.rng(n).next_u64()).collect();
        let b: Vec<u64> = (0..3).map(|n| run.rng(n).next_u64()).collect();
        assert_eq!(a, b);
        assert_ne!(a[0], a[1]);
    }

    #[test]
    fn mutations_name_the_path_they_changed() {
        let mut rng = Rng::new(7);
        for _ in 0..2000 {
            let mut v = json!({"process": {"args": ["sh"], "user": {"uid": 0}}, "linux": {"namespaces": [{"type": "pid"}]}});
            let m = mutate_json(&mut rng, &mut v);
            assert!(!m.what.is_empty());
            let mut bytes = serde_json::to_vec(&v).unwrap();
            mutate_bytes(&mut rng, &mut bytes);
        }
    }
}
