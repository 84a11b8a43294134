//! What a runtime and the init it spawned say to each other: init's command
//! line, the request it gets on its channel, its replies, and the runtime's
//! later messages. Below `container`, `spawn` and `init`, which all speak it,
//! so that none of them needs another's types.

use crate::hooks::HookKind;
use oci_spec::runtime::{LinuxNamespaceType, LinuxPersonality, LinuxSeccomp, Process, Spec};
use serde::{Deserialize, Serialize};
use std::os::fd::RawFd;
use std::path::PathBuf;

/// argv[1] that makes our binary act as a container's init.
pub(crate) const INIT_ARG: &str = "__ferrum_init__";

// One message per container, serialized at once: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Serialize, Deserialize)]
pub(crate) enum InitRequest {
    /// Become a new container's init.
    Create(CreateRequest),
    /// Become a process in a running container: join its namespaces (the pid
    /// namespace was joined by the parent at clone time).
    /// `seccomp` is the container's profile, which applies to its execs too.
    /// `namespaces` (named by their /proc path, for messages) arrive as fds
    /// after the request, opened by the parent.
    Exec {
        id: String,
        process: Process,
        namespaces: Vec<(LinuxNamespaceType, PathBuf)>,
        seccomp: Option<LinuxSeccomp>,
        personality: Option<LinuxPersonality>,
    },
    /// Run the runtime's own hooks (this process is in the runtime's
    /// namespaces, single-threaded and the hooks' only reaper), then exit.
    /// With `all`, failures come back as warnings of a Ready.
    Hooks { kind: HookKind, hooks: Vec<oci_spec::runtime::Hook>, state: Vec<u8>, all: bool },
    /// Have CRIU dump or restore (this process is in the runtime's
    /// namespaces and CRIU's only reaper), answer, then exit.
    Criu(CriuRequest),
}

#[derive(Serialize, Deserialize)]
pub(crate) struct CreateRequest {
    pub id: String,
    pub spec: Spec,
    pub rootfs: PathBuf,
    pub bundle: PathBuf,
    pub setup: SetupOptions,
    /// Indices of the spec's mounts that arrive (in this order, after the
    /// request) as detached mounts made by the parent: idmapped ones, and in
    /// a user namespace the other bind mounts' sources.
    pub detached: Vec<usize>,
    /// The spec's namespaces to join (not the pid namespace: init is cloned
    /// into it), user namespace first. Their fds arrive after the mounts',
    /// opened by the parent: init opens no namespace by path.
    pub joins: Vec<(LinuxNamespaceType, PathBuf)>,
    /// CLONE_NEW* flags of namespaces to make once joined: those that must
    /// belong to a user namespace joined by path.
    pub unshare: u64,
    /// Rootfs layers to mount on `mount::rootfs_target(bundle)` in our new
    /// mount namespace (see `container/layers.rs`); none when the runtime
    /// mounted them on the host.
    pub layers: Vec<crate::mount::RootfsMount>,
}

/// A dump or restore for a runner. `cgroups` fds follow, each a
/// cgroup.procs to move into first (CRIU and what it restores are born in
/// the container's cgroup), then `inherited` fds to hand CRIU from
/// FIRST_INHERITED_FD on. `path` is the caller's PATH, where CRIU finds the
/// tools it runs (a runner starts with an empty environment).
#[derive(Serialize, Deserialize)]
pub(crate) struct CriuRequest {
    pub criu: PathBuf,
    pub path: String,
    pub typ: crate::criu::rpc::ReqType,
    pub opts: crate::criu::rpc::Opts,
    pub image_dir: PathBuf,
    pub work_dir: PathBuf,
    pub cgroups: usize,
    pub inherited: usize,
    /// The runtime's hooks to run once a restored tree's namespaces exist
    /// (prestart, createRuntime, as runc), with the state they read, its pid
    /// to be filled in.
    pub hooks: Vec<(HookKind, Vec<oci_spec::runtime::Hook>)>,
    pub hook_state: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
pub(crate) enum InitReply {
    /// Set up; `warnings` are things runc would log and go on with. With
    /// `console`, the console's master fd follows.
    Ready { warnings: Vec<String>, console: bool },
    Failed { message: String },
    /// CRIU restored the container: its init's pid; with `console`, the new
    /// master of its terminal follows.
    Restored { pid: i32, console: bool },
    /// The mounts are set up, pivot_root is next: the parent runs the prestart
    /// and createRuntime hooks now and answers `HooksDone`.
    RunHooks,
    /// A seccomp listener fd follows: the parent sends it to listenerPath and
    /// answers `SeccompListenerDone`.
    SeccompListener,
}

#[derive(Serialize, Deserialize)]
pub(crate) enum ParentMessage {
    Start,
    /// Start once another process opens the exec FIFO whose fd follows (a
    /// CLI's `start`: the runtime that created us is gone by then).
    StartOnFifo,
    HooksDone,
    SeccompListenerDone,
}

/// Init's fd 0-2 are stdio, then come the extra fds (3, 4, …), then the
/// channel, whose number is init's argv[2]: `ferrum-init INIT_ARG FD`.
pub(crate) fn init_argv(channel_fd: RawFd) -> [String; 3] {
    ["ferrum-init".into(), INIT_ARG.into(), channel_fd.to_string()]
}

/// The channel's fd from init's own argv (None: not an init, or a bad one).
pub(crate) fn channel_fd_from_args() -> Option<RawFd> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != INIT_ARG {
        return None;
    }
    args.next()?.to_str()?.parse::<RawFd>().ok().filter(|fd| *fd >= 3)
}

/// How init sets the container up, beyond the spec: runc's options of the same names.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct SetupOptions {
    /// Move the rootfs onto / and chroot instead of pivot_root (for a rootfs
    /// on a ramdisk, where pivot_root cannot work). Less isolated: the old
    /// root stays reachable to a process that can escape a chroot.
    pub no_pivot_root: bool,
    /// Keep the runtime's session keyring instead of a new one per container.
    pub no_new_keyring: bool,
}
