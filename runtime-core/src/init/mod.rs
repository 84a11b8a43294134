//! The container's init: a fresh, single-threaded process of our own binary,
//! born inside the container's new namespaces. It prepares the container
//! (namespaces to join, rootfs, devices, credentials), reports ready, waits for
//! start and `execve`s the user's process.

mod capabilities;
mod criu_runner;
mod console;
mod destination;
mod devices;
#[cfg(test)]
mod fuzz;
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
use crate::protocol::{channel_fd_from_args, CreateRequest, InitReply, InitRequest, ParentMessage, INIT_ARG};
use crate::hooks::{self, HookKind, HookState};
use crate::namespaces::Namespaces;
use nix::sched::{setns, unshare, CloneFlags};
use oci_spec::runtime::{LinuxNamespaceType, LinuxPersonality, LinuxSeccomp, Process, Spec};
use std::collections::HashMap;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// The capability names process.capabilities may use.
pub(crate) fn capability_names() -> &'static [&'static str] {
    &capabilities::NAMES
}

/// Call first thing in `main` of every binary that creates containers: when this
/// process is a container's init, it never returns.
pub fn run_if_init() {
    if std::env::args_os().nth(1).is_some_and(|a| a == INIT_ARG) {
        // Spawned by us, so argv[2] is the channel's fd; anything else ends here.
        std::process::exit(channel_fd_from_args().map_or(1, run));
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

fn run(channel_fd: RawFd) -> i32 {
    // Nothing but stdio, the extra fds and the channel may reach the container.
    // SAFETY: close_range on fds this process never uses; the channel fd is ours.
    unsafe {
        libc::syscall(libc::SYS_close_range, channel_fd + 1, u32::MAX, 0);
        // Non-dumpable while we still run our own code: no ptrace or /proc/<pid>
        // access from the container until the user process is exec'd.
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let mut channel = Channel::new(unsafe { UnixStream::from_raw_fd(channel_fd) });
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
        InitRequest::Criu(criu) => {
            let done = receive_fds(&mut channel, criu.cgroups + criu.inherited)
                .and_then(|mut fds| {
                    let inherit = fds.split_off(criu.cgroups);
                    criu_runner::prepare(fds, inherit)
                })
                .and_then(|()| {
                    let opts = criu.opts.clone();
                    let mut hooks = |pid| criu_runner::run_hooks(&criu.hooks, &criu.hook_state, pid);
                    crate::criu::swrk::run(&criu.criu, &criu.path, criu.typ, opts, &criu.image_dir, &criu.work_dir, &mut hooks)
                });
            let sent = match done {
                Ok(outcome) => criu_runner::answer(&mut channel, outcome),
                Err(message) => channel.send(&InitReply::Failed { message }),
            };
            return if sent.is_ok() { 0 } else { 1 };
        }
        InitRequest::Create(create) => match receive_fds(&mut channel, create.detached.len() + create.joins.len()) {
            Ok(mut fds) => {
                let joins = with_names(&create.joins, fds.split_off(create.detached.len()));
                let mounts = create.detached.iter().copied().zip(fds).collect();
                prepare_container(create, &mounts, joins, &mut channel, &mut warnings)
            }
            Err(message) => Err(message),
        },
        InitRequest::Exec { id, process, namespaces, seccomp, personality } => {
            match receive_fds(&mut channel, namespaces.len()) {
                Ok(fds) => {
                    let joins = with_names(namespaces, fds);
                    prepare_exec(id, process, joins, seccomp.as_ref(), personality.as_ref(), &mut channel, &mut warnings)
                }
                Err(message) => Err(message),
            }
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
    let mut starter = match channel.recv::<ParentMessage>() {
        Ok(Some(ParentMessage::Start)) => Starter::Channel(channel),
        Ok(Some(ParentMessage::StartOnFifo)) => match wait_on_fifo(&mut channel) {
            Ok(fifo) => Starter::Fifo(fifo),
            Err(_) => return 1,
        },
        // The parent went away or deleted us before start.
        _ => return 0,
    };
    let confined = prepared.confine(&mut |fd| match &mut starter {
        Starter::Channel(channel) => hand_off_listener(channel, fd),
        Starter::Fifo(_) => Err("linux.seccomp.listenerPath needs the runtime that created the container at start".into()),
    });
    let started = confined.and_then(|()| match &request {
        // In the container, exactly as confined as the user's process, right before it.
        InitRequest::Create(CreateRequest { id, spec, bundle, .. }) => {
            let state = HookState::new(spec, id, bundle, "created", Some(std::process::id() as i32));
            hooks::run(HookKind::StartContainer, spec, &state)
        }
        _ => Ok(()),
    });
    let message = match started {
        Ok(()) => prepared.exec(channel_fd),
        Err(message) => message,
    };
    starter.fail(message);
    1
}

/// Who waits for the exec: the runtime that created us, on the channel, or
/// a later `start` reading the exec FIFO. Either sees EOF when the user's
/// process runs (both are close-on-exec), and a message when it could not.
enum Starter {
    Channel(Channel),
    Fifo(std::fs::File),
}

impl Starter {
    fn fail(self, message: String) {
        match self {
            Starter::Channel(mut channel) => {
                let _ = channel.send(&InitReply::Failed { message });
            }
            Starter::Fifo(mut fifo) => {
                let _ = std::io::Write::write_all(&mut fifo, message.as_bytes());
            }
        }
    }
}

/// Take the exec FIFO's fd, let the runtime go, and block until `start`
/// opens the FIFO's other end. Reopened through our own procfs: the FIFO's
/// directory is out of reach inside the container.
fn wait_on_fifo(channel: &mut Channel) -> std::io::Result<std::fs::File> {
    let path_fd = channel.recv_fd()?;
    let flags = pathrs::flags::OpenFlags::O_WRONLY | pathrs::flags::OpenFlags::O_CLOEXEC;
    crate::procfs::reopen(path_fd.as_fd(), flags).map(std::fs::File::from)
}

/// The fds the parent sends after a request: mounts, namespaces.
fn receive_fds(channel: &mut Channel, n: usize) -> Result<Vec<OwnedFd>> {
    (0..n).map(|_| channel.recv_fd()).collect::<std::io::Result<_>>().describe(|| "receive fds from the runtime".into())
}

/// A namespace to join: its type, what to call it, and its fd.
type Join = (LinuxNamespaceType, PathBuf, OwnedFd);

fn with_names(names: &[(LinuxNamespaceType, PathBuf)], fds: Vec<OwnedFd>) -> Vec<Join> {
    names.iter().cloned().zip(fds).map(|((typ, path), fd)| (typ, path, fd)).collect()
}

/// What init needs of the host, found out before it joins a namespace or
/// mounts anything of the container's: afterwards every /proc and /sys path
/// may be the container's.
fn survey_host() -> Result<lsm::Host> {
    crate::procfs::prime().describe(|| "open a procfs of our own".into())?;
    Ok(lsm::Host::detect())
}

fn prepare_container(
    create: &CreateRequest,
    detached: &HashMap<usize, OwnedFd>,
    joins: Vec<Join>,
    channel: &mut Channel,
    warnings: &mut Vec<String>,
) -> Result<process::Prepared> {
    let CreateRequest { id, spec, bundle, setup, .. } = create;
    let host = survey_host()?;
    let ns = Namespaces::from_spec(spec);
    // Sysctls live in the unmasked procfs, made while no mount of the container exists.
    let sysctls = sysctl::Writer::new(spec, &ns)?;
    join_namespaces(joins)?;
    if create.unshare != 0 {
        let flags = CloneFlags::from_bits_retain(create.unshare as i32);
        unshare(flags).describe(|| format!("make the new namespaces ({flags:?}) in the user namespace joined"))?;
    }
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
    rootfs::setup(sys, create, &ns, detached, || before_pivot(id, spec, bundle, channel))?;
    sysctls.apply()?;
    let root = paths::open_process_root().describe(|| "open the container's root".into())?;
    rootfs::protect(sys, spec, &root)?;
    let process = spec.process().as_ref().ok_or("no process section")?;
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
    let role = process::Role::Init;
    process::prepare(id, process, seccomp, role, &host, warnings, &mut |fd| hand_off_listener(channel, fd))
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
    namespaces: Vec<Join>,
    seccomp: Option<&LinuxSeccomp>,
    personality: Option<&LinuxPersonality>,
    channel: &mut Channel,
    warnings: &mut Vec<String>,
) -> Result<process::Prepared> {
    let host = survey_host()?;
    join_namespaces(namespaces)?;
    if let Some(p) = personality {
        scheduling::set_personality(p)?;
    }
    // Joining the mount namespace put us at its root; the process's cwd is
    // relative to that, and is not created for an exec (as runc).
    let role = process::Role::Exec;
    process::prepare(id, process, seccomp, role, &host, warnings, &mut |fd| hand_off_listener(channel, fd))
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

/// Join the namespaces in order, user namespace first.
fn join_namespaces(joins: Vec<Join>) -> Result<()> {
    for (typ, path, fd) in joins {
        // The parent cloned us into the pid namespace already (setns on one
        // only moves future children).
        debug_assert!(typ != LinuxNamespaceType::Pid);
        setns(fd, CloneFlags::from_bits_truncate(typ as i32))
            .describe(|| format!("join {typ} namespace {}", path.display()))?;
        if typ == LinuxNamespaceType::User {
            // Our host ids mean nothing there (files and mounts we make would
            // fail with EOVERFLOW): become its root, as runc does.
            let root = || format!("become root of user namespace {}", path.display());
            nix::unistd::setresgid(0.into(), 0.into(), 0.into()).describe(root)?;
            nix::unistd::setresuid(0.into(), 0.into(), 0.into()).describe(root)?;
        }
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
        crate::procfs::write(crate::procfs::Base::OwnProcess, "timens_offsets", text.as_bytes())
            .describe(|| format!("write linux.timeOffsets {text:?}"))?;
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
