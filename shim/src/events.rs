//! Publishing task events to containerd, in order, without ever blocking an RPC.
//!
//! Events go through one queue to one task that forwards them over ttrpc to
//! containerd's Events service (TTRPC_ADDRESS). containerd relies on the order
//! (TaskStart before TaskExit, TaskExit before TaskDelete), so there is exactly
//! one sender and retries keep the order.

use containerd_shim_protos::events::task::{
    TaskCheckpointed, TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::{any::Any, timestamp::Timestamp};
use containerd_shim_protos::protobuf::{MessageDyn, MessageField};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim_async::{Client, EventsClient};
use containerd_shim_protos::api::ForwardRequest;
use std::time::Duration;
use tokio::sync::mpsc;

pub fn now() -> Timestamp {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32, ..Default::default() }
}

pub enum Event {
    Create(TaskCreate),
    Start(TaskStart),
    ExecAdded(TaskExecAdded),
    ExecStarted(TaskExecStarted),
    Exit(TaskExit),
    Delete(TaskDelete),
    Paused(TaskPaused),
    Resumed(TaskResumed),
    Oom(TaskOOM),
    Checkpointed(TaskCheckpointed),
}

impl Event {
    fn topic(&self) -> &'static str {
        match self {
            Event::Create(_) => "/tasks/create",
            Event::Start(_) => "/tasks/start",
            Event::ExecAdded(_) => "/tasks/exec-added",
            Event::ExecStarted(_) => "/tasks/exec-started",
            Event::Exit(_) => "/tasks/exit",
            Event::Delete(_) => "/tasks/delete",
            Event::Paused(_) => "/tasks/paused",
            Event::Resumed(_) => "/tasks/resumed",
            Event::Oom(_) => "/tasks/oom",
            Event::Checkpointed(_) => "/tasks/checkpointed",
        }
    }

    fn message(&self) -> &dyn MessageDyn {
        match self {
            Event::Create(e) => e,
            Event::Start(e) => e,
            Event::ExecAdded(e) => e,
            Event::ExecStarted(e) => e,
            Event::Exit(e) => e,
            Event::Delete(e) => e,
            Event::Paused(e) => e,
            Event::Resumed(e) => e,
            Event::Oom(e) => e,
            Event::Checkpointed(e) => e,
        }
    }

    /// The container the event is about, for log lines.
    fn container_id(&self) -> &str {
        match self {
            Event::Create(e) => &e.container_id,
            Event::Start(e) => &e.container_id,
            Event::ExecAdded(e) => &e.container_id,
            Event::ExecStarted(e) => &e.container_id,
            Event::Exit(e) => &e.container_id,
            Event::Delete(e) => &e.container_id,
            Event::Paused(e) => &e.container_id,
            Event::Resumed(e) => &e.container_id,
            Event::Oom(e) => &e.container_id,
            Event::Checkpointed(e) => &e.container_id,
        }
    }

    fn to_any(&self) -> Any {
        to_any(self.message())
    }
}

/// Pack a message the way containerd's typeurl resolves it: by its proto name.
pub fn to_any(m: &dyn MessageDyn) -> Any {
    Any {
        type_url: m.descriptor_dyn().full_name().to_string(),
        value: m.write_to_bytes_dyn().unwrap_or_default(),
        ..Default::default()
    }
}

#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::UnboundedSender<Event>,
}

const ATTEMPTS: u32 = 5;

impl Publisher {
    /// Start the forwarding task. `ttrpc_address` is containerd's ttrpc socket.
    pub fn start(ttrpc_address: String, namespace: String) -> Publisher {
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        tokio::spawn(async move {
            let address = if ttrpc_address.contains("://") { ttrpc_address } else { format!("unix://{ttrpc_address}") };
            let mut client: Option<EventsClient> = None;
            while let Some(event) = rx.recv().await {
                let request = ForwardRequest {
                    envelope: MessageField::some(Envelope {
                        timestamp: MessageField::some(now()),
                        namespace: namespace.clone(),
                        topic: event.topic().to_string(),
                        event: MessageField::some(event.to_any()),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                for attempt in 0..ATTEMPTS {
                    if client.is_none() {
                        client = Client::connect(&address).await.ok().map(EventsClient::new);
                    }
                    if let Some(c) = &client {
                        let ctx = ttrpc::context::with_timeout(Duration::from_secs(5).as_nanos() as i64);
                        match c.forward(ctx, &request).await {
                            Ok(_) => break,
                            Err(e) => {
                                crate::warn!(event.container_id(), "publish {}: {e}", event.topic());
                                client = None;
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
                }
            }
        });
        Publisher { tx }
    }

    pub fn publish(&self, event: Event) {
        // Only fails when the forwarding task is gone, i.e. the shim is exiting.
        let _ = self.tx.send(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::Message;

    #[test]
    fn payload_is_named_as_containerd_registers_it() {
        let any = Event::Exit(TaskExit { container_id: "c".into(), exit_status: 7, ..Default::default() }).to_any();
        assert_eq!(any.type_url, "containerd.events.TaskExit");
        let back = TaskExit::parse_from_bytes(&any.value).unwrap();
        assert_eq!(back.exit_status, 7);
    }
}
