//! The processes of a task as the shim tracks them: the container's init and
//! the exec processes added to it.
//!
//! Both share a [`ProcessCore`]: a lifecycle of created -> running -> stopped.
//! The exit can be observed by the reaper at any moment (even while Start still
//! waits for the exec to be confirmed), so the status is *derived* from facts
//! that are each set once — "started" and "exit" — rather than stored as a
//! third state that could disagree with them. Transitions that must reach
//! containerd in order (TaskStart before TaskExit) hold `lifecycle` while they
//! publish.

use crate::errors::{self, from_runtime, status};
use containerd_shim_protos::api::Status;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use crate::stdio::ProcessIo;
use ttrpc::Code;

#[derive(Clone, Debug)]
pub struct Exit {
    pub status: u32,
    pub at: Timestamp,
}

pub struct Stdio {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
}

/// How long an exit waits for the process's output to be taken.
const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What init and exec processes have in common.
pub struct ProcessCore {
    /// 0 until the process exists.
    pid: AtomicI32,
    started: AtomicBool,
    /// Set by the reaper as soon as the pid is collected (before `exit` is
    /// published): from then on the pid may belong to someone else.
    reaped: AtomicBool,
    /// The container's cgroup is frozen (its execs are in it, so theirs too).
    paused: AtomicBool,
    exit: watch::Sender<Option<Exit>>,
    io: Mutex<ProcessIo>,
    pub stdio: Stdio,
    pub lifecycle: tokio::sync::Mutex<()>,
}

impl ProcessCore {
    pub fn new(stdio: Stdio) -> ProcessCore {
        ProcessCore {
            pid: AtomicI32::new(0),
            started: AtomicBool::new(false),
            reaped: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            exit: watch::channel(None).0,
            io: Mutex::new(ProcessIo::default()),
            stdio,
            lifecycle: tokio::sync::Mutex::new(()),
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid.load(Ordering::Acquire)
    }

    fn set_pid(&self, pid: i32) {
        self.pid.store(pid, Ordering::Release);
    }

    fn set_io(&self, io: ProcessIo) {
        *lock(&self.io) = io;
    }

    /// Wait (a bounded time) until a console's output is copied out, and
    /// until what the process wrote to its output FIFOs is read, so that the
    /// exit is published after the last output, as a client expects.
    pub async fn drain_output(&self) {
        let (copy, fifos) = {
            let mut io = lock(&self.io);
            (io.output_copy.take(), std::mem::take(&mut io.output_fifos))
        };
        if let Some(copy) = copy {
            let _ = tokio::time::timeout(OUTPUT_DRAIN_TIMEOUT, copy).await;
        }
        crate::stdio::wait_until_read(fifos, OUTPUT_DRAIN_TIMEOUT).await;
    }

    pub fn has_console(&self) -> bool {
        lock(&self.io).console.is_some()
    }

    /// Resize the process's terminal. Without one — it never had one, or it
    /// exited and the console went with it (ctr resizes right after start,
    /// which may come after a short process's exit) — there is nothing to
    /// resize, and that is no error (as runc-v2).
    pub fn resize(&self, width: u32, height: u32) -> std::io::Result<()> {
        match &lock(&self.io).console {
            Some(console) => crate::stdio::resize(console, width, height),
            None => Ok(()),
        }
    }

    pub fn status(&self) -> Status {
        if self.exit.borrow().is_some() {
            Status::STOPPED
        } else if self.paused.load(Ordering::Acquire) {
            Status::PAUSED
        } else if self.started.load(Ordering::Acquire) {
            Status::RUNNING
        } else {
            Status::CREATED
        }
    }

    pub fn exit(&self) -> Option<Exit> {
        self.exit.borrow().clone()
    }

    pub fn mark_reaped(&self) {
        self.reaped.store(true, Ordering::Release);
    }

    pub fn set_exited(&self, status: u32) -> Exit {
        self.mark_reaped();
        let exit = Exit { status, at: crate::events::now() };
        self.exit.send_replace(Some(exit.clone()));
        // Nothing reads stdin or needs resizing any more.
        self.close_stdin();
        lock(&self.io).console = None;
        exit
    }

    pub async fn wait(&self) -> Exit {
        let mut rx = self.exit.subscribe();
        let exit = rx.wait_for(|e| e.is_some()).await.map(|e| e.clone());
        // The sender lives as long as `self`, so the wait cannot fail.
        exit.ok().flatten().expect("exit sender outlives waiters")
    }

    pub fn close_stdin(&self) {
        if let Some(copy) = lock(&self.io).stdin_copy.take() {
            copy.abort();
        }
    }

    fn wrong_state(&self, what: &str, action: &str) -> ttrpc::Error {
        let st = format!("{:?}", self.status()).to_lowercase();
        status(Code::FAILED_PRECONDITION, format!("{what}: cannot {action} a {st} process"))
    }
}

/// CRIU as the runtime options name it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Criu {
    pub program: PathBuf,
    /// Where a checkpoint goes when the request names no path.
    pub image_dir: Option<PathBuf>,
    pub work_dir: Option<PathBuf>,
}

/// A container Create was given a checkpoint for: restored at Start (as
/// runc-v2's created-checkpoint state), with the stdio Create opened.
pub struct PendingRestore {
    pub image_dir: PathBuf,
    pub create: runtime_core::CreateOptions,
}

pub struct InitProcess {
    pub id: String,
    pub bundle: String,
    pub core: ProcessCore,
    /// Where the rootfs it got in Create is mounted on our side, if it is
    /// (runtime-core's container/layers.rs), or was for a restore: unmounted
    /// on delete, which is a no-op when the layers are in the container's
    /// own mount namespace.
    rootfs_mount: Option<PathBuf>,
    container: Mutex<Option<runtime_core::Container>>,
    /// Until Start, when Create got a checkpoint (the container is None).
    restore: Mutex<Option<PendingRestore>>,
    criu: Criu,
    /// Owner of the stdio of its execs (runtime options IoUid/IoGid).
    io_owner: Option<(u32, u32)>,
}

/// What an InitProcess is made from, beyond its container.
pub struct InitSetup {
    pub bundle: String,
    pub stdio: Stdio,
    pub rootfs_mount: Option<PathBuf>,
    pub io: ProcessIo,
    pub io_owner: Option<(u32, u32)>,
    pub criu: Criu,
}

impl InitProcess {
    pub fn new(container: runtime_core::Container, setup: InitSetup) -> InitProcess {
        let id = container.state().id.clone();
        let init = InitProcess::with(id, setup, None);
        init.core.set_pid(container.pid());
        *lock(&init.container) = Some(container);
        init
    }

    /// A container to restore from a checkpoint at Start; its pid is 0 until then.
    pub fn restoring(id: String, setup: InitSetup, restore: PendingRestore) -> InitProcess {
        InitProcess::with(id, setup, Some(restore))
    }

    fn with(id: String, setup: InitSetup, restore: Option<PendingRestore>) -> InitProcess {
        let core = ProcessCore::new(setup.stdio);
        core.set_io(setup.io);
        InitProcess {
            id,
            bundle: setup.bundle,
            core,
            rootfs_mount: setup.rootfs_mount,
            container: Mutex::new(None),
            restore: Mutex::new(restore),
            criu: setup.criu,
            io_owner: setup.io_owner,
        }
    }

    fn wrong_state(&self, action: &str) -> ttrpc::Error {
        self.core.wrong_state(&format!("container {}", self.id), action)
    }

    /// Let the user's process run, or restore it from the checkpoint Create
    /// got. The caller holds `core.lifecycle`.
    pub async fn start(self: &Arc<Self>) -> ttrpc::Result<()> {
        if self.core.status() != Status::CREATED {
            return Err(self.wrong_state("start"));
        }
        let pending = lock(&self.restore).take();
        match pending {
            None => self.on_container(|c| c.start()).await?,
            Some(pending) => {
                let (id, bundle) = (self.id.clone(), PathBuf::from(&self.bundle));
                let options = runtime_core::RestoreOptions {
                    criu: self.criu.program.clone(),
                    image_dir: pending.image_dir,
                    work_dir: self.criu.work_dir.clone(),
                };
                let mut restored = tokio::task::spawn_blocking(move || {
                    runtime_core::Container::restore(&id, &bundle, pending.create, &options)
                })
                .await
                .map_err(errors::internal)?
                .map_err(|e| {
                    // Nothing was left of it (runtime-core undid the restore):
                    // the task is over, and Delete has only the rootfs to undo.
                    self.core.set_exited(255);
                    from_runtime(e)
                })?;
                let master = restored.take_console();
                self.core.set_pid(restored.pid());
                *lock(&self.container) = Some(restored);
                // CRIU made the terminal anew: its master is attached as Create's
                // would be. Without it nobody could read the terminal: the
                // container goes (its exit is the reaper's, by the pid set above).
                if let Some(master) = master {
                    let s = &self.core.stdio;
                    match crate::stdio::attach_console(master, &s.stdin, &s.stdout) {
                        Ok(io) => self.core.set_io(io),
                        Err(e) => {
                            let _ = self.kill(libc::SIGKILL as u32, true);
                            return Err(status(Code::INVALID_ARGUMENT, format!("container {}: {e:#}", self.id)));
                        }
                    }
                }
            }
        }
        self.core.started.store(true, Ordering::Release);
        Ok(())
    }

    /// Dump the container with CRIU (see runtime-core's checkpoint).
    pub async fn checkpoint(self: &Arc<Self>, mut options: runtime_core::CheckpointOptions) -> ttrpc::Result<()> {
        if !matches!(self.core.status(), Status::RUNNING | Status::PAUSED) {
            return Err(self.wrong_state("checkpoint"));
        }
        options.criu = self.criu.program.clone();
        if options.image_dir.as_os_str().is_empty() {
            options.image_dir = self.criu.image_dir.clone().ok_or_else(|| {
                status(Code::INVALID_ARGUMENT, format!("checkpoint {}: no image path (request or CriuImagePath)", self.id))
            })?;
        }
        if options.work_dir.is_none() {
            options.work_dir = self.criu.work_dir.clone();
        }
        self.on_container(move |c| c.checkpoint(&options)).await
    }

    pub fn kill(&self, signal: u32, all: bool) -> ttrpc::Result<()> {
        if self.core.exit().is_some() && !all {
            return Err(errors::not_found(format!("container {}: process already finished", self.id)));
        }
        match lock(&self.container).as_ref() {
            Some(c) => c.kill(signal as i32, all).map_err(from_runtime)?,
            None => return Err(errors::not_found(format!("container {}", self.id))),
        }
        // runtime-core thaws a paused container for SIGKILL.
        if signal == libc::SIGKILL as u32 {
            self.core.paused.store(false, Ordering::Release);
        }
        Ok(())
    }

    /// Freeze or thaw the container.
    pub async fn set_paused(self: &Arc<Self>, paused: bool) -> ttrpc::Result<()> {
        let action = if paused { "pause" } else { "resume" };
        let needed = if paused { Status::RUNNING } else { Status::PAUSED };
        if self.core.status() != needed {
            return Err(self.wrong_state(action));
        }
        self.on_container(move |c| if paused { c.pause() } else { c.resume() }).await?;
        self.core.paused.store(paused, Ordering::Release);
        Ok(())
    }

    /// New resources for the running container; returns what could not be applied.
    pub async fn update(self: &Arc<Self>, resources: oci_spec::runtime::LinuxResources) -> ttrpc::Result<Vec<String>> {
        self.on_container(move |c| c.update(&resources)).await
    }

    pub async fn stats(self: &Arc<Self>) -> ttrpc::Result<runtime_core::cgroup::CgroupStats> {
        self.on_container(|c| Ok(c.stats())).await
    }

    pub fn cgroup(&self) -> Option<runtime_core::cgroup::Cgroup> {
        lock(&self.container).as_ref().map(|c| c.cgroup())
    }

    /// After init's exit, what remains of a container that shares its pid
    /// namespace goes (see runtime-core's `kill_remaining`).
    pub async fn kill_remaining(self: &Arc<Self>) -> ttrpc::Result<()> {
        self.on_container(|c| c.kill_remaining()).await
    }

    pub fn pids(&self) -> Vec<i32> {
        lock(&self.container).as_ref().map(|c| c.pids()).unwrap_or_default()
    }

    /// Run an exec process in this container.
    pub async fn exec(
        self: &Arc<Self>,
        spec: oci_spec::runtime::Process,
        stdio: runtime_core::Stdio,
    ) -> ttrpc::Result<runtime_core::ExecProcess> {
        self.on_container(move |c| c.exec(&spec, stdio)).await
    }

    /// Run blocking runtime work on the container, off the shim's one thread.
    async fn on_container<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&mut runtime_core::Container) -> runtime_core::Result<T> + Send + 'static,
    ) -> ttrpc::Result<T> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || match lock(&me.container).as_mut() {
            Some(c) => work(c),
            None => Err(runtime_core::Error::NotFound { id: me.id.clone() }),
        })
        .await
        .map_err(errors::internal)?
        .map_err(from_runtime)
    }

    /// Remove the container. A created (never started) one is killed first, as
    /// runc's delete does; a running one must be stopped by the caller.
    pub async fn delete(&self) -> ttrpc::Result<Exit> {
        match self.core.status() {
            Status::RUNNING | Status::PAUSED => {
                return Err(self.wrong_state("delete"))
            }
            // Never restored: there is no process, only what Create opened.
            Status::CREATED if lock(&self.restore).take().is_some() => {
                self.core.set_exited(0);
            }
            Status::CREATED => {
                let _ = self.kill(libc::SIGKILL as u32, false);
                tokio::time::timeout(Duration::from_secs(10), self.core.wait())
                    .await
                    .map_err(|_| status(Code::DEADLINE_EXCEEDED, format!("container {}: init did not die", self.id)))?;
            }
            _ => {}
        }
        let exit = self.core.exit().ok_or_else(|| self.wrong_state("delete"))?;
        let container = lock(&self.container).take();
        let rootfs = self.rootfs_mount.clone();
        let id = self.id.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            if let Some(c) = container {
                for warning in c.delete()? {
                    crate::warn!(&id, "{warning}");
                }
            }
            if let Some(r) = rootfs {
                runtime_core::mount::unmount_all(&r)?;
            }
            Ok(())
        })
        .await
        .map_err(errors::internal)?
        .map_err(|e| status(Code::UNKNOWN, format!("delete container {}: {e:#}", self.id)))?;
        Ok(exit)
    }
}

/// A process added to a running container with Exec; it runs at Start.
pub struct ExecProcess {
    pub exec_id: String,
    pub core: ProcessCore,
    spec: oci_spec::runtime::Process,
}

impl ExecProcess {
    pub fn new(exec_id: String, spec: oci_spec::runtime::Process, stdio: Stdio) -> ExecProcess {
        ExecProcess { exec_id, core: ProcessCore::new(stdio), spec }
    }

    fn what(&self, init: &InitProcess) -> String {
        format!("exec {} in container {}", self.exec_id, init.id)
    }

    /// Start it in `init`'s container. The caller holds `core.lifecycle`.
    pub async fn start(&self, init: &Arc<InitProcess>, namespace: &str) -> ttrpc::Result<i32> {
        if self.core.status() != Status::CREATED {
            return Err(self.core.wrong_state(&self.what(init), "start"));
        }
        if init.core.status() != Status::RUNNING {
            return Err(init.wrong_state("exec in"));
        }
        let s = &self.core.stdio;
        let bad_stdio = |e: anyhow::Error| status(Code::INVALID_ARGUMENT, format!("{}: {e:#}", self.what(init)));
        let terminal = self.spec.terminal().unwrap_or(false);
        let stdio = if terminal {
            crate::stdio::check_console_paths(&s.stdin, &s.stdout).map_err(bad_stdio)?;
            runtime_core::Stdio::default()
        } else {
            let owner = crate::stdio::Owner { id: &init.id, namespace, io_owner: init.io_owner };
            let (stdio, io) = crate::stdio::open(&s.stdin, &s.stdout, &s.stderr, &owner).await.map_err(bad_stdio)?;
            self.core.set_io(io);
            stdio
        };
        let started = match init.exec(self.spec.clone(), stdio).await {
            Ok(p) => p,
            Err(e) => {
                self.core.close_stdin();
                return Err(e);
            }
        };
        if let Some(master) = started.console {
            match crate::stdio::attach_console(master, &s.stdin, &s.stdout) {
                Ok(io) => self.core.set_io(io),
                Err(e) => {
                    // Nobody could ever read its terminal: it must not run on.
                    // SAFETY: kill(2) of our own unreaped child.
                    unsafe { libc::kill(started.pid, libc::SIGKILL) };
                    return Err(bad_stdio(e));
                }
            }
        }
        let pid = started.pid;
        self.core.set_pid(pid);
        self.core.started.store(true, Ordering::Release);
        Ok(pid)
    }

    pub fn kill(&self, init: &InitProcess, signal: u32) -> ttrpc::Result<()> {
        let pid = self.core.pid();
        if pid == 0 || self.core.reaped.load(Ordering::Acquire) {
            return Err(errors::not_found(format!("{}: process not running", self.what(init))));
        }
        // Not yet reaped, so the pid is still ours.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::try_from(signal as i32).map_err(|e| status(Code::INVALID_ARGUMENT, e.to_string()))?,
        )
        .map_err(|e| status(Code::UNKNOWN, format!("{}: signal {signal}: {e}", self.what(init))))
    }

    pub fn check_deletable(&self, init: &InitProcess) -> ttrpc::Result<()> {
        match self.core.status() {
            Status::RUNNING => Err(self.core.wrong_state(&self.what(init), "delete")),
            _ => Ok(()),
        }
    }
}
