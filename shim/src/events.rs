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
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim_async::{Client, EventsClient};
use containerd_shim_protos::api::ForwardRequest;
use std::time::Duration;
use tokio::sync::mpsc;

pub fn now() -> Timestamp {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32, ..Default::default() }
}

/// `$body` for the message `$e` of whichever event `$event` is.
macro_rules! each_event {
    ($event:expr, $e:ident => $body:expr) => {
        match $event {
            Event::Create($e) => $body,
            Event::Start($e) => $body,
            Event::ExecAdded($e) => $body,
            Event::ExecStarted($e) => $body,
            Event::Exit($e) => $body,
            Event::Delete($e) => $body,
            Event::Paused($e) => $body,
            Event::Resumed($e) => $body,
            Event::Oom($e) => $body,
            Event::Checkpointed($e) => $body,
        }
    };
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

    /// The message's proto name, which containerd's typeurl resolves.
    fn type_name(&self) -> &'static str {
        match self {
            Event::Create(_) => "containerd.events.TaskCreate",
            Event::Start(_) => "containerd.events.TaskStart",
            Event::ExecAdded(_) => "containerd.events.TaskExecAdded",
            Event::ExecStarted(_) => "containerd.events.TaskExecStarted",
            Event::Exit(_) => "containerd.events.TaskExit",
            Event::Delete(_) => "containerd.events.TaskDelete",
            Event::Paused(_) => "containerd.events.TaskPaused",
            Event::Resumed(_) => "containerd.events.TaskResumed",
            Event::Oom(_) => "containerd.events.TaskOOM",
            Event::Checkpointed(_) => "containerd.events.TaskCheckpointed",
        }
    }

    /// The container the event is about, for log lines.
    fn container_id(&self) -> &str {
        each_event!(self, e => &e.container_id)
    }

    fn to_any(&self) -> Any {
        each_event!(self, e => to_any(self.type_name(), e))
    }
}

/// Pack a message the way containerd's typeurl resolves it: by its proto
/// name, given, and through its own generated encoder. rust-protobuf's
/// reflection (`descriptor_dyn`, which `write_to_bytes_dyn` calls too) would
/// build the descriptors of the message's .proto file and of every file it
/// imports — gogo.proto brings descriptor.proto, comments included — and keep
/// them for the life of the shim.
pub fn to_any<M: Message>(type_name: &str, m: &M) -> Any {
    Any { type_url: type_name.into(), value: m.write_to_bytes().unwrap_or_default(), ..Default::default() }
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
    use containerd_shim_protos::protobuf::MessageDyn;

    #[test]
    fn payload_is_named_as_containerd_registers_it() {
        let any = Event::Exit(TaskExit { container_id: "c".into(), exit_status: 7, ..Default::default() }).to_any();
        assert_eq!(any.type_url, "containerd.events.TaskExit");
        let back = TaskExit::parse_from_bytes(&any.value).unwrap();
        assert_eq!(back.exit_status, 7);
    }

    #[test]
    fn every_events_name_is_its_proto_name() {
        let all = [
            Event::Create(Default::default()),
            Event::Start(Default::default()),
            Event::ExecAdded(Default::default()),
            Event::ExecStarted(Default::default()),
            Event::Exit(Default::default()),
            Event::Delete(Default::default()),
            Event::Paused(Default::default()),
            Event::Resumed(Default::default()),
            Event::Oom(Default::default()),
            Event::Checkpointed(Default::default()),
        ];
        for e in all {
            let proto = each_event!(&e, m => m.descriptor_dyn().full_name().to_string());
            assert_eq!(e.type_name(), proto, "{}", e.topic());
        }
    }
}
