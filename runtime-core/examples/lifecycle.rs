//! Times runtime-core alone, without containerd or a shim: create, start and
//! delete of a container running `true`, N times, on containerd's default
//! spec (`ctr oci spec`: its mounts, masked and read-only paths) with a
//! busybox rootfs. Built from two revisions, it tells what a change costs
//! the start path without the noise of containerd's round trips.
//!
//! Run as root: cargo run --release -p runtime-core --example lifecycle [N]

use runtime_core::{Container, CreateOptions};
use std::path::Path;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A bundle in `dir`: containerd's default spec running `true` on busybox.
fn bundle(dir: &Path) {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/true")).unwrap();
    let out = std::process::Command::new("ctr").args(["oci", "spec"]).output().expect("ctr oci spec");
    let mut spec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    spec["root"] = serde_json::json!({ "path": rootfs });
    spec["process"]["args"] = serde_json::json!(["/bin/true"]);
    spec["linux"]["cgroupsPath"] = serde_json::json!("/ferrum-lifecycle-bench/c");
    std::fs::write(dir.join("config.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
}

fn main() {
    runtime_core::init::run_if_init();
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let dir = std::env::temp_dir().join(format!("ferrum-lifecycle-{}", std::process::id()));
    bundle(&dir);
    let (mut create, mut start, mut delete) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n + 1 {
        let id = format!("c{i}");
        let opts = CreateOptions { state_root: dir.join("state"), ..Default::default() };
        let t = Instant::now();
        let mut c = Container::create(&id, &dir, opts).expect("create");
        let created = t.elapsed();
        let t = Instant::now();
        c.start().expect("start");
        let started = t.elapsed();
        let mut status = 0;
        // SAFETY: waitpid on our own child.
        unsafe { libc::waitpid(c.pid(), &mut status, 0) };
        let t = Instant::now();
        c.delete().expect("delete");
        // The first run warms the caches up (the init's read-only view).
        if i > 0 {
            create.push(created.as_secs_f64() * 1e3);
            start.push(started.as_secs_f64() * 1e3);
            delete.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("runtime-core, median of {n} (ms): create {:.2}  start {:.2}  delete {:.2}", median(create), median(start), median(delete));
}
