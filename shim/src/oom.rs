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
    /// Publish the new kills; returns how many there were.
    pub fn report(&self) -> u64 {
        let kills = self.watcher.get_ref().new_kills();
        for _ in 0..kills {
            crate::info!(&self.container_id, "OOM kill");
            self.publisher.publish(Event::Oom(TaskOOM {
                container_id: self.container_id.clone(),
                ..Default::default()
            }));
        }
        kills
    }
}

/// On v1, after a wakeup without a new kill, look again this often, this many
/// times: the eventfd fires as the cgroup hits OOM and the kill is counted
/// just after, and with the systemd driver the cgroup (with its count) goes as
/// soon as the victim's exit empties the scope — the look at exit may be late.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(2);
const SETTLE_LOOKS: u32 = 10;

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
                let mut looks = if watching.watcher.get_ref().settles() { 0 } else { SETTLE_LOOKS };
                while watching.report() == 0 && looks < SETTLE_LOOKS {
                    tokio::time::sleep(SETTLE).await;
                    looks += 1;
                }
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
