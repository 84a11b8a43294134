//! Snapshot operations fuzzed in-process, in sequences: keys and parents from
//! a small pool (so they meet) and hostile ones (`..`, `/`, NUL, huge,
//! Unicode), parents that do not exist or are not committed, labels over the
//! limit or by the thousand, update paths of every shape. Each call succeeds or
//! fails with an error that names its key, parent or label; afterwards the
//! root holds exactly one directory per snapshot, every parent is a committed
//! snapshot, and reopening the root shows the same snapshots.

use super::*;
use crate::store::Error as StoreError;
use ferrum_fuzz::snapshot::{self, key, parent};
use ferrum_fuzz::{quoted_start, short, Rng, Run};
use std::collections::{BTreeMap, BTreeSet};

fn labels(rng: &mut Rng) -> Labels {
    snapshot::labels(rng).into_iter().collect()
}

/// What the error of a call about `names` must mention: one of them, quoted.
#[track_caller]
fn names_one(err: &Error, names: &[&str], case: &str) {
    let message = err.to_string();
    let named = names.iter().any(|n| message.contains(&quoted_start(n)));
    let label = matches!(err, Error::Store(StoreError::LabelTooLarge { .. }));
    let empty = matches!(err, Error::Store(StoreError::EmptyKey)) && names.contains(&"");
    assert!(named || label || empty, "the error names none of {names:?}: {message}\n  case: {}", short(case));
    assert!(
        !matches!(err, Error::Store(StoreError::Corrupt { .. } | StoreError::Db(_)) | Error::Layout(_)),
        "an internal error from a request: {message}\n  case: {}",
        short(case)
    );
}

/// The snapshots as List shows them, by name.
fn listed(s: &Snapshotter) -> BTreeMap<String, Info> {
    let all = Filter::parse(&[]).unwrap();
    s.list(&all).unwrap().into_iter().map(|i| (i.name.clone(), i)).collect()
}

/// One directory per snapshot and nothing else; parents are committed.
fn check_root(s: &Snapshotter, root: &Path) {
    let ids = s.store.write().unwrap().ids().unwrap();
    let dirs: BTreeSet<String> = std::fs::read_dir(root.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let want: BTreeSet<String> = ids.iter().map(u64::to_string).collect();
    assert_eq!(dirs, want, "snapshot directories and metadata disagree");
    let all = listed(s);
    for info in all.values() {
        if !info.parent.is_empty() {
            let parent = all.get(&info.parent).unwrap_or_else(|| panic!("{:?} has a missing parent {:?}", info.name, info.parent));
            assert_eq!(parent.kind, Kind::Committed, "{:?} has an uncommitted parent", info.name);
        }
    }
}

#[test]
fn snapshot_operations_fuzz() {
    let run = Run::new("snapshot operations (in-process)", 60);
    let (mut ok, mut refused) = (0, 0);
    run.each(|_, rng| {
        // In /dev/shm where there is one: the store syncs every transaction.
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap();
        let s = Snapshotter::open(dir.path(), vec!["index=off".into()]).unwrap();
        for _ in 0..40 {
            let (k, p) = (key(rng), parent(rng));
            let case = format!("{k:?} {p:?}");
            let result: Result<(), (Error, Vec<&str>)> = match rng.below(10) {
                0 | 1 => s.prepare(&k, &p, labels(rng)).map(drop).map_err(|e| (e, vec![k.as_str(), p.as_str()])),
                2 => s.view(&k, &p, labels(rng)).map(drop).map_err(|e| (e, vec![k.as_str(), p.as_str()])),
                3 | 4 => s.commit(&p, &k, labels(rng)).map_err(|e| (e, vec![k.as_str(), p.as_str()])),
                5 => s.remove(&k).map_err(|e| (e, vec![k.as_str()])),
                6 => {
                    let paths = snapshot::update_paths(rng);
                    let got = s.update(&k, &labels(rng), &paths);
                    if let Err(Error::Store(StoreError::Immutable { path, .. })) = &got {
                        assert!(paths.contains(path), "{path:?} was not asked for");
                    }
                    got.map(drop).map_err(|e| (e, vec![k.as_str()]))
                }
                7 => s.mounts(&k).map(drop).map_err(|e| (e, vec![k.as_str()])),
                8 => s.usage(&k).map(drop).map_err(|e| (e, vec![k.as_str()])),
                _ => s.stat(&k).map(drop).map_err(|e| (e, vec![k.as_str()])),
            };
            match result {
                Ok(()) => ok += 1,
                Err((e, names)) => {
                    refused += 1;
                    // An update refuses its path; Immutable names the key too.
                    names_one(&e, &names, &case);
                }
            }
        }
        check_root(&s, dir.path());
        let before = listed(&s);
        drop(s);
        let reopened = Snapshotter::open(dir.path(), vec!["index=off".into()]).unwrap();
        assert_eq!(listed(&reopened), before, "reopening changed the snapshots");
        check_root(&reopened, dir.path());
    });
    run.report(&format!("{} sequences of 40 calls: {ok} succeeded, {refused} refused", run.cases()));
}
