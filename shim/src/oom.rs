//! TaskOOM events: one per OOM kill in a container's cgroup (runtime-core's
//! OomWatcher counts the kills), polled on the shim's one event loop.

use crate::events::{Event, Publisher};
use containerd_shim_protos::events::task::TaskOOM;
use runtime_core::cgroup::{Cgroup, OomWatcher};
use std::sync::Arc;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::JoinHandle;

/// Publishes the kills the watcher has not reported yet.
#[derive(Clone)]
pub struct OomReporter {
    watcher: Arc<AsyncFd<OomWatcher>>,
    container_id: String,
    publisher: Publisher,
}

impl OomReporter {
    pub fn report(&self) {
        for _ in 0..self.watcher.get_ref().new_kills() {
            crate::info!(&self.container_id, "OOM kill");
            self.publisher.publish(Event::Oom(TaskOOM {
                container_id: self.container_id.clone(),
                ..Default::default()
            }));
        }
    }
}

/// Watches one container for as long as it lives.
pub struct OomMonitor {
    reporter: OomReporter,
    task: JoinHandle<()>,
}

impl OomMonitor {
    /// None (after a warning) when the cgroup has no memory controller or the
    /// watch cannot be set up: the container runs anyway, as with runc.
    pub fn start(container_id: &str, cgroup: &Cgroup, publisher: Publisher) -> Option<OomMonitor> {
        let watcher = match OomWatcher::new(cgroup) {
            Ok(Some(w)) => w,
            Ok(None) => return None,
            Err(e) => {
                crate::warn!(container_id, "cannot watch for OOM kills: {e}");
                return None;
            }
        };
        // SAFETY: the watcher owns its fd and never replaces it.
        let watcher = match unsafe { AsyncFd::register_with_interest(watcher, Interest::READABLE) } {
            Ok(w) => w,
            Err(e) => {
                crate::warn!(container_id, "cannot poll for OOM kills: {e}");
                return None;
            }
        };
        let reporter = OomReporter {
            watcher: Arc::new(watcher),
            container_id: container_id.to_string(),
            publisher,
        };
        let watching = reporter.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok(mut ready) = watching.watcher.readable().await else {
                    return;
                };
                // Before the read: a wakeup arriving meanwhile makes it ready again.
                ready.clear_ready();
                watching.report();
            }
        });
        Some(OomMonitor { reporter, task })
    }

    pub fn reporter(&self) -> OomReporter {
        self.reporter.clone()
    }
}

impl Drop for OomMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}
