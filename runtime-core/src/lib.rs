//! ferrum's OCI runtime, as a library.
//!
//! `runtime-core` knows the OCI runtime spec and Linux, nothing of containerd.
//! It has two callers: the shim (containerd-shim-ferrum-v2), which keeps a
//! [`Container`] for its life, and the `ferrum` CLI (runc's command line),
//! which loads one from its state for each command. Either hands in a bundle
//! and stdio fds and gets a [`Container`] whose init process waits until
//! [`Container::start`] — of this process, or of a later one that loads the
//! container after [`Container::detach`].
//!
//! Process model: the container's init is a fresh copy of the *calling binary*,
//! cloned straight into its new namespaces and immediately `execve`d from a
//! read-only, detached view of the executable (see [`init_exe`]). The child of the
//! (multi-threaded) caller therefore runs nothing but `dup2` and `execveat`; all
//! real work (mounts, pivot_root, devices, credentials) happens in the new,
//! single-threaded process. A binary that uses this crate must call
//! [`init::run_if_init`] first thing in `main`.
//!
//! Reaping is the caller's job: this crate never `waitpid`s on a container's
//! processes, because a shim that is a subreaper must own every exit status.
//! The exceptions are processes the caller never learns of: the runners of
//! the runtime's hooks, and the process of a create or exec that failed,
//! which is killed and reaped before the error returns.
//!
//! Modules: `protocol` is what the runtime and init say to each other (init's
//! argv, the channel's messages); `spawn` clones and execs an init; `init` is
//! the init's side; `container` the runtime's. Imports go one way: container
//! → spawn → protocol → hooks, and init → protocol; no module imports one
//! that imports it.

mod affinity;
mod channel;
pub mod cgroup;
mod clone3;
mod container;
mod criu;
mod error;
mod exec_fifo;
mod features;
mod hooks;
mod idmap;
pub mod init;
mod init_exe;
pub mod mount;
mod namespaces;
mod new_mount_api;
mod proc_stat;
mod protocol;
mod pidns;
mod procfs;
mod rootless;
mod seccomp_listener;
mod spawn;
mod spec;
mod state;
mod sys;

pub use container::{Container, CreateOptions, ExecProcess};
pub use criu::{CheckpointOptions, RestoreOptions};
pub use protocol::SetupOptions;
pub use spawn::Stdio;
pub use error::{Error, Result};
pub use features::features;
pub use rootless::is_rootless;
pub use spec::load_spec;
pub use state::{State, Status};

#[cfg(test)]
mod test_support;

/// Measurement hooks for `examples/process_model.rs`; not an API.
#[doc(hidden)]
pub mod process_model {
    /// Spawn an init the way `Container::create` does (no namespaces), let it
    /// start up, and reap it. Returns once it has exited.
    pub fn spawn_reexec_and_reap() -> std::io::Result<()> {
        let child = crate::spawn::spawn(None, Default::default(), &crate::Stdio::default())?;
        // Closing the channel makes init exit as soon as it is running.
        let pid = child.pid;
        drop(child);
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None)?;
        Ok(())
    }
}
