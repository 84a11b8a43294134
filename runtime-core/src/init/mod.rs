//! The container's init: a fresh, single-threaded process of our own binary,
//! born inside the container's new namespaces. It prepares the container
//! (namespaces to join, rootfs, devices, credentials), reports ready, waits for
//! start and `execve`s the user's process.

mod capabilities;
mod console;
mod devices;
mod keyring;
mod loopback;
mod lsm;
mod paths;
mod process;
mod rootfs;
mod scheduling;
mod seccomp;
mod sysctl;

use crate::channel::Channel;
use crate::container::SetupOptions;
use crate::hooks::{self, HookKind, HookState};
use crate::namespaces::Namespaces;
use crate::spawn::CHANNEL_FD;
use nix::sched::{setns, unshare, CloneFlags};
use oci_spec::runtime::{LinuxNamespaceType, LinuxPersonality, LinuxSeccomp, Process, Spec};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// The capability names process.capabilities may use.
pub(crate) fn capability_names() -> &'static [&'static str] {
    &capabilities::NAMES
}

/// argv[1] that makes our binary act as a container's init.
pub const INIT_ARG: &str = "__ferrum_init__";

// One message per container, serialized at once: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Serialize, Deserialize)]
pub(crate) enum InitRequest {
    /// Become a new container's init.
    Create(CreateRequest),
    /// Become a process in a running container: join its namespaces (the pid
    /// namespace was joined by the parent at clone time).
    /// `seccomp` is the container's profile, which applies to its execs too.
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
}

#[derive(Serialize, Deserialize)]
pub(crate) struct CreateRequest {
    pub id: String,
    pub spec: Spec,
    pub rootfs: PathBuf,
    pub bundle: PathBuf,
    pub setup: SetupOptions,
    /// Indices of the spec's mounts that arrive (in this order, after the
    /// request) as detached idmapped mounts made by the parent.
    pub idmapped: Vec<usize>,
}

#[derive(Serialize, Deserialize)]
pub(crate) enum InitReply {
    /// Set up; `warnings` are things runc would log and go on with. With
    /// `console`, the console's master fd follows.
    Ready { warnings: Vec<String>, console: bool },
    Failed { message: String },
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
    HooksDone,
    SeccompListenerDone,
}

/// Call first thing in `main` of every binary that creates containers: when this
/// process is a container's init, it never returns.
pub fn run_if_init() {
    if std::env::args_os().nth(1).is_some_and(|a| a == INIT_ARG) {
        std::process::exit(run());
    }
}

type Result<T> = std::result::Result<T, String>;

/// Turn any error into init's error text, prefixed with what was being done.
pub(crate) trait Describe<T> {
    fn describe(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: std::fmt::Display> Describe<T> for std::result::Result<T, E> {
    fn describe(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| format!("{}: {e}", what()))
    }
}

fn run() -> i32 {
    // Nothing but stdio and the channel may reach the container.
    // SAFETY: close_range on fds this process never uses; the channel fd is ours.
    unsafe {
        libc::syscall(libc::SYS_close_range, CHANNEL_FD + 1, u32::MAX, 0);
        // Non-dumpable while we still run our own code: no ptrace or /proc/<pid>
        // access from the container until the user process is exec'd.
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let mut channel = Channel::new(unsafe { UnixStream::from_raw_fd(CHANNEL_FD) });
    let request: InitRequest = match channel.recv() {
        Ok(Some(r)) => r,
        _ => return 1,
    };
    let mut warnings = Vec::new();
    let prepared = match &request {
        InitRequest::Hooks { kind, hooks, state, all } => {
            let reply = match hooks::run_encoded(*kind, hooks, state, *all) {
                Ok(warnings) => InitReply::Ready { warnings, console: false },
                Err(message) => InitReply::Failed { message },
            };
            return if channel.send(&reply).is_ok() { 0 } else { 1 };
        }
        InitRequest::Create(create) => {
            let received: std::io::Result<HashMap<usize, OwnedFd>> =
                create.idmapped.iter().map(|i| channel.recv_fd().map(|fd| (*i, fd))).collect();
            match received {
                Ok(mounts) => prepare_container(create, &mounts, &mut channel, &mut warnings),
                Err(e) => Err(format!("receive the idmapped mounts: {e}")),
            }
        }
        InitRequest::Exec { id, process, namespaces, seccomp, personality } => {
            prepare_exec(id, process, namespaces, seccomp.as_ref(), personality.as_ref(), &mut channel, &mut warnings)
        }
    };
    let mut prepared = match prepared {
        Ok(p) => p,
        Err(message) => {
            let _ = channel.send(&InitReply::Failed { message });
            return 1;
        }
    };
    let console = prepared.take_console();
    if channel.send(&InitReply::Ready { warnings, console: console.is_some() }).is_err() {
        return 1;
    }
    if let Some(master) = console {
        // The master must not stay open in the container.
        if channel.send_fd(std::os::fd::AsRawFd::as_raw_fd(&master)).is_err() {
            return 1;
        }
    }
    match channel.recv::<ParentMessage>() {
        Ok(Some(ParentMessage::Start)) => {}
        // The parent went away or deleted us before start.
        _ => return 0,
    }
    let confined = prepared.confine(&mut |fd| hand_off_listener(&mut channel, fd));
    let started = confined.and_then(|()| match &request {
        // In the container, exactly as confined as the user's process, right before it.
        InitRequest::Create(CreateRequest { id, spec, bundle, .. }) => {
            let state = HookState::new(spec, id, bundle, "created", Some(std::process::id() as i32));
            hooks::run(HookKind::StartContainer, spec, &state)
        }
        _ => Ok(()),
    });
    let message = match started {
        Ok(()) => prepared.exec(),
        Err(message) => message,
    };
    let _ = channel.send(&InitReply::Failed { message });
    1
}

fn prepare_container(
    create: &CreateRequest,
    idmapped: &HashMap<usize, OwnedFd>,
    channel: &mut Channel,
    warnings: &mut Vec<String>,
) -> Result<process::Prepared> {
    let CreateRequest { id, spec, rootfs, bundle, setup, .. } = create;
    let ns = Namespaces::from_spec(spec);
    join_namespaces(&ns.joins)?;
    if ns.new_cgroup {
        // The parent placed us in our cgroup before sending the request.
        unshare(CloneFlags::CLONE_NEWCGROUP).describe(|| "unshare cgroup namespace".into())?;
    }
    if ns.new_ipc {
        unshare(CloneFlags::CLONE_NEWIPC).describe(|| "unshare IPC namespace".into())?;
    }
    if ns.new_time {
        new_time_namespace(spec)?;
    }
    set_names(spec, &ns)?;
    if ns.creates(LinuxNamespaceType::Network) {
        loopback::bring_up()?;
    }
    if let Some(p) = spec.linux().as_ref().and_then(|l| l.personality().as_ref()) {
        scheduling::set_personality(p)?;
    }
    if !setup.no_new_keyring {
        keyring::join_new_session(id)?;
    }
    if !ns.has(LinuxNamespaceType::Mount) {
        return Err("a mount namespace is required to set up the rootfs".into());
    }
    // SAFETY: umask has no memory effects. Files we create get exactly their modes.
    unsafe { libc::umask(0) };
    let sys = &crate::sys::Kernel;
    rootfs::setup(sys, spec, rootfs, &ns, idmapped, setup.no_pivot_root, || before_pivot(id, spec, bundle, channel))?;
    sysctl::apply(spec, &ns)?;
    rootfs::protect(sys, spec)?;
    let process = spec.process().as_ref().ok_or("no process section")?;
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
    process::prepare(id, process, seccomp, process::Role::Init, warnings, &mut |fd| hand_off_listener(channel, fd))
}

/// The hooks that see the container's mounts with the host's root still
/// reachable (as runc): the parent's prestart and createRuntime, then our
/// createContainer.
fn before_pivot(id: &str, spec: &Spec, bundle: &Path, channel: &mut Channel) -> Result<()> {
    if !HookKind::Prestart.of(spec).is_empty() || !HookKind::CreateRuntime.of(spec).is_empty() {
        channel.send(&InitReply::RunHooks).describe(|| "ask for the createRuntime hooks".into())?;
        match channel.recv::<ParentMessage>() {
            Ok(Some(ParentMessage::HooksDone)) => {}
            // The parent reports its own hook failure; we are being killed.
            _ => return Err("the runtime's hooks did not complete".into()),
        }
    }
    let state = HookState::new(spec, id, bundle, "creating", Some(std::process::id() as i32));
    hooks::run(HookKind::CreateContainer, spec, &state)
}

fn prepare_exec(
    id: &str,
    process: &Process,
    namespaces: &[(LinuxNamespaceType, PathBuf)],
    seccomp: Option<&LinuxSeccomp>,
    personality: Option<&LinuxPersonality>,
    channel: &mut Channel,
    warnings: &mut Vec<String>,
) -> Result<process::Prepared> {
    join_namespaces(namespaces)?;
    if let Some(p) = personality {
        scheduling::set_personality(p)?;
    }
    // Joining the mount namespace put us at its root; the process's cwd is
    // relative to that, and is not created for an exec (as runc).
    process::prepare(id, process, seccomp, process::Role::Exec, warnings, &mut |fd| hand_off_listener(channel, fd))
}

/// Our seccomp filter hands syscalls to a listener: the parent passes its fd
/// to linux.seccomp.listenerPath (a host path we may no longer reach) while
/// we wait, so that no notified syscall of ours waits for a listener that
/// does not have the fd yet.
fn hand_off_listener(channel: &mut Channel, fd: std::os::fd::RawFd) -> Result<()> {
    channel.send(&InitReply::SeccompListener).describe(|| "announce the seccomp listener fd".into())?;
    channel.send_fd(fd).describe(|| "send the seccomp listener fd".into())?;
    match channel.recv::<ParentMessage>() {
        Ok(Some(ParentMessage::SeccompListenerDone)) => Ok(()),
        _ => Err("the runtime did not pass the seccomp fd to the listener".into()),
    }
}

/// Open every namespace first (a joined mount namespace changes what /proc
/// shows), then join them in order, user namespace first.
fn join_namespaces(joins: &[(LinuxNamespaceType, PathBuf)]) -> Result<()> {
    let mut files = Vec::with_capacity(joins.len());
    for (typ, path) in joins {
        // The parent cloned us into the pid namespace already (setns on one
        // only moves future children).
        debug_assert!(*typ != LinuxNamespaceType::Pid);
        let file = std::fs::File::open(path).describe(|| format!("open {typ} namespace {}", path.display()))?;
        files.push((*typ, path, file));
    }
    for (typ, path, file) in files {
        setns(file, CloneFlags::from_bits_truncate(typ as i32))
            .describe(|| format!("join {typ} namespace {}", path.display()))?;
    }
    Ok(())
}

/// A time namespace of the container's own, with linux.timeOffsets. Offsets
/// can only be written before any process is in the namespace: unshare puts
/// only our future children (and, at execve, ourselves) in it.
fn new_time_namespace(spec: &Spec) -> Result<()> {
    unshare(CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)).describe(|| "unshare time namespace".into())?;
    let offsets = spec.linux().as_ref().and_then(|l| l.time_offsets().clone()).unwrap_or_default();
    let mut text = String::new();
    for (clock, offset) in &offsets {
        if clock != "monotonic" && clock != "boottime" {
            return Err(format!("linux.timeOffsets: unknown clock {clock:?} (monotonic or boottime)"));
        }
        text.push_str(&format!("{clock} {} {}\n", offset.secs().unwrap_or(0), offset.nanosecs().unwrap_or(0)));
    }
    if !text.is_empty() {
        std::fs::write("/proc/self/timens_offsets", &text).describe(|| format!("write linux.timeOffsets {text:?}"))?;
    }
    Ok(())
}

fn set_names(spec: &Spec, ns: &Namespaces) -> Result<()> {
    let names = [("hostname", spec.hostname()), ("domainname", spec.domainname())];
    for (what, value) in names {
        let Some(value) = value.as_deref().filter(|v| !v.is_empty()) else { continue };
        if !ns.has(LinuxNamespaceType::Uts) {
            return Err(format!("{what} {value:?} needs a UTS namespace of the container's own"));
        }
        let ret = if what == "hostname" {
            nix::unistd::sethostname(value).describe(|| format!("set hostname {value:?}"))
        } else {
            // SAFETY: pointer and length of a live string.
            let r = unsafe { libc::setdomainname(value.as_ptr().cast(), value.len()) };
            nix::errno::Errno::result(r).map(drop).describe(|| format!("set domainname {value:?}"))
        };
        ret?;
    }
    Ok(())
}
