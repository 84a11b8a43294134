//! `docker diff`, `commit` and `export` of a container whose root is one of
//! ferrum-snapshotter's snapshots: the changes are read from its upper layer,
//! committed into a new image layer, and exported as a tar.

use std::collections::BTreeSet;
use std::fs::File;

use ferrum_tests::Docker;

use crate::{finish, name, same_on_both};

/// Adds a file and a directory, changes a file and removes one.
const CHANGES: &str = "echo new >/newfile; mkdir /newdir; echo changed >>/etc/passwd; rm /etc/group";

/// The files of a tar, by path.
fn paths_in(tar: &std::path::Path) -> BTreeSet<String> {
    let mut archive = tar::Archive::new(File::open(tar).unwrap());
    let entries = archive.entries().unwrap();
    entries.map(|e| e.unwrap().path().unwrap().to_string_lossy().trim_end_matches('/').to_string()).collect()
}

#[test]
#[ignore = "runs in the containerd 2.1 lane (scripts/test) with FERRUM_DOCKER_DIR"]
fn diff_commit_and_export_on_ferrum_snapshotter() {
    let (docker, image) = Docker::with_busybox();
    let seen = same_on_both("diff, commit, export", |runtime| {
        let c = name("changed", runtime);
        docker.run(runtime, &["--name", &c], &image, &["sh", "-c", CHANGES]).assert_ok();
        let mut diff: Vec<String> = docker.docker(&["diff", &c]).stdout.lines().map(String::from).collect();
        diff.sort();

        let committed = format!("committed:{runtime}");
        docker.docker(&["commit", &c, &committed]).assert_ok();
        let script = "cat /newfile; tail -n 1 /etc/passwd; test -d /newdir && echo dir; test -e /etc/group || echo no-group";
        let from_commit = docker.run(runtime, &["--rm"], &committed, &["sh", "-c", script]);

        let tar = docker.env().root_dir().join(format!("{c}.tar"));
        docker.docker(&["export", "-o", &tar.display().to_string(), &c]).assert_ok();
        let paths = paths_in(&tar);
        let exported = ["newfile", "newdir", "etc/passwd", "bin/busybox"].map(|p| paths.contains(p));
        (diff, from_commit.stdout, exported, paths.contains("etc/group"))
    });
    assert_eq!(seen.0, ["A /newdir", "A /newfile", "C /etc", "C /etc/passwd", "D /etc/group"]);
    assert_eq!(seen.1, "new\nchanged\ndir\nno-group\n");
    assert_eq!((seen.2, seen.3), ([true; 4], false));
    finish(docker);
}
