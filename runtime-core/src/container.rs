//! The container as the caller sees it: create (init set up and waiting),
//! start, signal, delete, and load from disk after a restart.

mod checkpoint;
mod layers;

use crate::cgroup::systemd::{self, UnitPath};
use crate::cgroup::{Cgroup, CgroupDriver};
use crate::channel::Channel;
use crate::error::{Context, Error, Result};
use crate::hooks::{self, HookKind, HookState};
use crate::mount::{unmount_all, RootfsMount};
use crate::protocol::{CreateRequest, InitReply, InitRequest, ParentMessage, SetupOptions};
use crate::namespaces::Namespaces;
use crate::spawn::{spawn, Birth, Stdio};
use crate::state::{State, Status};
use crate::{exec_fifo, proc_stat, spec};
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, LinuxResources, Process, Spec};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;


#[derive(Default)]
pub struct CreateOptions {
    /// Where state lives: `<state_root>/<id>/state.json`.
    pub state_root: PathBuf,
    pub stdio: Stdio,
    pub setup: SetupOptions,
    pub cgroup_driver: CgroupDriver,
    /// Appended to process.env (runc's LISTEN_FDS/LISTEN_PID for the fds
    /// of systemd's socket activation it passes on in `stdio.extra`).
    pub extra_env: Vec<String>,
    /// containerd's rootfs mounts, for `mount::rootfs_target(bundle)`
    /// (see `layers` for where they are mounted). The caller unmounts that
    /// path from its namespace once the container is deleted. `create` only:
    /// `restore` restores onto a rootfs its caller mounted on the host (as
    /// runc-v2 mounts it at Create, and restores at Start).
    pub rootfs_mounts: Vec<RootfsMount>,
}


pub struct Container {
    state: State,
    dir: PathBuf,
    /// The channel to init, until start.
    channel: Option<Channel>,
    /// Warnings from init (runc would log them and go on).
    warnings: Vec<String>,
    /// The console's master (process.terminal), for the caller to take.
    console: Option<OwnedFd>,
    /// Whether init is its pid namespace's first process; known from create,
    /// read from the spec for a loaded container.
    own_pid_namespace: Option<bool>,
}

/// A process started in a running container.
pub struct ExecProcess {
    pub pid: i32,
    /// The console's master when the process has a terminal.
    pub console: Option<OwnedFd>,
}

fn valid_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id.chars().all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSpec {
            bundle: PathBuf::new(),
            reason: format!("container id {id:?} must be letters, digits and ._-+ only"),
        })
    }
}

/// Undo a half-made container: kill init, drop its cgroup (and unit), state
/// and the rootfs layers mounted on the host.
struct CreateGuard {
    pid: Option<i32>,
    cgroup: Option<Cgroup>,
    unit: Option<String>,
    dir: Option<PathBuf>,
    layers: Option<PathBuf>,
}

impl CreateGuard {
    fn disarm(mut self) {
        self.pid = None;
        self.cgroup = None;
        self.unit = None;
        self.dir = None;
        self.layers = None;
    }
}

impl Drop for CreateGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            // SAFETY: kill(2); the pid is our unreaped child, so it cannot be recycled.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if let Some(cg) = &self.cgroup {
            cg.kill_all(Duration::from_secs(2));
        }
        if let Some(unit) = &self.unit {
            let _ = systemd::stop(unit);
        }
        if let Some(cg) = &self.cgroup {
            let _ = cg.remove();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(pid) = self.pid {
            reap_killed(pid);
        }
        if let Some(target) = &self.layers {
            let _ = unmount_all(target);
        }
    }
}

/// Set the spec's limits on the (made) cgroup; the warnings say what could
/// not be applied.
fn limit(cgroup: &Cgroup, resources: Option<&LinuxResources>) -> Result<Vec<String>> {
    Ok(resources.map(|r| cgroup.apply(r)).transpose()?.unwrap_or_default())
}

/// Reap our child `pid`, killed: a zombie would stay in the container's
/// cgroup (in `ps`, `docker top`) until the caller's reaper got to it.
/// Bounded, as a frozen process dies late; a subreaping caller may have
/// reaped it already (ECHILD ends the wait).
fn reap_killed(pid: i32) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    for _ in 0..400 {
        match waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(5)),
            _ => return,
        }
    }
}

impl Container {
    pub fn create(id: &str, bundle: &Path, opts: CreateOptions) -> Result<Container> {
        valid_id(id)?;
        let mut spec = spec::load_spec(bundle)?;
        if let Some(mut process) = spec.process().clone().filter(|_| !opts.extra_env.is_empty()) {
            let mut env = process.env().clone().unwrap_or_default();
            env.extend(opts.extra_env.iter().cloned());
            process.set_env(Some(env));
            spec.set_process(Some(process));
        }
        let dir = make_state_dir(&opts.state_root, id)?;
        let ns = Namespaces::from_spec(&spec);
        let cgroups_path = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
        // Checked before anything runs; a systemd unit needs the init's pid.
        let placement = match opts.cgroup_driver {
            CgroupDriver::Cgroupfs => Cgroup::resolve(cgroups_path.as_deref(), id).map(Placement::Cgroupfs),
            CgroupDriver::Systemd => UnitPath::parse(cgroups_path.as_deref(), id)
                .map(Placement::Systemd)
                .map_err(|reason| Error::InvalidSpec { bundle: bundle.into(), reason }),
        };
        let mut guard = CreateGuard { pid: None, cgroup: None, unit: None, dir: Some(dir.clone()), layers: None };
        let placement = placement?;
        let rootfs = spec::rootfs_path(bundle, &spec);
        let mut layers = opts.rootfs_mounts;
        if !layers.is_empty() && layers::place(&spec, &ns, &layers) == layers::Place::Host {
            guard.layers = Some(layers::mount_on_host(id, bundle, &layers)?);
            layers.clear();
        }

        let gated = ns.creates(LinuxNamespaceType::User);
        let pidns = match &ns.pid_path {
            Some(path) => Some(open_namespace(id, LinuxNamespaceType::Pid, path)?),
            None => None,
        };
        // Init opens no namespace by path: the ones to join go with its request.
        let mut joins = ns.joins.clone();
        let mut join_fds: Vec<OwnedFd> =
            joins.iter().map(|(typ, path)| open_namespace(id, *typ, path).map(OwnedFd::from)).collect::<Result<_>>()?;
        // The namespaces made anew must belong to a user namespace the
        // container joins (a pod's), or its root could not use them (mount,
        // bring lo up): they are made after the join. Init unshares them;
        // a new pid namespace, which its first process must be cloned into,
        // comes from an intermediate that joins the user namespace first.
        let mut birth = Birth { clone_flags: ns.clone_flags, gated, in_user: None, cgroup: None };
        let mut unshare = 0;
        let joined_user = joins.first().is_some_and(|(t, _)| *t == LinuxNamespaceType::User);
        let user_fd = if joined_user && ns.creates(LinuxNamespaceType::Pid) {
            joins.remove(0);
            Some(join_fds.remove(0))
        } else {
            None
        };
        if joined_user {
            let new_pid = ns.clone_flags & LinuxNamespaceType::Pid as u64;
            (birth.clone_flags, unshare) = (new_pid, ns.clone_flags & !new_pid);
            birth.in_user = user_fd.as_ref().map(|fd| fd.as_fd());
        }
        let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
        // Init is born in its cgroup where it can be (cgroup/birth.rs); rootless,
        // the cgroup may not be ours to make, and an intermediate is born where
        // we are.
        let born_in = match &placement {
            Placement::Cgroupfs(cgroup) if birth.in_user.is_none() && !crate::rootless::is_rootless() => {
                guard.cgroup = Some(cgroup.clone());
                cgroup.create()?;
                cgroup.birthplace()?
            }
            _ => None,
        };
        birth.cgroup = born_in.as_ref();
        let mut child = spawn(pidns.as_ref(), birth, &opts.stdio).ctx(id, || "start container init".into())?;
        guard.pid = Some(child.pid);
        // Only the init holds the container's stdio from here on.
        drop(opts.stdio);

        if gated {
            write_id_maps(id, child.pid, &spec)?;
        }
        child.release().ctx(id, || "release init".into())?;
        // Kills counted before ours (a cgroupsPath shared with an earlier
        // container) are read before init can be OOM-killed in it.
        let (cgroup, mut warnings, oom_before) = match (born_in, placement) {
            (Some(_), Placement::Cgroupfs(cgroup)) => {
                // The limits follow init in, as with runc: a thread of ours passed
                // through a v1 cgroup, which a pids limit would count and a devices
                // one confine, and init runs nothing of the container's before its
                // request.
                let oom_before = cgroup.oom_kills();
                let warnings = limit(&cgroup, resources)?;
                (cgroup, warnings, oom_before)
            }
            (_, placement) => {
                let (cgroup, mut warnings) = match placement {
                    Placement::Cgroupfs(cgroup) => (cgroup, Vec::new()),
                    Placement::Systemd(path) => {
                        // The unit starts with init in it and systemd's share of the limits.
                        guard.unit = Some(path.unit.clone());
                        systemd::start(&path, child.pid, resources, id)?
                    }
                };
                guard.cgroup = Some(cgroup.clone());
                // Rootless, the cgroup is made where the user may, and the limits are
                // checked against what was made (cgroup/rootless.rs).
                let cgroup = if crate::rootless::is_rootless() && guard.unit.is_none() {
                    let (made, refused) = cgroup.create_where_permitted()?;
                    guard.cgroup = Some(made.clone());
                    if let Some(given) = resources.map(|r| made.rootless_resources(r, &refused)).transpose()? {
                        warnings.extend(made.apply(&given)?);
                    }
                    made
                } else {
                    // Moved in, init is limited from its first moment there.
                    cgroup.create()?;
                    warnings.extend(limit(&cgroup, resources)?);
                    cgroup
                };
                let oom_before = cgroup.oom_kills();
                cgroup.add(child.pid)?;
                (cgroup, warnings, oom_before)
            }
        };

        let runtime_hooks = |pid: i32| {
            let state = HookState::new(&spec, id, bundle, "creating", Some(pid));
            run_hooks(HookKind::Prestart, &spec, &state, false)?;
            run_hooks(HookKind::CreateRuntime, &spec, &state, false).map(drop)
        };
        let (detached, mut fds): (Vec<usize>, Vec<OwnedFd>) =
            crate::idmap::prepare(&spec).map_err(|message| Error::Init { id: id.into(), message })?.into_iter().unzip();
        fds.extend(join_fds);
        let request = InitRequest::Create(CreateRequest {
            id: id.into(),
            spec: spec.clone(),
            rootfs: rootfs.clone(),
            bundle: bundle.into(),
            setup: opts.setup,
            detached,
            joins,
            unshare,
            layers,
        });
        let duties = Duties {
            hooks: &|| runtime_hooks(child.pid),
            listener: &|fd| listen(&spec, id, bundle, "creating", child.pid, fd),
        };
        let (init_warnings, console) = handshake(id, &mut child.channel, request, &fds, &duties)
            .map_err(|e| oom_during_setup(e, &cgroup, oom_before, resources))?;
        drop(fds);
        warnings.extend(init_warnings);
        let state = State {
            id: id.into(),
            bundle: bundle.to_path_buf(),
            rootfs,
            pid: child.pid,
            pid_start: proc_stat::start_time(child.pid).ctx(id, || format!("read start time of {}", child.pid))?,
            status: Status::Created,
            cgroups: cgroup.dirs().to_vec(),
            systemd_unit: guard.unit.clone(),
        };
        state.save(&dir).ctx(id, || format!("save state in {}", dir.display()))?;
        guard.disarm();
        let own_pid_namespace = Some(ns.creates(LinuxNamespaceType::Pid));
        Ok(Container { state, dir, channel: Some(child.channel), warnings, console, own_pid_namespace })
    }

    /// Let init exec the user's process. Fails with init's own message when the
    /// exec does.
    pub fn start(&mut self) -> Result<()> {
        let id = self.state.id.clone();
        let spec = spec::load_spec(&self.state.bundle)?;
        match (&self.state.status, self.channel.as_mut()) {
            (Status::Created, Some(channel)) => {
                let (bundle, pid) = (&self.state.bundle, self.state.pid);
                let duties = Duties { hooks: &|| Ok(()), listener: &|fd| listen(&spec, &id, bundle, "created", pid, fd) };
                release(&id, channel, &duties)?;
                self.channel = None;
            }
            // Created by another process, which detached: init waits on the exec FIFO.
            (Status::Created, None) => {
                let (pid, started) = (self.state.pid, self.state.pid_start);
                let outcome = exec_fifo::release(&self.dir, || proc_stat::is_same_process(pid, started))
                    .ctx(&id, || format!("open {}'s exec FIFO", self.dir.display()))?;
                exec_fifo::remove(&self.dir);
                match outcome {
                    exec_fifo::Outcome::Started => {}
                    exec_fifo::Outcome::Failed(message) => return Err(Error::Init { id, message }),
                    exec_fifo::Outcome::InitGone => return Err(Error::Init { id, message: "container init exited before start".into() }),
                }
            }
            (status, _) => {
                return Err(Error::WrongState { id, status: status.to_string(), action: "start", needed: "created" })
            }
        }
        self.state.status = Status::Running;
        self.state.save(&self.dir).ctx(&id, || "save state".into())?;
        // As runc: a failed poststart hook fails the start, and the container
        // does not keep running unseen.
        let state = HookState::new(&spec, &id, &self.state.bundle, "running", Some(self.state.pid));
        run_hooks(HookKind::Poststart, &spec, &state, false).map(drop).map_err(|message| {
            let _ = self.kill(libc::SIGKILL, true);
            Error::Init { id: id.clone(), message }
        })
    }

    /// Leave init waiting for a `start` from another process, as runc's CLI
    /// does between `create` and `start`: init blocks on the exec FIFO in the
    /// state dir until [`Container::start`] of the container loaded there
    /// opens it. This process may exit meanwhile (init then belongs to the
    /// caller's subreaper).
    pub fn detach(&mut self) -> Result<()> {
        let id = self.state.id.clone();
        let Some(mut channel) = self.channel.take().filter(|_| self.state.status == Status::Created) else {
            let status = self.state.status.to_string();
            return Err(Error::WrongState { id, status, action: "detach", needed: "created by this process" });
        };
        let fifo = exec_fifo::make(&self.dir).ctx(&id, || format!("make the exec FIFO in {}", self.dir.display()))?;
        channel.send(&ParentMessage::StartOnFifo).ctx(&id, || "tell init to wait for start".into())?;
        channel.send_fd(fifo.as_raw_fd()).ctx(&id, || "send init the exec FIFO".into())
    }

    /// Run `process` in the running container: a new process that joins all
    /// its namespaces and its cgroup. Returns its pid once the user's program
    /// runs (a missing binary or bad user fails here, with init's message).
    pub fn exec(&self, process: &Process, stdio: Stdio) -> Result<ExecProcess> {
        let id = &self.state.id;
        let init = self.state.pid;
        if !proc_stat::is_same_process(init, self.state.pid_start) {
            return Err(Error::WrongState { id: id.clone(), status: "stopped".into(), action: "exec", needed: "running" });
        }
        let mut namespaces = namespaces_of(init).ctx(id, || format!("open the namespaces of {init}"))?;
        // Opened by pid: make sure it still was our init, not a reused pid.
        if !proc_stat::is_same_process(init, self.state.pid_start) {
            return Err(Error::WrongState { id: id.clone(), status: "stopped".into(), action: "exec", needed: "running" });
        }
        let pidns = namespaces.iter().position(|(t, ..)| *t == LinuxNamespaceType::Pid).map(|i| namespaces.remove(i).2);
        let (names, fds): (Vec<_>, Vec<OwnedFd>) =
            namespaces.into_iter().map(|(typ, path, file)| ((typ, path), OwnedFd::from(file))).unzip();
        // Born in the container's cgroup where it can be (cgroup/birth.rs).
        let cgroup = self.cgroup();
        let birthplace = cgroup.birthplace()?;
        let birth = Birth { cgroup: birthplace.as_ref(), ..Default::default() };
        let mut child =
            spawn(pidns.as_ref(), birth, &stdio).ctx(id, || "start exec process".into())?;
        drop(stdio);
        let guard = CreateGuard { pid: Some(child.pid), cgroup: None, unit: None, dir: None, layers: None };
        if let Some(list) = process.exec_cpu_affinity().as_ref().and_then(|a| a.initial().as_deref()) {
            let cpus = crate::affinity::parse_cpu_list(list)
                .map_err(|e| Error::Init { id: id.clone(), message: format!("process.execCPUAffinity.initial: {e}") })?;
            crate::affinity::set(child.pid, &cpus).ctx(id, || format!("set process.execCPUAffinity.initial {list:?}"))?;
        }
        // The container's cgroup exists (and is set up): just move in.
        if birthplace.is_none() {
            cgroup.add(child.pid)?;
        }
        // The container's seccomp profile and personality apply to its execs too (as runc).
        let spec = spec::load_spec(&self.state.bundle)?;
        let linux = spec.linux();
        let request = InitRequest::Exec {
            id: id.clone(),
            process: process.clone(),
            namespaces: names,
            seccomp: linux.as_ref().and_then(|l| l.seccomp().clone()),
            personality: linux.as_ref().and_then(|l| l.personality().clone()),
        };
        let bundle = &self.state.bundle;
        let duties = Duties { hooks: &|| Ok(()), listener: &|fd| listen(&spec, id, bundle, "running", child.pid, fd) };
        let (_, console) = handshake(id, &mut child.channel, request, &fds, &duties)?;
        release(id, &mut child.channel, &duties)?;
        guard.disarm();
        Ok(ExecProcess { pid: child.pid, console })
    }

    /// Apply new resources to the running container (Task.Update). Returns
    /// warnings about what could not be applied.
    pub fn update(&self, resources: &oci_spec::runtime::LinuxResources) -> Result<Vec<String>> {
        let mut warnings = match &self.state.systemd_unit {
            Some(unit) => systemd::update(unit, resources)?,
            None => Vec::new(),
        };
        let cgroup = self.cgroup();
        if crate::rootless::is_rootless() && self.state.systemd_unit.is_none() {
            warnings.extend(cgroup.apply(&cgroup.rootless_resources(resources, &[])?)?);
        } else {
            warnings.extend(cgroup.apply(resources)?);
        }
        Ok(warnings)
    }

    /// Usage figures of the container's cgroup.
    pub fn stats(&self) -> crate::cgroup::CgroupStats {
        self.cgroup().stats()
    }

    /// Freeze every process of the container (cgroup freezer).
    pub fn pause(&self) -> Result<()> {
        self.cgroup().freeze(true)
    }

    pub fn resume(&self) -> Result<()> {
        self.cgroup().freeze(false)
    }

    /// Signal init, or with `all` every process of the container.
    pub fn kill(&self, signal: i32, all: bool) -> Result<()> {
        let id = &self.state.id;
        if all && !self.state.cgroups.is_empty() {
            for pid in self.cgroup().procs() {
                // SAFETY: kill(2).
                unsafe { libc::kill(pid, signal) };
            }
            self.thaw_for_sigkill(signal);
            return Ok(());
        }
        if all && self.owns_pid_namespace()? {
            // No cgroup (rootless without delegation): the processes of the
            // container's own pid namespace are all of it.
            crate::pidns::signal_members(self.state.pid, self.state.pid_start, signal)
                .ctx(id, || format!("signal {signal} to the processes of {}'s pid namespace", self.state.pid))?;
            return Ok(());
        }
        if !proc_stat::is_same_process(self.state.pid, self.state.pid_start) {
            return Err(Error::NotFound { id: format!("{id} (process {} has exited)", self.state.pid) });
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.state.pid),
            nix::sys::signal::Signal::try_from(signal)
                .map_err(|e| Error::Sys { id: id.clone(), what: format!("signal {signal}"), source: e.into() })?,
        )
        .ctx(id, || format!("signal {signal} to {}", self.state.pid))?;
        self.thaw_for_sigkill(signal);
        Ok(())
    }

    /// Once init exited: kill what is left of the container when init was
    /// not its pid namespace's first process (it shares a pod's or the
    /// host's; otherwise the kernel killed the rest already), and wait until
    /// it is gone, as runc-v2 does before it reports the exit. Processes left
    /// would hold the container's stdout, and the client would never see its
    /// end.
    pub fn kill_remaining(&self) -> Result<()> {
        if !self.owns_pid_namespace()? {
            let cgroup = self.cgroup();
            let _ = cgroup.freeze(false);
            cgroup.kill_all(Duration::from_secs(2));
        }
        Ok(())
    }

    fn owns_pid_namespace(&self) -> Result<bool> {
        Ok(match self.own_pid_namespace {
            Some(own) => own,
            None => Namespaces::from_spec(&spec::load_spec(&self.state.bundle)?).creates(LinuxNamespaceType::Pid),
        })
    }

    /// A frozen process does not die of SIGKILL until thawed: a kill of a
    /// paused container thaws it (as runc), so that it really goes away.
    fn thaw_for_sigkill(&self, signal: i32) {
        if signal == libc::SIGKILL {
            let _ = self.cgroup().freeze(false);
        }
    }

    /// Remove the container: whatever still runs in it is killed, its cgroup
    /// (and systemd unit) and state are removed, then the poststop hooks run.
    /// Reaping stays with the caller. Returns the hooks' failures, which the
    /// spec makes warnings, and a unit systemd would not stop.
    pub fn delete(self) -> Result<Vec<String>> {
        if proc_stat::is_same_process(self.state.pid, self.state.pid_start) {
            // SAFETY: kill(2) of the verified init.
            unsafe { libc::kill(self.state.pid, libc::SIGKILL) };
        }
        let cgroup = self.cgroup();
        cgroup.kill_all(Duration::from_millis(100));
        // A frozen (paused) process only dies once thawed.
        let _ = cgroup.freeze(false);
        cgroup.kill_all(Duration::from_secs(5));
        // systemd removes its own directories; the others are ours. A unit
        // systemd cannot stop now (it is unreachable) goes once it is empty.
        let mut warnings = Vec::new();
        if let Some(Err(e)) = self.state.systemd_unit.as_deref().map(systemd::stop) {
            warnings.push(e.to_string());
        }
        cgroup.remove()?;
        std::fs::remove_dir_all(&self.dir).ctx(&self.state.id, || format!("remove {}", self.dir.display()))?;
        // The bundle may be gone already (a `shim delete` long after): then
        // there is no spec, and no hook to run.
        let Ok(spec) = spec::load_spec(&self.state.bundle) else { return Ok(warnings) };
        let state = HookState::new(&spec, &self.state.id, &self.state.bundle, "stopped", None);
        warnings.extend(run_hooks(HookKind::Poststop, &spec, &state, true).unwrap_or_else(|e| vec![e]));
        Ok(warnings)
    }

    /// The container as persisted by `create`, e.g. for `shim delete` after the
    /// shim died.
    pub fn load(state_root: &Path, id: &str) -> Result<Container> {
        valid_id(id)?;
        let dir = state_root.join(id);
        let state = match State::load(&dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotFound { id: id.into() }),
            other => other.ctx(id, || format!("load state from {}", dir.display()))?,
        };
        Ok(Container { state, dir, channel: None, warnings: Vec::new(), console: None, own_pid_namespace: None })
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// The runtime-spec's status: `created` until started, `stopped` once
    /// init is gone, `paused` while frozen, else `running`.
    pub fn status(&self) -> &'static str {
        if !proc_stat::is_running(self.state.pid, self.state.pid_start) {
            "stopped"
        } else if self.state.status == Status::Created {
            "created"
        } else if self.cgroup().is_frozen() {
            "paused"
        } else {
            "running"
        }
    }

    pub fn pid(&self) -> i32 {
        self.state.pid
    }

    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The console's master (process.terminal); only the first call gets it.
    pub fn take_console(&mut self) -> Option<OwnedFd> {
        self.console.take()
    }

    pub fn cgroup(&self) -> Cgroup {
        Cgroup::from_dirs(self.state.cgroups.clone())
    }

    /// Pids of every process in the container: its cgroup's, or without one
    /// (rootless) its own pid namespace's, or just init.
    pub fn pids(&self) -> Vec<i32> {
        if !self.state.cgroups.is_empty() {
            return self.cgroup().procs();
        }
        match self.owns_pid_namespace() {
            Ok(true) => crate::pidns::members(self.state.pid, self.state.pid_start),
            _ => vec![self.state.pid].into_iter().filter(|p| proc_stat::is_same_process(*p, self.state.pid_start)).collect(),
        }
    }
}

/// `<state_root>/<id>`, new: the state is the runtime's alone (init reaches
/// the exec FIFO by fd).
fn make_state_dir(state_root: &Path, id: &str) -> Result<PathBuf> {
    let dir = state_root.join(id);
    std::fs::create_dir_all(state_root).ctx(id, || format!("create {}", state_root.display()))?;
    match std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700).create(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::AlreadyExists { id: id.into() }),
        other => other.ctx(id, || format!("create {}", dir.display())).map(|()| dir),
    }
}

/// Where the container's cgroup will be, known before its init exists.
enum Placement {
    Cgroupfs(Cgroup),
    Systemd(UnitPath),
}

/// What init may ask of us while it sets up or starts: the runtime's hooks
/// (before its pivot_root), or passing its seccomp listener fd on.
struct Duties<'a> {
    hooks: &'a dyn Fn() -> std::result::Result<(), String>,
    listener: &'a dyn Fn(OwnedFd) -> std::result::Result<(), String>,
}

impl Duties<'_> {
    /// Read init's messages, doing what it asks, until one that is not a duty:
    /// that one is returned (None at EOF).
    fn serve(&self, id: &str, channel: &mut Channel) -> Result<Option<InitReply>> {
        loop {
            match channel.recv::<InitReply>().ctx(id, || "read init's reply".into())? {
                Some(InitReply::RunHooks) => {
                    (self.hooks)().map_err(|message| Error::Init { id: id.into(), message })?;
                    channel.send(&ParentMessage::HooksDone).ctx(id, || "resume init after hooks".into())?;
                }
                Some(InitReply::SeccompListener) => {
                    let fd = channel.recv_fd().ctx(id, || "receive the seccomp listener fd".into())?;
                    (self.listener)(fd).map_err(|message| Error::Init { id: id.into(), message })?;
                    channel.send(&ParentMessage::SeccompListenerDone).ctx(id, || "resume init after seccomp".into())?;
                }
                other => return Ok(other),
            }
        }
    }
}

/// What an init that died without a message (a signal) leaves us to say.
const INIT_DIED: &str = "container init exited during setup";

/// An init dead without a message: say so when the OOM killer took it (the
/// spec's memory limit too low for setting the container up), as runc does.
fn oom_during_setup(e: Error, cgroup: &Cgroup, before: Option<u64>, resources: Option<&LinuxResources>) -> Error {
    // Init's death shows as its channel closing (EOF) or reset under a
    // read or write, depending on when the kill came.
    let died = |e: &Error| match e {
        Error::Init { message, .. } => message == INIT_DIED,
        Error::Sys { .. } => true,
        _ => false,
    };
    match e {
        Error::Init { ref id, .. } | Error::Sys { ref id, .. } if died(&e) && cgroup.oom_kills() > before => {
            let id = id.clone();
            let limit = resources.and_then(|r| r.memory().as_ref()).and_then(|m| m.limit());
            let hint = limit.map(|l| format!(": is linux.resources.memory.limit {l} too low?")).unwrap_or_default();
            Error::Init { id, message: format!("container init was killed by the OOM killer during setup{hint}") }
        }
        other => other,
    }
}

/// Send init its request (and `fds`, which it announces) and serve it until it
/// is ready (a failure of a duty is the container's error).
fn handshake(
    id: &str,
    channel: &mut Channel,
    request: InitRequest,
    fds: &[OwnedFd],
    duties: &Duties,
) -> Result<(Vec<String>, Option<OwnedFd>)> {
    channel.send(&request).ctx(id, || "send spec to init".into())?;
    for fd in fds {
        channel.send_fd(fd.as_raw_fd()).ctx(id, || "send a mount to init".into())?;
    }
    match duties.serve(id, channel)? {
        Some(InitReply::Ready { warnings, console: false }) => Ok((warnings, None)),
        Some(InitReply::Ready { warnings, console: true }) => {
            let master = channel.recv_fd().ctx(id, || "receive the console".into())?;
            Ok((warnings, Some(master)))
        }
        Some(InitReply::Failed { message }) => Err(Error::Init { id: id.into(), message }),
        // Duties are served above; nothing else may come before Ready.
        Some(_) => Err(Error::Init { id: id.into(), message: "init answered out of turn".into() }),
        None => Err(Error::Init { id: id.into(), message: INIT_DIED.into() }),
    }
}

/// Pass process `pid`'s seccomp listener fd to the spec's listenerPath.
fn listen(spec: &Spec, id: &str, bundle: &Path, status: &'static str, pid: i32, fd: OwnedFd) -> std::result::Result<(), String> {
    let state = HookState::new(spec, id, bundle, status, Some(pid));
    crate::seccomp_listener::send(spec, pid, &state, fd)
}

/// Run the runtime's own hooks of `kind` (see hooks): in a runner, our binary
/// re-executed in our namespaces, so that we never wait for a hook ourselves
/// (a subreaping caller's waitpid(-1) could take its status first). Returns
/// the failures as warnings with `all`; without, the first is the error.
fn run_hooks(kind: HookKind, spec: &Spec, state: &HookState, all: bool) -> std::result::Result<Vec<String>, String> {
    let hooks = kind.of(spec);
    if hooks.is_empty() {
        return Ok(Vec::new());
    }
    let request = InitRequest::Hooks { kind, hooks: hooks.to_vec(), state: hooks::encode(kind, state)?, all };
    match in_runner("hook runner", &request, &[])? {
        RunnerAnswer::Ready(warnings) => Ok(warnings),
        RunnerAnswer::Restored { .. } => Err("the hook runner answered out of turn".into()),
    }
}

/// What a runner did: its warnings, or a restored container's init.
enum RunnerAnswer {
    Ready(Vec<String>),
    Restored { pid: i32, console: Option<OwnedFd> },
}

/// Have a runner (our binary re-executed in our namespaces, single-threaded)
/// do `request` with `fds`, and wait for its answer, or its failure.
fn in_runner(what: &str, request: &InitRequest, fds: &[OwnedFd]) -> std::result::Result<RunnerAnswer, String> {
    let mut runner = spawn(None, Default::default(), &Stdio::default())
        .map_err(|e| format!("start the {what}: {e}"))?;
    let sent = runner.channel.send(request);
    let sent = fds.iter().fold(sent, |sent, fd| sent.and_then(|()| runner.channel.send_fd(fd.as_raw_fd())));
    let reply = sent.and_then(|()| runner.channel.recv::<InitReply>());
    let answer = match reply {
        Ok(Some(InitReply::Ready { warnings, .. })) => Ok(RunnerAnswer::Ready(warnings)),
        Ok(Some(InitReply::Restored { pid, console })) => {
            let console = console.then(|| runner.channel.recv_fd()).transpose().map_err(|e| format!("{what}: {e}"));
            console.map(|console| RunnerAnswer::Restored { pid, console })
        }
        Ok(Some(InitReply::Failed { message })) => Err(message),
        Ok(_) => Err(format!("the {what} exited without an answer")),
        Err(e) => Err(format!("{what}: {e}")),
    };
    // The runner exits once it answered; a subreaping caller may reap it first.
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(runner.pid), None);
    answer
}

fn open_namespace(id: &str, typ: LinuxNamespaceType, path: &Path) -> Result<File> {
    File::open(path).ctx(id, || format!("open {typ} namespace {}", path.display()))
}

/// The namespaces of `pid` that differ from ours, open: what an exec must
/// join (with their /proc path, for messages).
fn namespaces_of(pid: i32) -> std::io::Result<Vec<(LinuxNamespaceType, PathBuf, File)>> {
    use crate::procfs::{self, Base};
    use LinuxNamespaceType as T;
    let mut out = Vec::new();
    // User first: joining it decides what the others may be joined with.
    for (typ, name) in [
        (T::User, "user"),
        (T::Mount, "mnt"),
        (T::Network, "net"),
        (T::Ipc, "ipc"),
        (T::Uts, "uts"),
        (T::Pid, "pid"),
        (T::Cgroup, "cgroup"),
        (T::Time, "time"),
    ] {
        let link = format!("ns/{name}");
        // A kernel without this namespace type has no link.
        let Ok(target) = procfs::readlink(Base::Pid(pid), &link) else { continue };
        if procfs::readlink(Base::OwnProcess, &link).ok().as_ref() != Some(&target) {
            let file = procfs::open_link(Base::Pid(pid), &link, pathrs::flags::OpenFlags::O_RDONLY)?;
            out.push((typ, PathBuf::from(format!("/proc/{pid}/{link}")), file));
        }
    }
    Ok(out)
}

/// Tell a prepared init to exec, and wait until it did: EOF on the channel
/// (close-on-exec) means the user's process runs, a message says why not.
fn release(id: &str, channel: &mut Channel, duties: &Duties) -> Result<()> {
    channel.send(&ParentMessage::Start).ctx(id, || "tell init to start".into())?;
    match duties.serve(id, channel)? {
        None => Ok(()),
        Some(InitReply::Failed { message }) => Err(Error::Init { id: id.into(), message }),
        Some(_) => Err(Error::Init { id: id.into(), message: "init answered start out of turn".into() }),
    }
}

fn write_id_maps(id: &str, pid: i32, spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    let maps: [(&str, Option<&Vec<LinuxIdMapping>>); 2] = [
        ("uid_map", linux.and_then(|l| l.uid_mappings().as_ref())),
        ("gid_map", linux.and_then(|l| l.gid_mappings().as_ref())),
    ];
    for (file, map) in maps {
        let text: String = map
            .into_iter()
            .flatten()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect();
        if text.is_empty() {
            return Err(Error::InvalidSpec {
                bundle: PathBuf::new(),
                reason: format!("a new user namespace needs linux.{}", if file == "uid_map" { "uidMappings" } else { "gidMappings" }),
            });
        }
        crate::procfs::write(crate::procfs::Base::Pid(pid), file, text.as_bytes()).ctx(id, || format!("set {file}"))?;
    }
    Ok(())
}
