//! The Task service: thin. It finds the process, delegates to it, maps errors,
//! and publishes the events containerd expects, in containerd's order.

use crate::errors::{self, from_runtime, status, unimplemented};
use crate::events::{Event, Publisher};
use crate::process::{self, InitProcess};
use crate::stdio;
use async_trait::async_trait;
use containerd_shim_protos::api::{self, Empty, ProcessInfo};
use containerd_shim_protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskStart};
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::shim_async::Task;
use runtime_core::mount::{mount_rootfs, unmount_all, RootfsMount};
use runtime_core::{Container, CreateOptions};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use ttrpc::r#async::TtrpcContext;
use ttrpc::Code;

/// Exits of pids not (yet) known: a process can die before Create has
/// registered it. Bounded so that strays cannot grow it forever.
const MAX_EARLY_EXITS: usize = 1024;

pub struct TaskService {
    state_root: PathBuf,
    processes: Mutex<HashMap<String, Arc<InitProcess>>>,
    early_exits: Mutex<HashMap<i32, u32>>,
    publisher: Publisher,
    shutdown: Arc<Notify>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn no_exec(id: &str, exec_id: &str) -> ttrpc::Result<()> {
    if exec_id.is_empty() {
        Ok(())
    } else {
        Err(errors::not_found(format!("exec {exec_id} in container {id}")))
    }
}

impl TaskService {
    pub fn new(state_root: PathBuf, publisher: Publisher, shutdown: Arc<Notify>) -> TaskService {
        TaskService {
            state_root,
            processes: Mutex::new(HashMap::new()),
            early_exits: Mutex::new(HashMap::new()),
            publisher,
            shutdown,
        }
    }

    fn get(&self, id: &str) -> ttrpc::Result<Arc<InitProcess>> {
        lock(&self.processes).get(id).cloned().ok_or_else(|| errors::not_found(format!("container {id}")))
    }

    /// Called by the reaper for every exit status it collects.
    pub fn on_exit(&self, pid: i32, exit_status: u32) {
        let found = lock(&self.processes).values().find(|p| p.pid == pid).cloned();
        let Some(p) = found else {
            let mut early = lock(&self.early_exits);
            if early.len() >= MAX_EARLY_EXITS {
                early.clear();
            }
            early.insert(pid, exit_status);
            return;
        };
        let publisher = self.publisher.clone();
        tokio::spawn(async move {
            // After a Start in progress has published TaskStart.
            let _order = p.lifecycle.lock().await;
            p.set_exited(exit_status);
            let exit = p.exit().expect("just set");
            crate::info!(&p.id, "init {pid} exited with status {exit_status}");
            publisher.publish(Event::Exit(TaskExit {
                container_id: p.id.clone(),
                id: p.id.clone(),
                pid: pid as u32,
                exit_status,
                exited_at: MessageField::some(exit.at),
                ..Default::default()
            }));
        });
    }

    async fn create_container(&self, req: &api::CreateTaskRequest) -> ttrpc::Result<Arc<InitProcess>> {
        if !req.checkpoint.is_empty() {
            return Err(unimplemented("restoring a checkpoint"));
        }
        let opened = stdio::open(&req.stdin, &req.stdout, &req.stderr)
            .map_err(|e| status(Code::INVALID_ARGUMENT, format!("container {}: {e:#}", req.id)))?;
        let stdin_copy = opened.stdin_copy;
        let bundle = PathBuf::from(&req.bundle);
        let mounts: Vec<RootfsMount> = req
            .rootfs
            .iter()
            .map(|m| RootfsMount { typ: m.type_.clone(), source: m.source.clone(), options: m.options.clone() })
            .collect();
        let (id, state_root, stdio) = (req.id.clone(), self.state_root.clone(), opened.stdio);
        let created = tokio::task::spawn_blocking(move || {
            let rootfs = (!mounts.is_empty()).then(|| bundle.join("rootfs"));
            if let Some(target) = &rootfs {
                mount_rootfs(&mounts, target)
                    .map_err(|e| status(Code::UNKNOWN, format!("container {id}: {e}")))?;
            }
            Container::create(&id, &bundle, CreateOptions { state_root, stdio })
                .map(|c| (c, rootfs.clone()))
                .map_err(|e| {
                    if let Some(target) = &rootfs {
                        let _ = unmount_all(target);
                    }
                    from_runtime(e)
                })
        })
        .await
        .map_err(errors::internal)?;
        let (container, rootfs) = match created {
            Ok(c) => c,
            Err(e) => {
                if let Some(copy) = stdin_copy {
                    copy.abort();
                }
                return Err(e);
            }
        };
        for w in container.warnings() {
            crate::warn!(&req.id, "{w}");
        }
        let stdio = process::Stdio { stdin: req.stdin.clone(), stdout: req.stdout.clone(), stderr: req.stderr.clone() };
        Ok(Arc::new(InitProcess::new(container, req.bundle.clone(), stdio, rootfs, stdin_copy)))
    }
}

#[async_trait]
impl Task for TaskService {
    async fn create(&self, _ctx: &TtrpcContext, req: api::CreateTaskRequest) -> ttrpc::Result<api::CreateTaskResponse> {
        if lock(&self.processes).contains_key(&req.id) {
            return Err(status(Code::ALREADY_EXISTS, format!("container {} already exists", req.id)));
        }
        let p = self.create_container(&req).await?;
        let pid = p.pid;
        lock(&self.processes).insert(req.id.clone(), p);
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
        if let Some(status) = lock(&self.early_exits).remove(&pid) {
            self.on_exit(pid, status);
        }
        Ok(api::CreateTaskResponse { pid: pid as u32, ..Default::default() })
    }

    async fn start(&self, _ctx: &TtrpcContext, req: api::StartRequest) -> ttrpc::Result<api::StartResponse> {
        no_exec(&req.id, &req.exec_id)?;
        let p = self.get(&req.id)?;
        let _order = p.lifecycle.lock().await;
        p.start().await?;
        self.publisher.publish(Event::Start(TaskStart {
            container_id: p.id.clone(),
            pid: p.pid as u32,
            ..Default::default()
        }));
        Ok(api::StartResponse { pid: p.pid as u32, ..Default::default() })
    }

    async fn state(&self, _ctx: &TtrpcContext, req: api::StateRequest) -> ttrpc::Result<api::StateResponse> {
        no_exec(&req.id, &req.exec_id)?;
        let p = self.get(&req.id)?;
        let exit = p.exit();
        Ok(api::StateResponse {
            id: p.id.clone(),
            bundle: p.bundle.clone(),
            pid: p.pid as u32,
            status: p.status().into(),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: false,
            exit_status: exit.as_ref().map_or(0, |e| e.status),
            exited_at: exit.map(|e| e.at).into(),
            ..Default::default()
        })
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> ttrpc::Result<api::WaitResponse> {
        no_exec(&req.id, &req.exec_id)?;
        let p = self.get(&req.id)?;
        let exit = p.wait().await;
        Ok(api::WaitResponse { exit_status: exit.status, exited_at: MessageField::some(exit.at), ..Default::default() })
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> ttrpc::Result<Empty> {
        no_exec(&req.id, &req.exec_id)?;
        crate::debug!(&req.id, "kill signal {} all {}", req.signal, req.all);
        self.get(&req.id)?.kill(req.signal, req.all)?;
        Ok(Empty::new())
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: api::DeleteRequest) -> ttrpc::Result<api::DeleteResponse> {
        no_exec(&req.id, &req.exec_id)?;
        let p = self.get(&req.id)?;
        let exit = p.delete().await?;
        lock(&self.processes).remove(&req.id);
        crate::info!(&req.id, "deleted");
        self.publisher.publish(Event::Delete(TaskDelete {
            container_id: p.id.clone(),
            id: p.id.clone(),
            pid: p.pid as u32,
            exit_status: exit.status,
            exited_at: MessageField::some(exit.at.clone()),
            ..Default::default()
        }));
        Ok(api::DeleteResponse {
            pid: p.pid as u32,
            exit_status: exit.status,
            exited_at: MessageField::some(exit.at),
            ..Default::default()
        })
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> ttrpc::Result<api::PidsResponse> {
        let p = self.get(&req.id)?;
        let processes = p
            .pids()
            .into_iter()
            .map(|pid| ProcessInfo { pid: pid as u32, ..Default::default() })
            .collect();
        Ok(api::PidsResponse { processes, ..Default::default() })
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> ttrpc::Result<Empty> {
        no_exec(&req.id, &req.exec_id)?;
        let p = self.get(&req.id)?;
        if req.stdin {
            p.close_stdin();
        }
        Ok(Empty::new())
    }

    async fn connect(&self, _ctx: &TtrpcContext, req: api::ConnectRequest) -> ttrpc::Result<api::ConnectResponse> {
        let task_pid = lock(&self.processes).get(&req.id).map_or(0, |p| p.pid as u32);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> ttrpc::Result<Empty> {
        // A grouped shim goes on while any container of its group remains.
        if lock(&self.processes).is_empty() {
            self.shutdown.notify_one();
        }
        Ok(Empty::new())
    }

    async fn pause(&self, _ctx: &TtrpcContext, _req: api::PauseRequest) -> ttrpc::Result<Empty> {
        Err(unimplemented("pause"))
    }

    async fn resume(&self, _ctx: &TtrpcContext, _req: api::ResumeRequest) -> ttrpc::Result<Empty> {
        Err(unimplemented("resume"))
    }

    async fn checkpoint(&self, _ctx: &TtrpcContext, _req: api::CheckpointTaskRequest) -> ttrpc::Result<Empty> {
        Err(unimplemented("checkpoint"))
    }

    async fn exec(&self, _ctx: &TtrpcContext, _req: api::ExecProcessRequest) -> ttrpc::Result<Empty> {
        Err(unimplemented("exec"))
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, _req: api::ResizePtyRequest) -> ttrpc::Result<Empty> {
        Err(unimplemented("resize pty"))
    }

    async fn update(&self, _ctx: &TtrpcContext, _req: api::UpdateTaskRequest) -> ttrpc::Result<Empty> {
        Err(unimplemented("update"))
    }

    async fn stats(&self, _ctx: &TtrpcContext, _req: api::StatsRequest) -> ttrpc::Result<api::StatsResponse> {
        Err(unimplemented("stats"))
    }
}
