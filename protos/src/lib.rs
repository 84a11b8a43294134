//! containerd's gRPC API types, generated from the vendored `.proto` files
//! under `proto/` (containerd 1.6/1.7 wire format).
//!
//! - [`snapshots::v1`]: the `containerd.services.snapshots.v1.Snapshots`
//!   service a proxy snapshotter serves (`snapshots_server`) and its client
//!   (`snapshots_client`), with the request/response messages, `Info` and `Kind`.
//! - [`types::Mount`]: the mount description snapshots hand to containerd.

// prost emits module paths relative to the proto package (`super::super::…`),
// so the generated code lives in modules that mirror the packages exactly.
mod containerd {
    pub mod types {
        tonic::include_proto!("containerd.types");
    }

    pub mod services {
        pub mod snapshots {
            pub mod v1 {
                tonic::include_proto!("containerd.services.snapshots.v1");
            }
        }
    }
}

pub use containerd::services::snapshots;
pub use containerd::types;
