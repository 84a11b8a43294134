//! ferrum-snapshotter against containerd's built-in overlayfs snapshotter: the
//! same sequence of snapshot operations through containerd's Snapshots API, for
//! both, must give the same answers and the same mounted trees.

use std::fs;
use std::os::unix::fs::{chown, symlink, PermissionsExt};
use std::path::Path;

use ferrum_protos::snapshots::v1 as api;
use ferrum_protos::types::Mount;
use ferrum_tests::labels;
use ferrum_tests::snapshots::{lower_dirs, read_tree, tree_diff, CallResult, Mounted, Tree};
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
