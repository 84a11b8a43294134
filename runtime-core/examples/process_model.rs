//! Measures the two process models for a container's init, per container:
//!
//! - re-exec (ferrum's): clone3 from the caller, execveat of our own binary
//!   from its read-only view, the Rust runtime starting up in the child;
//! - fork helper: a single-threaded helper forks a child (which then would do
//!   the setup in place). The request/reply round trip to the helper is not
//!   counted, which flatters the helper.
//!
//! Run: cargo run --release -p runtime-core --example process_model [N]
//! (as root: the read-only view is an overlayfs mount).

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn time<F: FnMut()>(n: usize, mut f: F) -> f64 {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = std::time::Instant::now();
        f();
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    median(samples)
}

fn main() {
    runtime_core::init::run_if_init();
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    // Warm up (the read-only view is made once per process).
    runtime_core::process_model::spawn_reexec_and_reap().expect("spawn init");

    let reexec = time(n, || runtime_core::process_model::spawn_reexec_and_reap().expect("spawn init"));
    let fork = time(n, || {
        // SAFETY: this example is single-threaded; the child only calls _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
    });
    println!("per container, median of {n}:");
    println!("  re-exec (clone3 + execveat, to init running): {reexec:8.1} us");
    println!("  fork from a single-threaded helper:          {fork:8.1} us");
    println!("  difference: {:.1} us per container start", reexec - fork);
}
