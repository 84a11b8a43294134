//! ferrum-snapshotter's gRPC socket fuzzed while it runs as the harness starts
//! it: every call with keys and parents that are hostile (`..`, `/`, NUL,
//! megabytes, odd Unicode), missing, uncommitted or taken, label maps over the
//! limit or by the thousand, update paths and List filters of any text; and
//! raw bytes on the socket (garbage, a cut HTTP/2 preface, the preface then
//! garbage frames). Each call answers within a deadline with success or a
//! gRPC status whose message names its key, parent, label or filter; after
//! every batch the same daemon serves a new connection, and its root holds one
//! directory per snapshot and nothing else.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use ferrum_fuzz::snapshot::{key, labels, parent, update_paths};
use ferrum_fuzz::{mutate_bytes, quoted_start, short, string, Rng, Run};
use ferrum_tests::snapshots::{CallError, SnapshotClient};
use ferrum_tests::Env;
use tonic::Code;

const CALL_DEADLINE: Duration = Duration::from_secs(20);
const BATCH: usize = 50;
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn client(env: &Env) -> SnapshotClient {
    let socket = env.root_dir().join("snapshotter.sock");
    SnapshotClient::connect_with_timeout(&socket, CALL_DEADLINE).expect("connect to ferrum-snapshotter")
}

/// A filter: from the grammar with hostile values, or damaged, or any text.
fn filter(rng: &mut Rng) -> String {
    let field = *rng.pick(&["kind", "name", "parent", "labels.a", "labels.\"containerd.io/snapshot.ref\"", "size"]);
    let mut text = match rng.below(3) {
        0 => field.to_string(),
        1 => format!("{field}{}{}", rng.pick(&["==", "!=", "~=", "="]), string(rng)),
        _ => string(rng),
    };
    if rng.chance(30) {
        let mut bytes = text.into_bytes();
        mutate_bytes(rng, &mut bytes);
        text = String::from_utf8_lossy(&bytes).into_owned();
    }
    text
}

/// One call with hostile input; a refusal must name one of `names`.
fn call(c: &mut SnapshotClient, rng: &mut Rng) -> (String, Result<(), CallError>, Vec<String>) {
    let (k, p) = (key(rng), parent(rng));
    let huge = || "k".repeat(3 << 20);
    let k = if rng.chance(1) { huge() } else { k };
    let labels: ferrum_tests::snapshots::Labels = labels(rng).into_iter().collect();
    let quoted = |s: &str| vec![quoted_start(s)];
    match rng.below(11) {
        0 | 1 => ("Prepare".into(), c.prepare(&k, &p, labels).map(drop), [quoted(&k), quoted(&p)].concat()),
        2 => ("View".into(), c.view(&k, &p, labels).map(drop), [quoted(&k), quoted(&p)].concat()),
        3 | 4 => ("Commit".into(), c.commit(&p, &k, labels).map(drop), [quoted(&k), quoted(&p)].concat()),
        5 => ("Remove".into(), c.remove(&k), quoted(&k)),
        6 => {
            let paths = update_paths(rng);
            let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
            let names = [quoted(&k), paths.iter().map(|p| quoted_start(p)).collect()].concat();
            ("Update".into(), c.update(&k, labels, &refs).map(drop), names)
        }
        7 => ("Mounts".into(), c.mounts(&k).map(drop), quoted(&k)),
        8 => ("Usage".into(), c.usage(&k).map(drop), quoted(&k)),
        9 => {
            let filters: Vec<String> = (0..1 + rng.below(2)).map(|_| filter(rng)).collect();
            let refs: Vec<&str> = filters.iter().map(String::as_str).collect();
            let names = filters.iter().map(|f| quoted_start(f)).collect();
            ("List".into(), c.list(&refs).map(drop), names)
        }
        _ => ("Stat".into(), c.stat(&k).map(drop), quoted(&k)),
    }
}

/// Raw bytes on a connection of its own; the daemon may close it at once.
fn garbage(socket: &Path, rng: &mut Rng) {
    let mut conn = UnixStream::connect(socket).expect("the snapshotter accepts connections");
    conn.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let bytes = match rng.below(3) {
        0 => rng.some_bytes(4096),
        1 => PREFACE[..rng.below(PREFACE.len())].to_vec(),
        _ => {
            let mut b = PREFACE.to_vec();
            b.extend(rng.some_bytes(1024));
            b
        }
    };
    let _ = conn.write_all(&bytes);
}

/// One directory per snapshot, none half made or half removed.
fn assert_consistent(env: &Env, c: &mut SnapshotClient, after: &str) {
    let snapshots = c.list(&[]).unwrap_or_else(|e| panic!("List after {after}: {e}"));
    let dirs: BTreeSet<String> = std::fs::read_dir(env.snapshotter_root().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(dirs.iter().all(|d| d.parse::<u64>().is_ok()), "stray directories after {after}: {dirs:?}");
    assert_eq!(dirs.len(), snapshots.len(), "{} snapshots but directories {dirs:?} after {after}", snapshots.len());
    let names: BTreeSet<&str> = snapshots.iter().map(|s| s.name.as_str()).collect();
    for s in &snapshots {
        assert!(s.parent.is_empty() || names.contains(s.parent.as_str()), "{:?} lost its parent after {after}", s.name);
    }
}

#[test]
fn fuzz_the_snapshotters_grpc_socket() {
    let env = Env::start().expect("starting containerd with ferrum-snapshotter");
    let socket = env.root_dir().join("snapshotter.sock");
    let mut c = client(&env);
    let run = Run::new("snapshotter gRPC socket", 1500);
    let (mut ok, mut refused) = (0, 0);
    run.each(|n, rng| {
        if rng.chance(5) {
            garbage(&socket, rng);
        } else {
            let (method, result, names) = call(&mut c, rng);
            match result {
                Ok(()) => ok += 1,
                Err(e) => {
                    refused += 1;
                    let case = format!("{method} naming {}", short(&names.join(" ")));
                    assert!(
                        !matches!(e.code, Code::Internal | Code::Unknown | Code::Cancelled | Code::Unavailable),
                        "{case}: {e}"
                    );
                    let named = names.iter().any(|n| e.message.contains(n.as_str()))
                        || e.message.contains("must not be empty")
                        || e.message.contains("containerd's limit of 4096");
                    assert!(named, "{case}: the error names none of them: {}", short(&e.message));
                }
            }
        }
        if n % BATCH == BATCH - 1 {
            // A new connection: the daemon still accepts and serves.
            c = client(&env);
            assert_consistent(&env, &mut c, &format!("case {n}"));
        }
    });
    c.cleanup().expect("Cleanup");
    assert_consistent(&env, &mut c, "the whole run");
    run.report(&format!("{ok} calls succeeded, {refused} refused"));
}
