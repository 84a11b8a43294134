//! Compiles containerd's vendored snapshots API with protox, so building
//! needs no `protoc` on the machine.

use std::error::Error;

const PROTO_ROOT: &str = "proto";
const PROTOS: &[&str] = &[
    "github.com/containerd/containerd/api/types/mount.proto",
    "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let descriptors = protox::compile(PROTOS, [PROTO_ROOT])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
