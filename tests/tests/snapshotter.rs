//! ferrum-snapshotter against containerd's built-in overlayfs snapshotter: the
//! same sequence of snapshot operations through containerd's Snapshots API, for
//! both, must give the same answers and the same mounted trees.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{chown, symlink, PermissionsExt};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use ferrum_protos::snapshots::v1 as api;
use ferrum_protos::types::Mount;
use ferrum_tests::labels;
use ferrum_tests::snapshots::{
    lower_dirs, overlay_dir, read_tree, tree_diff, CallResult, Mounted, SnapshotClient, Tree,
};
use ferrum_tests::Env;
use nix::sys::stat::{mknod, Mode, SFlag};
use nix::unistd::mkfifo;

/// What one run of the scenario saw, step by step, with every path that
/// depends on the snapshotter's root taken out.
#[derive(Default)]
struct Outcome {
    steps: Vec<(String, String)>,
    trees: Vec<(String, Tree)>,
}

impl Outcome {
    fn step(&mut self, what: &str, seen: impl std::fmt::Display) {
        self.steps.push((what.to_owned(), seen.to_string()));
    }

    fn result<T>(&mut self, what: &str, r: &CallResult<T>, describe: impl FnOnce(&T) -> String) {
        let seen = match r {
            Ok(v) => format!("ok {}", describe(v)),
            Err(e) => format!("error {:?}", e.code),
        };
        self.step(what, seen);
    }

    fn tree(&mut self, what: &str, dir: &Path) {
        self.trees.push((
            what.to_owned(),
            read_tree(dir).unwrap_or_else(|e| panic!("{what}: {e:#}")),
        ));
    }
}

/// A mount with its directories replaced by placeholders and its options
/// sorted (containerd 2.x puts `index=off` last, 1.x first; the kernel does
/// not care): `bind [rbind,ro]`, `overlay [index=off,lowerdir=…×2,…]`.
fn shape(mounts: &[Mount]) -> String {
    let shapes: Vec<String> = mounts
        .iter()
        .map(|m| {
            let mut options: Vec<String> = m
                .options
                .iter()
                .map(|o| match o.split_once('=') {
                    Some(("lowerdir", dirs)) => format!("lowerdir=…×{}", dirs.split(':').count()),
                    Some((name, _)) if name.ends_with("dir") => format!("{name}=…"),
                    _ => o.clone(),
                })
                .collect();
            options.sort();
            format!("{} [{}]", m.r#type, options.join(","))
        })
        .collect();
    shapes.join("; ")
}

fn describe_info(info: &api::Info) -> String {
    let mut labels: Vec<_> = info.labels.iter().collect();
    labels.sort();
    format!(
        "{} kind={:?} parent={:?} labels={labels:?}",
        info.name,
        info.kind(),
        info.parent
    )
}

fn names(infos: &[api::Info]) -> String {
    let mut names: Vec<&str> = infos.iter().map(|i| i.name.as_str()).collect();
    names.sort();
    names.join(",")
}

fn write(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let p = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: both strings are NUL-terminated; the value is valid for its length.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {name} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// The base layer: modes, owners, the root dir's own mode and owner, special
/// files, hard links, an xattr.
fn fill_base(root: &Path) {
    set_mode(root, 0o750);
    chown(root, Some(1), Some(1)).unwrap();
    fs::create_dir(root.join("etc")).unwrap();
    write(&root.join("etc/passwd"), "root:x:0:0\n", 0o644);
    write(&root.join("etc/shadow"), "root:*:1\n", 0o640);
    chown(root.join("etc/shadow"), Some(0), Some(42)).unwrap();
    fs::create_dir_all(root.join("data/sub")).unwrap();
    set_mode(&root.join("data"), 0o700);
    chown(root.join("data"), Some(1000), Some(1000)).unwrap();
    write(&root.join("data/gone"), "gone", 0o644);
    write(&root.join("data/kept"), "kept", 0o600);
    write(&root.join("data/sub/deep"), "deep", 0o644);
    fs::create_dir(root.join("opq")).unwrap();
    write(&root.join("opq/old1"), "1", 0o644);
    write(&root.join("opq/old2"), "2", 0o644);
    fs::create_dir(root.join("mv-src")).unwrap();
    write(&root.join("mv-src/f"), "moved", 0o644);
    symlink("etc/passwd", root.join("link")).unwrap();
    write(&root.join("hard1"), "linked", 0o644);
    fs::hard_link(root.join("hard1"), root.join("hard2")).unwrap();
    mkfifo(&root.join("pipe"), Mode::from_bits_truncate(0o600)).unwrap();
    mknod(
        &root.join("null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    write(&root.join("suid"), "#!/bin/sh\n", 0o4755);
    write(&root.join("chowned"), "c", 0o644);
    set_xattr(&root.join("etc/passwd"), "user.origin", b"base");
}

/// The second layer, on an overlay of the base: deletes, an opaque dir, moves,
/// chown/chmod of lower files and dirs, a new hard link to a lower file.
fn change_in_layer_two(root: &Path, out: &mut Outcome) {
    fs::remove_file(root.join("data/gone")).unwrap();
    fs::remove_dir_all(root.join("opq")).unwrap();
    fs::create_dir(root.join("opq")).unwrap();
    write(&root.join("opq/new"), "new", 0o644);
    // A lower dir cannot be renamed without redirect_dir: what happens is part of the parity.
    let renamed = fs::rename(root.join("mv-src"), root.join("mv-dst"));
    out.step(
        "rename lower dir",
        format!("{:?}", renamed.as_ref().map_err(|e| e.raw_os_error())),
    );
    if renamed.is_err() {
        fs::create_dir(root.join("mv-dst")).unwrap();
        fs::rename(root.join("mv-src/f"), root.join("mv-dst/f")).unwrap();
        fs::remove_dir(root.join("mv-src")).unwrap();
    }
    fs::rename(root.join("etc/passwd"), root.join("etc/passwd.old")).unwrap();
    chown(root.join("chowned"), Some(123), Some(456)).unwrap();
    set_mode(&root.join("chowned"), 0o600);
    set_mode(&root.join("data"), 0o711);
    chown(root.join("data/sub"), Some(7), Some(8)).unwrap();
    fs::remove_file(root.join("link")).unwrap();
    fs::create_dir(root.join("link")).unwrap();
    fs::hard_link(root.join("hard1"), root.join("hard3")).unwrap();
    write(&root.join("etc/new"), "new", 0o600);
}

/// Runs the whole sequence against one snapshotter through containerd.
fn scenario(env: &Env, snapshotter: &str) -> Outcome {
    let mut c = env
        .snapshots(snapshotter)
        .expect("connecting to containerd");
    let mut out = Outcome::default();
    let mnt = |name: &str| env.root_dir().join(format!("mnt-{snapshotter}-{name}"));

    let r = c.prepare("base-extract", "", labels! {"l1" => "a"});
    out.result("prepare base-extract", &r, |m| shape(m));
    {
        let m = Mounted::new(&r.unwrap(), &mnt("base")).unwrap();
        fill_base(m.path());
    }
    let r = c.commit(
        "base",
        "base-extract",
        labels! {"c" => "1", "containerd.io/gc.root" => "x"},
    );
    out.result("commit base", &r, |_| String::new());
    let r = c.stat("base-extract");
    out.result("stat committed key", &r, describe_info);

    let r = c.prepare("l2-extract", "base", labels! {});
    out.result("prepare l2-extract", &r, |m| shape(m));
    {
        let m = Mounted::new(&r.unwrap(), &mnt("l2")).unwrap();
        change_in_layer_two(m.path(), &mut out);
    }
    let r = c.commit("l2", "l2-extract", labels! {"c" => "2"});
    out.result("commit l2", &r, |_| String::new());

    for key in ["base", "l2"] {
        let r = c.stat(key);
        out.result(&format!("stat {key}"), &r, describe_info);
    }

    let r = c.view("v-base", "base", labels! {});
    out.result("view of base", &r, |m| shape(m));
    {
        let m = Mounted::new(&r.unwrap(), &mnt("v-base")).unwrap();
        out.tree("view of base", m.path());
        let w = fs::write(m.path().join("x"), "x");
        out.step(
            "write into view of base",
            format!("{:?}", w.map_err(|e| e.raw_os_error())),
        );
    }
    let r = c.view("v-l2", "l2", labels! {"v" => "1"});
    out.result("view of l2", &r, |m| shape(m));
    {
        let m = Mounted::new(&r.unwrap(), &mnt("v-l2")).unwrap();
        out.tree("view of l2", m.path());
        let w = fs::write(m.path().join("x"), "x");
        out.step(
            "write into view of l2",
            format!("{:?}", w.map_err(|e| e.raw_os_error())),
        );
    }
    let r = c.prepare("ctr", "l2", labels! {});
    out.result("prepare ctr", &r, |m| shape(m));
    let ctr_mounts = r.unwrap();
    // The committed layers as stored: whiteouts, opaque markers, copied-up files.
    let lowers = lower_dirs(&ctr_mounts[0]);
    out.step("ctr lowerdirs", lowers.len());
    out.tree("layer l2 as stored", &lowers[0]);
    out.tree("layer base as stored", &lowers[1]);
    {
        let m = Mounted::new(&ctr_mounts, &mnt("ctr")).unwrap();
        out.tree("ctr on l2", m.path());
        fs::write(m.path().join("written"), vec![b'w'; 10_000]).unwrap();
    }
    let r = c.mounts("ctr");
    out.result("mounts ctr", &r, |m| {
        format!("{} same={}", shape(m), *m == ctr_mounts)
    });

    for key in ["base", "l2", "ctr", "v-l2"] {
        let r = c.usage(key);
        out.result(&format!("usage {key}"), &r, |(size, inodes)| {
            format!("size={size} inodes={inodes}")
        });
    }
    // Big enough that ferrum-snapshotter's walk outlasts the part it runs on
    // the serving thread and goes on in the blocking pool.
    let big = c.prepare("big", "", labels! {}).unwrap();
    for d in 0..20 {
        let dir = Path::new(&big[0].source).join(d.to_string());
        fs::create_dir(&dir).unwrap();
        for f in 0..150 {
            fs::write(dir.join(f.to_string()), [b'b'; 100]).unwrap();
        }
    }
    let r = c.usage("big");
    out.result("usage big", &r, |(size, inodes)| format!("size={size} inodes={inodes}"));
    let r = c.remove("big");
    out.result("remove big", &r, |_| "ok".into());

    for filters in [
        &[][..],
        &["kind==committed"],
        &["kind==view"],
        &["parent==base"],
        &["labels.c==1"],
        &["labels.\"l1\"==a"],
        &["name==l2"],
        &["kind==active,parent==l2"],
        &["kind==view", "name==base"],
        &["labels.c!=1"],
        &["labels.v"],
    ] {
        let r = c.list(filters);
        out.result(&format!("list {filters:?}"), &r, |infos| names(infos));
    }

    let r = c.update(
        "l2",
        labels! {"new" => "n", "c" => "ignored"},
        &["labels.new"],
    );
    out.result("update labels.new", &r, describe_info);
    let r = c.update("l2", labels! {}, &["labels.new"]);
    out.result("update removes labels.new", &r, describe_info);
    let r = c.update("v-l2", labels! {"only" => "this"}, &[]);
    out.result("update replaces labels", &r, describe_info);
    let r = c.update("l2", labels! {}, &["parent"]);
    out.result("update parent", &r, describe_info);
    let r = c.update("missing", labels! {"a" => "b"}, &[]);
    out.result("update missing", &r, describe_info);

    // Bad input: each a clear error, and nothing changes.
    let r = c.prepare("ctr", "l2", labels! {});
    out.result("prepare existing key", &r, |m| shape(m));
    let r = c.prepare("k-missing", "no-such-parent", labels! {});
    out.result("prepare on missing parent", &r, |m| shape(m));
    let r = c.view("v-active", "ctr", labels! {});
    out.result("view of an active snapshot", &r, |m| shape(m));
    let r = c.prepare("p-active", "ctr", labels! {});
    out.result("prepare on an active snapshot", &r, |m| shape(m));
    let r = c.prepare("", "l2", labels! {});
    out.result("prepare with empty key", &r, |m| shape(m));
    let r = c.commit("l3", "v-l2", labels! {});
    out.result("commit a view", &r, |_| String::new());
    let r = c.commit("base", "ctr", labels! {});
    out.result("commit onto an existing name", &r, |_| String::new());
    let r = c.commit("l3", "missing", labels! {});
    out.result("commit missing key", &r, |_| String::new());
    let r = c.mounts("l2");
    out.result("mounts of committed", &r, |m| shape(m));
    let r = c.mounts("missing");
    out.result("mounts of missing", &r, |m| shape(m));
    let r = c.remove("base");
    out.result("remove a parent", &r, |_| String::new());
    let r = c.remove("missing");
    out.result("remove missing", &r, |_| String::new());
    let r = c.stat("missing");
    out.result("stat missing", &r, describe_info);
    let r = c.usage("missing");
    out.result("usage missing", &r, |u| format!("{u:?}"));
    for bad in ["labels.\"unterminated==x", "kind==", "==x", "labels.a~=["] {
        let r = c.list(&[bad]);
        out.result(&format!("list malformed {bad:?}"), &r, |infos| names(infos));
    }
    let long = "v".repeat(4096);
    let r = c.prepare("big-label", "l2", labels! {"k" => long.as_str()});
    out.result("prepare with a label over 4096 bytes", &r, |m| shape(m));
    let at_limit = "v".repeat(4095);
    let r = c.prepare("limit-label", "l2", labels! {"k" => at_limit.as_str()});
    out.result("prepare with a label of 4096 bytes", &r, |m| shape(m));
    let r = c.update("l2", labels! {"k" => long.as_str()}, &["labels.k"]);
    out.result("update with a label over 4096 bytes", &r, describe_info);
    let r = c.commit("big", "limit-label", labels! {"k" => long.as_str()});
    out.result("commit with a label over 4096 bytes", &r, |_| String::new());
    let r = c.list(&[]);
    out.result("list after bad input", &r, |infos| names(infos));

    for key in ["limit-label", "ctr", "v-l2", "v-base", "l2", "base"] {
        let r = c.remove(key);
        out.result(&format!("remove {key}"), &r, |_| String::new());
    }
    let r = c.list(&[]);
    out.result("list at the end", &r, |infos| names(infos));
    out
}

#[test]
fn same_answers_and_trees_as_containerds_overlayfs() {
    let env = Env::start().expect("starting containerd with ferrum");
    let theirs = scenario(&env, "overlayfs");
    let ours = scenario(&env, "ferrum");

    let mut mismatches = Vec::new();
    for ((what, expected), (_, got)) in theirs.steps.iter().zip(&ours.steps) {
        if expected != got {
            mismatches.push(format!(
                "{what}:\n    overlayfs {expected}\n    ferrum    {got}"
            ));
        }
    }
    assert_eq!(theirs.steps.len(), ours.steps.len());
    for ((what, expected), (_, got)) in theirs.trees.iter().zip(&ours.trees) {
        for line in tree_diff(expected, got) {
            mismatches.push(format!("{what} (left overlayfs, right ferrum): {line}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "ferrum differs from overlayfs:\n{}",
        mismatches.join("\n")
    );
    assert_eq!(env.leftovers(), Vec::<String>::new(), "left behind");
}

/// What a client was told succeeded before the snapshotter died under it.
enum Acked {
    Committed {
        name: String,
        content: Option<String>,
    },
    Removed(String),
    InFlightRemove(String),
}

/// Prepare/Commit/Remove as fast as the snapshotter answers, until it stops
/// answering: base layers with a file named after them, children on top,
/// every other child removed again.
fn operation_stream(mut c: SnapshotClient, round: usize) -> Vec<Acked> {
    let mut acked = Vec::new();
    let mut last_base = String::new();
    for i in 0.. {
        let key = format!("r{round}-k{i}");
        let name = format!("r{round}-c{i}");
        let (parent, content) = if i % 2 == 0 {
            (String::new(), Some(name.clone()))
        } else {
            (last_base.clone(), None)
        };
        let Ok(mounts) = c.prepare(&key, &parent, labels! {"round" => round.to_string()}) else {
            break;
        };
        if let Some(text) = &content {
            if fs::write(Path::new(&mounts[0].source).join("content"), text).is_err() {
                break;
            }
        }
        if c.commit(&name, &key, labels! {"i" => i.to_string()})
            .is_err()
        {
            break;
        }
        acked.push(Acked::Committed {
            name: name.clone(),
            content: content.clone(),
        });
        if content.is_some() {
            last_base = name;
        } else if i % 4 == 3 {
            let removal = c.remove(&name);
            acked.push(match removal {
                Ok(()) => Acked::Removed(name),
                // It may or may not have happened before the kill.
                Err(_) => Acked::InFlightRemove(name),
            });
            if acked
                .last()
                .is_some_and(|a| matches!(a, Acked::InFlightRemove(_)))
            {
                break;
            }
        }
    }
    acked
}

/// Entries of `<root>/snapshots`: snapshot ids and anything else.
fn snapshot_dirs(env: &Env) -> (usize, Vec<String>) {
    let mut ids = 0;
    let mut other = Vec::new();
    for entry in fs::read_dir(env.snapshotter_root().join("snapshots")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.parse::<u64>().is_ok() {
            ids += 1;
        } else {
            other.push(name);
        }
    }
    (ids, other)
}

/// Every snapshot has its directory and every directory its snapshot.
#[track_caller]
fn assert_no_orphans(env: &Env, c: &mut SnapshotClient) {
    let listed = c.list(&[]).unwrap();
    let (ids, other) = snapshot_dirs(env);
    assert_eq!(other, Vec::<String>::new(), "temporary dirs left");
    assert_eq!(
        ids,
        listed.len(),
        "directories vs snapshots: {}",
        names(&listed)
    );
    for info in listed.iter().filter(|i| i.kind() != api::Kind::Committed) {
        let mounts = c.mounts(&info.name).unwrap();
        let dirs = match mounts[0].r#type.as_str() {
            "bind" => vec![mounts[0].source.clone().into()],
            _ => [overlay_dir(&mounts[0], "upperdir")]
                .into_iter()
                .flatten()
                .chain(lower_dirs(&mounts[0]))
                .collect(),
        };
        for dir in dirs {
            assert!(dir.is_dir(), "{}: {} is missing", info.name, dir.display());
        }
    }
}

#[test]
fn kill_9_during_a_stream_of_operations_loses_nothing() {
    let mut env = Env::start().expect("starting containerd with ferrum");
    let mut committed = BTreeMap::new();
    let mut removed = Vec::new();
    for round in 0..6 {
        let client = env.ferrum_snapshots().unwrap();
        let stream = thread::spawn(move || operation_stream(client, round));
        thread::sleep(Duration::from_millis(120 + 97 * round as u64));
        env.kill_snapshotter();
        let acked = stream.join().unwrap();
        assert!(
            !acked.is_empty(),
            "round {round}: nothing happened before the kill"
        );
        for a in acked {
            match a {
                Acked::Committed { name, content } => {
                    committed.insert(name, content);
                }
                Acked::Removed(name) => {
                    committed.remove(&name);
                    removed.push(name);
                }
                Acked::InFlightRemove(name) => {
                    committed.remove(&name);
                }
            }
        }
        env.restart_snapshotter().unwrap();

        let mut c = env.ferrum_snapshots().unwrap();
        for (name, content) in &committed {
            let info = c
                .stat(name)
                .unwrap_or_else(|e| panic!("round {round}: committed {name} is gone: {e}"));
            assert_eq!(info.kind(), api::Kind::Committed, "{name}");
            if let Some(text) = content {
                let view = format!("check-{name}");
                let mounts = c.view(&view, name, labels! {}).unwrap();
                let found =
                    fs::read_to_string(Path::new(&mounts[0].source).join("content")).unwrap();
                assert_eq!(&found, text, "content of {name}");
                c.remove(&view).unwrap();
            }
        }
        for name in &removed {
            assert_eq!(
                c.stat(name).unwrap_err().code,
                tonic::Code::NotFound,
                "removed {name} is back"
            );
        }
        assert_no_orphans(&env, &mut c);
    }
    assert!(
        committed.len() > 12,
        "too few operations got through: {}",
        committed.len()
    );
    assert_eq!(env.leftovers(), Vec::<String>::new(), "left behind");
}

#[test]
fn cleanup_removes_orphans_and_keeps_snapshots() {
    let env = Env::start().expect("starting containerd with ferrum");
    let mut c = env.ferrum_snapshots().unwrap();
    let m = c.prepare("base-extract", "", labels! {}).unwrap();
    fs::write(Path::new(&m[0].source).join("f"), "kept").unwrap();
    c.commit("base", "base-extract", labels! {}).unwrap();
    c.prepare("active", "base", labels! {}).unwrap();
    let snapshots = env.snapshotter_root().join("snapshots");
    for orphan in ["9999/fs", "new-1-7/fs", "rm-12/fs/deep"] {
        fs::create_dir_all(snapshots.join(orphan)).unwrap();
    }
    c.cleanup().unwrap();
    assert_no_orphans(&env, &mut c);
    let m = c.view("v", "base", labels! {}).unwrap();
    assert_eq!(
        fs::read_to_string(Path::new(&m[0].source).join("f")).unwrap(),
        "kept"
    );
}

const CLIENTS: usize = 16;
const ROUNDS: usize = 15;

/// CLIENTS clients, each on a connection of its own, race for one key and then
/// do ROUNDS of mixed operations on one shared parent. Returns every snapshot
/// `admin` lists afterwards.
fn sixteen_clients_at_once(
    admin: &mut SnapshotClient,
    connect: &dyn Fn() -> SnapshotClient,
) -> Vec<api::Info> {
    admin.prepare("base-extract", "", labels! {}).unwrap();
    admin.commit("base", "base-extract", labels! {}).unwrap();

    let workers: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let mut c = connect();
            thread::spawn(move || {
                let contested = c.prepare("contested", "base", labels! {}).is_ok();
                for i in 0..ROUNDS {
                    let key = format!("w{n}-{i}");
                    let name = format!("w{n}-c{i}");
                    let m = c
                        .prepare(&key, "base", labels! {"worker" => n.to_string()})
                        .unwrap();
                    assert_eq!(c.mounts(&key).unwrap(), m);
                    c.usage(&key).unwrap();
                    c.commit(&name, &key, labels! {"worker" => n.to_string()})
                        .unwrap();
                    c.view(&format!("{key}-view"), &name, labels! {}).unwrap();
                    let info = c
                        .update(&name, labels! {"i" => i.to_string()}, &["labels.i"])
                        .unwrap();
                    assert_eq!(info.labels.get("i"), Some(&i.to_string()));
                    let mine = c
                        .list(&[&format!("labels.worker=={n},kind==committed")])
                        .unwrap();
                    assert_eq!(mine.len(), i + 1, "worker {n} sees {}", names(&mine));
                    assert_eq!(
                        c.remove(&name).unwrap_err().code,
                        tonic::Code::FailedPrecondition
                    );
                    if i % 2 == 0 {
                        c.remove(&format!("{key}-view")).unwrap();
                    }
                }
                contested
            })
        })
        .collect();
    let winners = workers
        .into_iter()
        .map(|w| w.join().unwrap())
        .filter(|won| *won)
        .count();
    assert_eq!(
        winners, 1,
        "exactly one client may create the contested key"
    );
    let all = admin.list(&[]).unwrap();
    // base, contested, and per worker ROUNDS committed plus the odd rounds' views
    assert_eq!(
        all.len(),
        2 + CLIENTS * (ROUNDS + ROUNDS / 2),
        "{}",
        names(&all)
    );
    all
}

#[test]
fn sixteen_concurrent_clients() {
    let env = Env::start().expect("starting containerd with ferrum");
    let mut admin = env.ferrum_snapshots().unwrap();
    sixteen_clients_at_once(&mut admin, &|| env.ferrum_snapshots().unwrap());
    assert_no_orphans(&env, &mut admin);
    assert_eq!(env.leftovers(), Vec::<String>::new(), "left behind");
}

/// containerd multiplexes all its clients' calls onto its one connection to
/// the proxy snapshotter.
#[test]
fn sixteen_concurrent_clients_through_containerd() {
    let env = Env::start().expect("starting containerd with ferrum");
    let mut admin = env.snapshots("ferrum").unwrap();
    let listed = sixteen_clients_at_once(&mut admin, &|| env.snapshots("ferrum").unwrap());
    // containerd removes backend snapshots in its garbage collection, which
    // its scheduler runs only every 100 mutations (deletions do not count by
    // default): have a run now — the synchronous delete of a lease is one —
    // then wait for ferrum to hold just what containerd lists, and check
    // ferrum's own list against its directories.
    env.ctr(&["leases", "create", "--id", "collect-garbage"]).assert_ok();
    env.ctr(&["leases", "delete", "--sync", "collect-garbage"]).assert_ok();
    let mut direct = env.ferrum_snapshots().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while direct.list(&[]).unwrap().len() != listed.len() {
        assert!(
            Instant::now() < deadline,
            "containerd's GC did not catch up"
        );
        thread::sleep(Duration::from_millis(100));
    }
    assert_no_orphans(&env, &mut direct);
    assert_eq!(env.leftovers(), Vec::<String>::new(), "left behind");
}

#[test]
fn bad_input_on_ferrums_own_socket_is_refused_clearly() {
    use tonic::Code;
    let env = Env::start().expect("starting containerd with ferrum");
    let mut c = env.ferrum_snapshots().unwrap();
    c.prepare("base-extract", "", labels! {}).unwrap();
    c.commit("base", "base-extract", labels! {"keep" => "1"})
        .unwrap();
    let ctr_mounts = c.prepare("ctr", "base", labels! {}).unwrap();
    let before = c.list(&[]).unwrap();

    let big = "v".repeat(4096);
    let cases: Vec<(&str, CallResult<()>, Code, &[&str])> = vec![
        (
            "parent that does not exist",
            c.prepare("x", "no-such", labels! {}).map(drop),
            Code::NotFound,
            &["\"no-such\"", "does not exist"],
        ),
        (
            "key reused",
            c.prepare("ctr", "base", labels! {}).map(drop),
            Code::AlreadyExists,
            &["\"ctr\"", "already exists"],
        ),
        (
            "view of an active snapshot",
            c.view("v", "ctr", labels! {}).map(drop),
            Code::InvalidArgument,
            &["\"ctr\"", "not a committed"],
        ),
        (
            "malformed filter",
            c.list(&["labels.\"open==1"]).map(drop),
            Code::InvalidArgument,
            &["invalid filter", "labels.\\\"open==1"],
        ),
        (
            "filter without field",
            c.list(&["==1"]).map(drop),
            Code::InvalidArgument,
            &["invalid filter"],
        ),
        (
            "label over the limit on Prepare",
            c.prepare("y", "base", labels! {"k" => big.as_str()})
                .map(drop),
            Code::InvalidArgument,
            &["\"k\"", "4097 bytes", "4096"],
        ),
        (
            "label over the limit on Update",
            c.update("base", labels! {"k" => big.as_str()}, &["labels.k"])
                .map(drop),
            Code::InvalidArgument,
            &["\"k\"", "4096"],
        ),
        (
            "label over the limit on Commit",
            c.commit("c2", "ctr", labels! {"k" => big.as_str()}),
            Code::InvalidArgument,
            &["\"k\"", "4096"],
        ),
        (
            "commit of a missing key",
            c.commit("c3", "missing", labels! {}),
            Code::NotFound,
            &["\"missing\""],
        ),
        (
            "remove of a parent",
            c.remove("base"),
            Code::FailedPrecondition,
            &["\"base\"", "children"],
        ),
        (
            "mounts of a committed snapshot",
            c.mounts("base").map(drop),
            Code::FailedPrecondition,
            &["\"base\"", "committed"],
        ),
        (
            "update of the parent",
            c.update("base", labels! {}, &["parent"]).map(drop),
            Code::InvalidArgument,
            &["\"parent\"", "only labels"],
        ),
        (
            "empty key",
            c.prepare("", "base", labels! {}).map(drop),
            Code::InvalidArgument,
            &["must not be empty"],
        ),
    ];
    let mut wrong = Vec::new();
    for (what, result, code, words) in cases {
        match result {
            Err(e) if e.code == code && words.iter().all(|w| e.message.contains(w)) => {}
            other => wrong.push(format!(
                "{what}: want {code:?} mentioning {words:?}, got {other:?}"
            )),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    let after = c.list(&[]).unwrap();
    let summary = |infos: &[api::Info]| infos.iter().map(describe_info).collect::<Vec<_>>();
    assert_eq!(
        summary(&after),
        summary(&before),
        "bad input changed the snapshots"
    );
    assert_eq!(c.mounts("ctr").unwrap(), ctr_mounts);
    assert_no_orphans(&env, &mut c);
}
