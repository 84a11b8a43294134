//! End-to-end test support for ferrum: an OCI image builder (`image`) and a
//! harness (`Env`) that runs a private containerd, plus ferrum-snapshotter, per
//! test and removes every trace of it on drop.

pub mod lsm;
mod binaries;
pub mod cleanup;
pub mod containerd;
pub mod counter;
pub mod cri;
pub mod docker;
pub mod elf;
pub mod ctr;
pub mod image;
pub mod podman;
pub mod probe;
pub mod registry;
pub mod rootless;
mod procfs;
pub mod spec_file;
pub mod systemd_node;
pub mod snapshot_bench;
pub mod snapshots;

pub use binaries::{criu_dir, ferrum_binary};
pub use cleanup::Footprint;
pub use docker::{Docker, DOCKER_FERRUM, DOCKER_RUNC, DOCKER_RUNTIMES};
pub use containerd::{Env, Options, FERRUM_CLI, FERRUM_RUNTIME, RUNC_RUNTIME};
pub use ctr::CtrOutput;
pub use procfs::{mounts_at, root_mount};
pub use spec_file::SpecFile;
pub use systemd_node::SystemdNode;

/// Milliseconds since `since`, as the benchmarks report them.
pub fn millis(since: std::time::Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}
