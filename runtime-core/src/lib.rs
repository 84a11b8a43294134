//! ferrum's OCI runtime, as a library.
//!
//! `runtime-core` knows the OCI runtime spec and Linux, nothing of containerd.
//! The caller (the shim) hands in a bundle and stdio fds and gets a [`Container`]
//! whose init process waits until [`Container::start`].
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

mod affinity;
mod channel;
pub mod cgroup;
mod clone3;
mod container;
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
mod pidns;
mod procfs;
mod rootless;
mod seccomp_listener;
mod spawn;
mod spec;
mod state;
mod sys;

pub use container::{Container, CreateOptions, ExecProcess, SetupOptions, Stdio};
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
        let child = crate::spawn::spawn_in_pid_namespace(None, Default::default(), &crate::Stdio::default())?;
        // Closing the channel makes init exit as soon as it is running.
        let pid = child.pid;
        drop(child);
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None)?;
        Ok(())
    }
}
