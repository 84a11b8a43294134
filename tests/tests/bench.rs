//! The benchmarks run in CI, small, so their commands cannot rot: the
//! density benchmark with 2 containers per runtime must print its table (the
//! start split by phase too) and leave nothing behind (it fails by itself if a runtime leaves anything),
//! and the checkpoint benchmark one round per runtime.

use ferrum_tests::ferrum_binary;

#[test]
fn the_density_benchmark_runs_and_leaves_nothing() {
    let out = std::process::Command::new(ferrum_binary("ferrum-bench")).args(["density", "2"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let rows = ["shims' PSS per container (kB)", "containerd's PSS with them up", "start, median of the last 2", "shim start + Create", "teardown of all"];
    for row in rows {
        assert!(stdout.contains(row), "no {row:?} row in\n{stdout}");
    }
}

/// One round of checkpoint and restore per runtime, with the CI's CRIU.
#[test]
fn the_checkpoint_benchmark_runs_and_leaves_nothing() {
    let out = std::process::Command::new(ferrum_binary("ferrum-bench")).args(["checkpoint", "1"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    for row in ["ctr containers checkpoint --task", "ctr containers restore --live", "RSS at checkpoint"] {
        assert!(stdout.contains(row), "no {row:?} row in\n{stdout}");
    }
}
