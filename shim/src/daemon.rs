//! The long-running shim: one thread (a current-thread tokio runtime), the
//! ttrpc Task service on the socket `start` handed over, the reaper and the
//! event publisher.
//!
//! The same service is registered as `containerd.task.v2.Task` (containerd 1.x)
//! and `containerd.task.v3.Task` (containerd 2.x): the two APIs have the same
//! RPCs and messages, only the package name differs.

use crate::args::Flags;
use crate::events::Publisher;
use crate::manager::{LISTENER_FD, SOCKET_ENV};
use crate::service::TaskService;
use anyhow::{Context, Result};
use containerd_shim_protos::shim_async::create_task;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

const TASK_V2: &str = "containerd.task.v2.Task";
const TASK_V3: &str = "containerd.task.v3.Task";

pub fn run(flags: &Flags) -> Result<()> {
    crate::logger::set_debug(flags.debug);
    log_to_fifo();
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
        return Err(std::io::Error::last_os_error()).context("become a child subreaper");
    }
    // Blocking work (runtime-core calls) borrows a pool thread briefly; an idle
    // shim keeps none (tokio's default would keep each for 10 s).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_keep_alive(Duration::from_secs(1))
        .build()?;
    runtime.block_on(serve(flags))?;
    // Do not wait for anything the runtime might still hold.
    std::process::exit(0);
}

/// stderr -> the bundle's `log` FIFO (containerd reads it). Non-blocking, so a
/// stalled reader costs log lines, never a stuck shim.
fn log_to_fifo() {
    let fifo = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("log");
    if let Ok(f) = fifo {
        // SAFETY: dup2 onto stderr.
        unsafe { libc::dup2(f.as_raw_fd(), 2) };
    }
}

async fn serve(flags: &Flags) -> Result<()> {
    // Before any child can exit.
    let sigchld = signal(SignalKind::child()).context("watch SIGCHLD")?;
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").unwrap_or_else(|_| format!("{}.ttrpc", flags.address));
    let publisher = Publisher::start(ttrpc_address, flags.namespace.clone());
    let shutdown = Arc::new(Notify::new());
    let service = Arc::new(TaskService::new(
        flags.namespace.clone(),
        publisher,
        shutdown.clone(),
        crate::idle::Activity::start(),
    ));

    let mut services = create_task(service.clone());
    let v2 = create_task(service.clone())
        .remove(TASK_V3)
        .context("generated Task service has an unexpected name")?;
    services.insert(TASK_V2.to_string(), v2);
    // SAFETY: fd 3 is the listening socket `start` passed us, owned by nobody else.
    let server = unsafe { ttrpc::r#async::Server::new().add_unix_listener(LISTENER_FD) }
        .context("listen on the socket from start")?;
    let mut server = server.register_service(services);
    server.start().await.context("start ttrpc server")?;
    tokio::spawn(crate::reaper::run(sigchld, service.clone()));
    crate::info!(&flags.id, "shim serving (pid {})", std::process::id());

    shutdown.notified().await;
    crate::info!(&flags.id, "shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), server.shutdown()).await;
    if let Some(socket) = std::env::var_os(SOCKET_ENV) {
        let _ = std::fs::remove_file(socket);
    }
    Ok(())
}
