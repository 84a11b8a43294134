//! The shim is a child subreaper: every process of its containers that loses
//! its parent becomes ours, and every exit status is collected here — one
//! waitpid loop for all, so no zombie piles up and no exit is missed.

use crate::service::TaskService;
use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use std::sync::Arc;
use tokio::signal::unix::Signal;

pub async fn run(mut sigchld: Signal, service: Arc<TaskService>) {
    loop {
        reap_all(&service);
        if sigchld.recv().await.is_none() {
            return;
        }
    }
}

fn reap_all(service: &TaskService) {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => service.on_exit(pid.as_raw(), code as u32),
            Ok(WaitStatus::Signaled(pid, sig, _)) => service.on_exit(pid.as_raw(), 128 + sig as u32),
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}
