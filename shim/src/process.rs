//! A container's init process as the shim tracks it.
//!
//! Its lifecycle is created -> running -> stopped -> deleted. The exit can be
//! observed by the reaper at any moment (even while Start is still waiting for
//! the exec to be confirmed), so the status is *derived* from two facts that are
//! each set once — "started" and "exit" — rather than stored as a third state
//! that could disagree with them. Transitions that must reach containerd in
//! order (TaskStart before TaskExit) hold `lifecycle` while they publish.

use crate::errors::{self, from_runtime, status};
use containerd_shim_protos::api::Status;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
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

pub struct InitProcess {
    pub id: String,
    pub bundle: String,
    pub pid: i32,
    pub stdio: Stdio,
    /// Where the shim mounted the rootfs it got in Create (unmounted on delete).
    rootfs_mount: Option<PathBuf>,
    container: Mutex<Option<runtime_core::Container>>,
    started: AtomicBool,
    pub lifecycle: tokio::sync::Mutex<()>,
    exit: watch::Sender<Option<Exit>>,
    stdin_copy: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl InitProcess {
    pub fn new(
        container: runtime_core::Container,
        bundle: String,
        stdio: Stdio,
        rootfs_mount: Option<PathBuf>,
        stdin_copy: Option<JoinHandle<()>>,
    ) -> InitProcess {
        InitProcess {
            id: container.state().id.clone(),
            pid: container.pid(),
            bundle,
            stdio,
            rootfs_mount,
            container: Mutex::new(Some(container)),
            started: AtomicBool::new(false),
            lifecycle: tokio::sync::Mutex::new(()),
            exit: watch::channel(None).0,
            stdin_copy: Mutex::new(stdin_copy),
        }
    }

    pub fn status(&self) -> Status {
        if self.exit.borrow().is_some() {
            Status::STOPPED
        } else if self.started.load(Ordering::Acquire) {
            Status::RUNNING
        } else {
            Status::CREATED
        }
    }

    pub fn exit(&self) -> Option<Exit> {
        self.exit.borrow().clone()
    }

    pub fn set_exited(&self, status: u32) {
        self.exit.send_replace(Some(Exit { status, at: crate::events::now() }));
        // Nothing can read stdin any more.
        self.close_stdin();
    }

    pub async fn wait(&self) -> Exit {
        let mut rx = self.exit.subscribe();
        let exit = rx.wait_for(|e| e.is_some()).await.map(|e| e.clone());
        // The sender lives as long as `self`, so the wait cannot fail.
        exit.ok().flatten().expect("exit sender outlives waiters")
    }

    fn wrong_state(&self, action: &str) -> ttrpc::Error {
        let st = format!("{:?}", self.status()).to_lowercase();
        status(Code::FAILED_PRECONDITION, format!("container {}: cannot {action} a {st} task", self.id))
    }

    /// Let the user's process run. The caller holds `lifecycle`.
    pub async fn start(self: &Arc<Self>) -> ttrpc::Result<()> {
        if self.status() != Status::CREATED {
            return Err(self.wrong_state("start"));
        }
        let me = self.clone();
        tokio::task::spawn_blocking(move || match lock(&me.container).as_mut() {
            Some(c) => c.start(),
            None => Err(runtime_core::Error::NotFound { id: me.id.clone() }),
        })
        .await
        .map_err(errors::internal)?
        .map_err(from_runtime)?;
        self.started.store(true, Ordering::Release);
        Ok(())
    }

    pub fn kill(&self, signal: u32, all: bool) -> ttrpc::Result<()> {
        if self.exit().is_some() && !all {
            return Err(errors::not_found(format!("container {}: process already finished", self.id)));
        }
        match lock(&self.container).as_ref() {
            Some(c) => c.kill(signal as i32, all).map_err(from_runtime),
            None => Err(errors::not_found(format!("container {}", self.id))),
        }
    }

    pub fn pids(&self) -> Vec<i32> {
        lock(&self.container).as_ref().map(|c| c.pids()).unwrap_or_default()
    }

    pub fn close_stdin(&self) {
        if let Some(copy) = lock(&self.stdin_copy).take() {
            copy.abort();
        }
    }

    /// Remove the container. A created (never started) one is killed first, as
    /// runc's delete does; a running one must be stopped by the caller.
    pub async fn delete(&self) -> ttrpc::Result<Exit> {
        match self.status() {
            Status::RUNNING => return Err(self.wrong_state("delete")),
            Status::CREATED => {
                let _ = self.kill(libc::SIGKILL as u32, false);
                tokio::time::timeout(Duration::from_secs(10), self.wait())
                    .await
                    .map_err(|_| status(Code::DEADLINE_EXCEEDED, format!("container {}: init did not die", self.id)))?;
            }
            _ => {}
        }
        let exit = self.exit().expect("stopped");
        let container = lock(&self.container).take();
        let rootfs = self.rootfs_mount.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            if let Some(c) = container {
                c.delete()?;
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
