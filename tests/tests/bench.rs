//! The benchmarks run in CI, small, so their commands cannot rot: each must
//! print its table and leave nothing behind (each fails by itself if a runtime
//! leaves anything) — the density benchmark with 2 containers per runtime (the
//! start split by phase too), the checkpoint benchmark one round per runtime,
//! and the CRI one pod per handler (its calls split too).

use ferrum_tests::ferrum_binary;

/// Runs `ferrum-bench ARGS` and checks that it succeeded and printed `rows`.
fn bench_prints(args: &[&str], rows: &[&str]) {
    let out = std::process::Command::new(ferrum_binary("ferrum-bench")).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    for row in rows {
        assert!(stdout.contains(row), "no {row:?} row in\n{stdout}");
    }
}

#[test]
fn the_density_benchmark_runs_and_leaves_nothing() {
    let rows = ["shims' PSS per container (kB)", "containerd's PSS with them up", "start, median of the last 2", "shim start + Create", "teardown of all"];
    bench_prints(&["density", "2"], &rows);
}

/// One round of checkpoint and restore per runtime, with the CI's CRIU.
#[test]
fn the_checkpoint_benchmark_runs_and_leaves_nothing() {
    bench_prints(&["checkpoint", "1"], &["ctr containers checkpoint --task", "ctr containers restore --live", "RSS at checkpoint"]);
}

#[test]
fn the_cri_benchmark_runs_and_leaves_nothing() {
    let rows = ["ferrum handler", "RunPodSandbox", "CreateContainer", "StartContainer", "all shims of an idle pod"];
    bench_prints(&["cri", "1"], &rows);
}
