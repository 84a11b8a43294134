//! The Task service: thin. It finds the process, delegates to it, maps errors,
//! and publishes the events containerd expects, in containerd's order.

use crate::errors::{self, from_runtime, status};
use crate::events::{Event, Publisher};
use crate::idle::Activity;
use crate::oom::OomMonitor;
use crate::options::RuntimeOptions;
use crate::process::{self, lock, ExecProcess, InitProcess, ProcessCore};
use crate::stdio;
use async_trait::async_trait;
use containerd_shim_protos::api::{self, Empty, ProcessInfo};
use containerd_shim_protos::events::task::{
    TaskCheckpointed, TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::shim_async::Task;
use runtime_core::mount::{mount_rootfs, rootfs_target, unmount_all, RootfsMount};
use runtime_core::{Container, CreateOptions, SetupOptions};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use ttrpc::r#async::TtrpcContext;
use ttrpc::Code;

/// Exits of pids not (yet) known: a process can die before Create has
/// registered it. Bounded so that strays cannot grow it forever.
const MAX_EARLY_EXITS: usize = 1024;

/// A container: its init and the exec processes added to it.
struct TaskEntry {
    init: Arc<InitProcess>,
    execs: Mutex<HashMap<String, Arc<ExecProcess>>>,
    /// Publishes TaskOOM until the entry is dropped at delete (from Start
    /// for a restored container).
    oom: Mutex<Option<OomMonitor>>,
}

pub struct TaskService {
    namespace: String,
    tasks: Mutex<HashMap<String, Arc<TaskEntry>>>,
    early_exits: Mutex<HashMap<i32, u32>>,
    publisher: Publisher,
    shutdown: Arc<Notify>,
    activity: Activity,
}

/// The process an RPC names: the init (empty exec id) or one exec.
enum Target {
    Init(Arc<InitProcess>),
    Exec(Arc<InitProcess>, Arc<ExecProcess>),
}

impl Target {
    fn core(&self) -> &ProcessCore {
        match self {
            Target::Init(i) => &i.core,
            Target::Exec(_, e) => &e.core,
        }
    }
}

impl TaskService {
    pub fn new(namespace: String, publisher: Publisher, shutdown: Arc<Notify>, activity: Activity) -> TaskService {
        TaskService {
            namespace,
            activity,
            tasks: Mutex::new(HashMap::new()),
            early_exits: Mutex::new(HashMap::new()),
            publisher,
            shutdown,
        }
    }

    fn task(&self, id: &str) -> ttrpc::Result<Arc<TaskEntry>> {
        lock(&self.tasks).get(id).cloned().ok_or_else(|| errors::not_found(format!("container {id}")))
    }

    fn target(&self, id: &str, exec_id: &str) -> ttrpc::Result<Target> {
        let task = self.task(id)?;
        if exec_id.is_empty() {
            return Ok(Target::Init(task.init.clone()));
        }
        let exec = lock(&task.execs)
            .get(exec_id)
            .cloned()
            .ok_or_else(|| errors::not_found(format!("exec {exec_id} in container {id}")))?;
        Ok(Target::Exec(task.init.clone(), exec))
    }

    /// Called by the reaper for every exit status it collects.
    pub fn on_exit(&self, pid: i32, exit_status: u32) {
        let found = lock(&self.tasks).values().find_map(|t| {
            let oom = lock(&t.oom).as_ref().map(|m| m.reporter());
            if t.init.core.pid() == pid {
                return Some((Target::Init(t.init.clone()), oom));
            }
            let exec = lock(&t.execs).values().find(|e| e.core.pid() == pid).cloned()?;
            Some((Target::Exec(t.init.clone(), exec), oom))
        });
        let Some((target, oom)) = found else {
            let mut early = lock(&self.early_exits);
            if early.len() >= MAX_EARLY_EXITS {
                early.clear();
            }
            early.insert(pid, exit_status);
            return;
        };
        target.core().mark_reaped();
        let publisher = self.publisher.clone();
        tokio::spawn(async move {
            let core = target.core();
            // After a Start in progress has published its start event, and
            // after the last of a console's output.
            let _order = core.lifecycle.lock().await;
            if let Target::Init(init) = &target {
                if let Err(e) = init.kill_remaining().await {
                    crate::warn!(&init.id, "kill what is left after init's exit: {e:?}");
                }
            }
            core.drain_output().await;
            let exit = core.set_exited(exit_status);
            let (container_id, id) = match &target {
                Target::Init(i) => (i.id.clone(), i.id.clone()),
                Target::Exec(i, e) => (i.id.clone(), e.exec_id.clone()),
            };
            crate::info!(&container_id, "process {id} (pid {pid}) exited with status {exit_status}");
            // An OOM kill is counted before its victim can exit: containerd
            // gets the TaskOOM first, even when the exit woke us first.
            if let Some(oom) = oom {
                oom.report();
            }
            publisher.publish(Event::Exit(TaskExit {
                container_id,
                id,
                pid: pid as u32,
                exit_status,
                exited_at: MessageField::some(exit.at),
                ..Default::default()
            }));
        });
    }

    /// An exit reaped before its pid was known to us.
    fn claim_early_exit(&self, pid: i32) {
        if let Some(status) = lock(&self.early_exits).remove(&pid) {
            self.on_exit(pid, status);
        }
    }

    async fn create_container(&self, req: &api::CreateTaskRequest) -> ttrpc::Result<Arc<InitProcess>> {
        let invalid = |e: anyhow::Error| status(Code::INVALID_ARGUMENT, format!("container {}: {e:#}", req.id));
        // Relative, it would name the bundle of the container this shim was
        // started for (our working directory): its config.json, and a rootfs
        // to mount over and later unmount.
        if !std::path::Path::new(&req.bundle).is_absolute() {
            return Err(invalid(anyhow::anyhow!("bundle {:?} is not an absolute path", req.bundle)));
        }
        let options = match req.options.as_ref() {
            Some(any) => RuntimeOptions::from_any(any).map_err(invalid)?,
            None => RuntimeOptions::default(),
        };
        crate::debug!(&req.id, "runtime options {options:?}");
        let state_root = options.state_root(&self.namespace);
        let setup = SetupOptions { no_pivot_root: options.no_pivot_root, no_new_keyring: options.no_new_keyring };
        let cgroup_driver = options.cgroup_driver();
        let bundle = PathBuf::from(&req.bundle);
        options.remember_state_root(&bundle, &self.namespace).map_err(invalid)?;
        let (stdio, io) = if req.terminal {
            stdio::check_console_paths(&req.stdin, &req.stdout).map_err(invalid)?;
            (runtime_core::Stdio::default(), stdio::ProcessIo::default())
        } else {
            let owner = stdio::Owner { id: &req.id, namespace: &self.namespace, io_owner: options.io_owner() };
            stdio::open(&req.stdin, &req.stdout, &req.stderr, &owner).await.map_err(invalid)?
        };
        let rootfs_mounts: Vec<RootfsMount> = req
            .rootfs
            .iter()
            .map(|m| RootfsMount { typ: m.type_.clone(), source: m.source.clone(), options: m.options.clone() })
            .collect();
        let id = req.id.clone();
        let mut init = process::InitSetup {
            bundle: req.bundle.clone(),
            stdio: process::Stdio { stdin: req.stdin.clone(), stdout: req.stdout.clone(), stderr: req.stderr.clone() },
            // Where runtime-core mounts the layers when it mounts them on our
            // side (container/layers.rs): unmounted at delete.
            rootfs_mount: (!req.rootfs.is_empty()).then(|| rootfs_target(&bundle)),
            io,
            io_owner: options.io_owner(),
            criu: options.criu(),
        };
        if !req.checkpoint.is_empty() {
            // Restored at Start, as runc-v2 does: only the rootfs and stdio now
            // (a terminal's comes with the restore).
            let mounted = tokio::task::spawn_blocking(move || mount_rootfs(&bundle, &rootfs_mounts).map(drop))
            .await
            .map_err(errors::internal)?;
            if let Err(e) = mounted {
                if let Some(copy) = init.io.stdin_copy {
                    copy.abort();
                }
                return Err(status(Code::UNKNOWN, format!("container {id}: {e}")));
            }
            let create = CreateOptions { state_root, stdio, setup, cgroup_driver, ..Default::default() };
            let pending = process::PendingRestore { image_dir: PathBuf::from(&req.checkpoint), create };
            return Ok(Arc::new(InitProcess::restoring(id, init, pending)));
        }
        let create = CreateOptions { state_root, stdio, setup, cgroup_driver, extra_env: Vec::new(), rootfs_mounts };
        let created = tokio::task::spawn_blocking(move || Container::create(&id, &bundle, create))
            .await
            .map_err(errors::internal)?;
        let mut container = match created {
            Ok(c) => c,
            Err(e) => {
                if let Some(copy) = init.io.stdin_copy {
                    copy.abort();
                }
                return Err(from_runtime(e));
            }
        };
        if let Some(master) = container.take_console() {
            match stdio::attach_console(master, &req.stdin, &req.stdout) {
                Ok(io) => init.io = io,
                Err(e) => {
                    // The container exists already: undo it, or its init, cgroup
                    // and rootfs mount would outlive the failed Create.
                    let rootfs = init.rootfs_mount;
                    let _ = tokio::task::spawn_blocking(move || {
                        let _ = container.delete();
                        if let Some(target) = rootfs {
                            let _ = unmount_all(&target);
                        }
                    })
                    .await;
                    return Err(invalid(e));
                }
            }
        }
        for w in container.warnings() {
            crate::warn!(&req.id, "{w}");
        }
        Ok(Arc::new(InitProcess::new(container, init)))
    }
}

#[async_trait]
impl Task for TaskService {
    async fn create(&self, _ctx: &TtrpcContext, req: api::CreateTaskRequest) -> ttrpc::Result<api::CreateTaskResponse> {
        self.activity.busy();
        if lock(&self.tasks).contains_key(&req.id) {
            return Err(status(Code::ALREADY_EXISTS, format!("container {} already exists", req.id)));
        }
        let init = self.create_container(&req).await?;
        let pid = init.core.pid();
        let oom = Mutex::new(init.cgroup().and_then(|cg| OomMonitor::start(&req.id, &cg, self.publisher.clone())));
        let entry = Arc::new(TaskEntry { init, execs: Mutex::new(HashMap::new()), oom });
        lock(&self.tasks).insert(req.id.clone(), entry);
        crate::info!(&req.id, "created, init pid {pid}");
        self.publisher.publish(Event::Create(TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(containerd_shim_protos::events::task::TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                ..Default::default()
            }),
            checkpoint: req.checkpoint.clone(),
            pid: pid as u32,
            ..Default::default()
        }));
        if pid != 0 {
            self.claim_early_exit(pid);
        }
        Ok(api::CreateTaskResponse { pid: pid as u32, ..Default::default() })
    }

    async fn start(&self, _ctx: &TtrpcContext, req: api::StartRequest) -> ttrpc::Result<api::StartResponse> {
        self.activity.busy();
        let target = self.target(&req.id, &req.exec_id)?;
        let _order = target.core().lifecycle.lock().await;
        let pid = match &target {
            Target::Init(init) => {
                let restoring = init.core.pid() == 0;
                init.start().await?;
                let pid = init.core.pid();
                self.publisher.publish(Event::Start(TaskStart {
                    container_id: init.id.clone(),
                    pid: pid as u32,
                    ..Default::default()
                }));
                if restoring {
                    // Its pid is known only now: an exit may have come first.
                    let task = self.task(&req.id)?;
                    *lock(&task.oom) = init.cgroup().and_then(|cg| OomMonitor::start(&req.id, &cg, self.publisher.clone()));
                    self.claim_early_exit(pid);
                }
                pid
            }
            Target::Exec(init, exec) => {
                let pid = exec.start(init, &self.namespace).await?;
                self.publisher.publish(Event::ExecStarted(TaskExecStarted {
                    container_id: init.id.clone(),
                    exec_id: exec.exec_id.clone(),
                    pid: pid as u32,
                    ..Default::default()
                }));
                self.claim_early_exit(pid);
                pid
            }
        };
        Ok(api::StartResponse { pid: pid as u32, ..Default::default() })
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> ttrpc::Result<Empty> {
        self.activity.busy();
        let task = self.task(&req.id)?;
        let spec: oci_spec::runtime::Process = serde_json::from_slice(&req.spec.value)
            .map_err(|e| status(Code::INVALID_ARGUMENT, format!("exec {}: invalid process spec: {e}", req.exec_id)))?;
        if task.init.core.status() != api::Status::RUNNING {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("container {} is not running, cannot exec in it", req.id),
            ));
        }
        {
            let mut execs = lock(&task.execs);
            if execs.contains_key(&req.exec_id) {
                return Err(status(
                    Code::ALREADY_EXISTS,
                    format!("exec {} already exists in container {}", req.exec_id, req.id),
                ));
            }
            let stdio = process::Stdio { stdin: req.stdin.clone(), stdout: req.stdout.clone(), stderr: req.stderr.clone() };
            execs.insert(req.exec_id.clone(), Arc::new(ExecProcess::new(req.exec_id.clone(), spec, stdio)));
        }
        self.publisher.publish(Event::ExecAdded(TaskExecAdded {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        }));
        Ok(Empty::new())
    }

    async fn state(&self, _ctx: &TtrpcContext, req: api::StateRequest) -> ttrpc::Result<api::StateResponse> {
        let target = self.target(&req.id, &req.exec_id)?;
        let (core, bundle) = match &target {
            Target::Init(i) => (&i.core, i.bundle.clone()),
            Target::Exec(i, e) => (&e.core, i.bundle.clone()),
        };
        let exit = core.exit();
        Ok(api::StateResponse {
            id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            bundle,
            pid: core.pid() as u32,
            status: core.status().into(),
            stdin: core.stdio.stdin.clone(),
            stdout: core.stdio.stdout.clone(),
            stderr: core.stdio.stderr.clone(),
            terminal: core.has_console(),
            exit_status: exit.as_ref().map_or(0, |e| e.status),
            exited_at: exit.map(|e| e.at).into(),
            ..Default::default()
        })
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> ttrpc::Result<api::WaitResponse> {
        let target = self.target(&req.id, &req.exec_id)?;
        let exit = target.core().wait().await;
        Ok(api::WaitResponse { exit_status: exit.status, exited_at: MessageField::some(exit.at), ..Default::default() })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> ttrpc::Result<Empty> {
        crate::debug!(&req.id, "kill {:?} signal {} all {}", req.exec_id, req.signal, req.all);
        match self.target(&req.id, &req.exec_id)? {
            Target::Init(init) => init.kill(req.signal, req.all)?,
            Target::Exec(init, exec) => exec.kill(&init, req.signal)?,
        }
        Ok(Empty::new())
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: api::DeleteRequest) -> ttrpc::Result<api::DeleteResponse> {
        self.activity.busy();
        let task = self.task(&req.id)?;
        let (pid, exit) = match self.target(&req.id, &req.exec_id)? {
            Target::Exec(init, exec) => {
                exec.check_deletable(&init)?;
                lock(&task.execs).remove(&req.exec_id);
                (exec.core.pid(), exec.core.exit())
            }
            Target::Init(init) => {
                let exit = init.delete().await?;
                lock(&self.tasks).remove(&req.id);
                crate::info!(&req.id, "deleted");
                // Only the init's deletion is an event (as containerd's runc shim).
                self.publisher.publish(Event::Delete(TaskDelete {
                    container_id: init.id.clone(),
                    id: init.id.clone(),
                    pid: init.core.pid() as u32,
                    exit_status: exit.status,
                    exited_at: MessageField::some(exit.at.clone()),
                    ..Default::default()
                }));
                (init.core.pid(), Some(exit))
            }
        };
        Ok(api::DeleteResponse {
            pid: pid as u32,
            exit_status: exit.as_ref().map_or(0, |e| e.status),
            exited_at: exit.map(|e| e.at).into(),
            ..Default::default()
        })
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> ttrpc::Result<api::PidsResponse> {
        let task = self.task(&req.id)?;
        let execs: HashMap<i32, String> =
            lock(&task.execs).values().map(|e| (e.core.pid(), e.exec_id.clone())).collect();
        let processes = task
            .init
            .pids()
            .into_iter()
            .map(|pid| ProcessInfo {
                pid: pid as u32,
                // containerd shows which exec a pid belongs to, as runc's shim tells it.
                info: execs.get(&pid).map(|exec_id| exec_details(exec_id)).into(),
                ..Default::default()
            })
            .collect();
        Ok(api::PidsResponse { processes, ..Default::default() })
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> ttrpc::Result<Empty> {
        let target = self.target(&req.id, &req.exec_id)?;
        if req.stdin {
            target.core().close_stdin();
        }
        Ok(Empty::new())
    }

    async fn connect(&self, _ctx: &TtrpcContext, req: api::ConnectRequest) -> ttrpc::Result<api::ConnectResponse> {
        let task_pid = lock(&self.tasks).get(&req.id).map_or(0, |t| t.init.core.pid() as u32);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> ttrpc::Result<Empty> {
        // A grouped shim goes on while any container of its group remains.
        if lock(&self.tasks).is_empty() {
            self.shutdown.notify_one();
        }
        Ok(Empty::new())
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> ttrpc::Result<Empty> {
        let init = self.task(&req.id)?.init.clone();
        init.set_paused(true).await?;
        self.publisher.publish(Event::Paused(TaskPaused { container_id: req.id.clone(), ..Default::default() }));
        Ok(Empty::new())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> ttrpc::Result<Empty> {
        let init = self.task(&req.id)?.init.clone();
        init.set_paused(false).await?;
        self.publisher.publish(Event::Resumed(TaskResumed { container_id: req.id.clone(), ..Default::default() }));
        Ok(Empty::new())
    }

    async fn checkpoint(&self, _ctx: &TtrpcContext, req: api::CheckpointTaskRequest) -> ttrpc::Result<Empty> {
        self.activity.busy();
        let init = self.task(&req.id)?.init.clone();
        let options = crate::checkpoint::options(&req).map_err(|e| status(Code::INVALID_ARGUMENT, format!("checkpoint {}: {e:#}", req.id)))?;
        let _order = init.core.lifecycle.lock().await;
        init.checkpoint(options).await?;
        crate::info!(&req.id, "checkpointed into {}", req.path);
        self.publisher.publish(Event::Checkpointed(TaskCheckpointed { container_id: req.id.clone(), ..Default::default() }));
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: api::ResizePtyRequest) -> ttrpc::Result<Empty> {
        let target = self.target(&req.id, &req.exec_id)?;
        target
            .core()
            .resize(req.width, req.height)
            .map_err(|e| status(Code::FAILED_PRECONDITION, format!("resize pty of {} {:?}: {e}", req.id, req.exec_id)))?;
        Ok(Empty::new())
    }

    async fn update(&self, _ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> ttrpc::Result<Empty> {
        let init = self.task(&req.id)?.init.clone();
        // containerd sends the OCI LinuxResources as JSON in the Any.
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(&req.resources.value)
            .map_err(|e| status(Code::INVALID_ARGUMENT, format!("container {}: invalid resources: {e}", req.id)))?;
        for w in init.update(resources).await? {
            crate::warn!(&req.id, "{w}");
        }
        Ok(Empty::new())
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: api::StatsRequest) -> ttrpc::Result<api::StatsResponse> {
        let stats = self.task(&req.id)?.init.stats().await?;
        Ok(api::StatsResponse { stats: MessageField::some(crate::metrics::to_any(&stats)), ..Default::default() })
    }
}

/// The proto name `ctr task ps` resolves an exec's details by.
const PROCESS_DETAILS: &str = "containerd.runc.v1.ProcessDetails";

/// `containerd.runc.v1.ProcessDetails` as an Any, which `ctr task ps` decodes.
fn exec_details(exec_id: &str) -> containerd_shim_protos::protobuf::well_known_types::any::Any {
    let details = containerd_shim_protos::shim::oci::ProcessDetails { exec_id: exec_id.into(), ..Default::default() };
    crate::events::to_any(PROCESS_DETAILS, &details)
}

#[cfg(test)]
mod tests {
    use containerd_shim_protos::protobuf::MessageFull;

    #[test]
    fn exec_details_carry_their_proto_name() {
        let name = containerd_shim_protos::shim::oci::ProcessDetails::descriptor().full_name().to_string();
        assert_eq!(super::exec_details("e1").type_url, name);
    }
}
