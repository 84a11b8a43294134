//! containerd's `Snapshots` gRPC service over [`Snapshotter`]: converts
//! messages, runs each call that may wait on the disk on the blocking pool
//! (reads of the store, and small Usage walks, on the serving thread) and maps
//! errors to the status codes containerd's proxy client turns back into its
//! errdefs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferrum_protos::snapshots::v1 as api;
use ferrum_protos::snapshots::v1::snapshots_server::Snapshots;
use tonic::{Code, Request, Response, Status};

use crate::filter::Filter;
use crate::snapshotter::{self, Snapshotter};
use crate::store::{self, Info, Kind, Labels};

/// Infos per List message, at most.
const LIST_BATCH: usize = 100;
/// Bytes per List message, at most (a single larger info goes alone): well
/// under gRPC's default 4 MiB limit on what a client receives. A count alone
/// did not keep to it: a snapshot may carry thousands of labels.
const LIST_BATCH_BYTES: usize = 1 << 20;
/// How long a Usage walk runs on the serving thread before the rest of it goes
/// to the blocking pool: about what the hop there and back costs (a few
/// hundred entries, more than most containers write to their upper layer).
const INLINE_USAGE: Duration = Duration::from_micros(200);
/// Entries walked between two looks at the clock.
const USAGE_STEP: usize = 32;

pub struct SnapshotService {
    snapshotter: Arc<Snapshotter>,
}

impl SnapshotService {
    pub fn new(snapshotter: Arc<Snapshotter>) -> Self {
        SnapshotService { snapshotter }
    }

    /// Runs a read of the store (a redb read transaction, which never waits
    /// for a writer; at most a stat besides, no walk, no sync) on the serving
    /// thread: a hop to the blocking pool and back costs two cross-thread
    /// wake-ups, 0.1–0.2 ms of a Mounts call on this project's VMs.
    fn read<T>(&self, f: impl FnOnce(&Snapshotter) -> snapshotter::Result<T>) -> Result<T, Status> {
        f(&self.snapshotter).map_err(status)
    }

    /// Runs a blocking snapshotter call off the async threads.
    async fn call<T, F>(&self, f: F) -> Result<T, Status>
    where
        T: Send + 'static,
        F: FnOnce(&Snapshotter) -> snapshotter::Result<T> + Send + 'static,
    {
        let snapshotter = Arc::clone(&self.snapshotter);
        blocking(move || f(&snapshotter)).await
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> snapshotter::Result<T> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|err| Status::internal(format!("snapshot operation failed: {err}")))?
        .map_err(status)
}

fn status(err: snapshotter::Error) -> Status {
    use snapshotter::Error as E;
    use store::Error as S;
    let code = match &err {
        E::Store(S::NotFound(_)) => Code::NotFound,
        E::Store(S::AlreadyExists(_)) | E::TargetExists { .. } => Code::AlreadyExists,
        E::Store(
            S::EmptyKey
            | S::ParentNotCommitted { .. }
            | S::Immutable { .. }
            | S::LabelTooLarge { .. },
        ) => Code::InvalidArgument,
        E::Store(S::NotActive { .. } | S::NoMounts(_) | S::HasChildren(_)) => {
            Code::FailedPrecondition
        }
        E::Store(S::Replaced(_)) => Code::Aborted,
        E::Store(S::Corrupt { .. } | S::Db(_)) | E::Layout(_) | E::Usage(_) => Code::Internal,
    };
    Status::new(code, err.to_string())
}

fn labels(map: HashMap<String, String>) -> Labels {
    map.into_iter().collect()
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

fn info(info: Info) -> api::Info {
    let kind = match info.kind {
        Kind::View => api::Kind::View,
        Kind::Active => api::Kind::Active,
        Kind::Committed => api::Kind::Committed,
    };
    api::Info {
        name: info.name,
        parent: info.parent,
        kind: kind.into(),
        created_at: Some(timestamp(info.created)),
        updated_at: Some(timestamp(info.updated)),
        labels: info.labels.into_iter().collect(),
    }
}

/// List's messages: [`LIST_BATCH`] infos or [`LIST_BATCH_BYTES`] each.
fn batches(infos: impl Iterator<Item = api::Info>) -> Vec<api::ListSnapshotsResponse> {
    let mut out = Vec::new();
    let (mut batch, mut bytes) = (Vec::new(), 0);
    for info in infos {
        let len = prost::Message::encoded_len(&info);
        if !batch.is_empty() && (batch.len() == LIST_BATCH || bytes + len > LIST_BATCH_BYTES) {
            out.push(api::ListSnapshotsResponse { info: std::mem::take(&mut batch) });
            bytes = 0;
        }
        bytes += len;
        batch.push(info);
    }
    if !batch.is_empty() {
        out.push(api::ListSnapshotsResponse { info: batch });
    }
    out
}

#[tonic::async_trait]
impl Snapshots for SnapshotService {
    async fn prepare(
        &self,
        request: Request<api::PrepareSnapshotRequest>,
    ) -> Result<Response<api::PrepareSnapshotResponse>, Status> {
        let r = request.into_inner();
        let mounts = self
            .call(move |s| s.prepare(&r.key, &r.parent, labels(r.labels)))
            .await?;
        Ok(Response::new(api::PrepareSnapshotResponse { mounts }))
    }

    async fn view(
        &self,
        request: Request<api::ViewSnapshotRequest>,
    ) -> Result<Response<api::ViewSnapshotResponse>, Status> {
        let r = request.into_inner();
        let mounts = self
            .call(move |s| s.view(&r.key, &r.parent, labels(r.labels)))
            .await?;
        Ok(Response::new(api::ViewSnapshotResponse { mounts }))
    }

    async fn mounts(
        &self,
        request: Request<api::MountsRequest>,
    ) -> Result<Response<api::MountsResponse>, Status> {
        let r = request.into_inner();
        let mounts = self.read(move |s| s.mounts(&r.key))?;
        Ok(Response::new(api::MountsResponse { mounts }))
    }

    async fn commit(
        &self,
        request: Request<api::CommitSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        self.call(move |s| s.commit(&r.name, &r.key, labels(r.labels)))
            .await?;
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        request: Request<api::RemoveSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        self.call(move |s| s.remove(&r.key)).await?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        request: Request<api::StatSnapshotRequest>,
    ) -> Result<Response<api::StatSnapshotResponse>, Status> {
        let r = request.into_inner();
        let found = self.read(move |s| s.stat(&r.key))?;
        Ok(Response::new(api::StatSnapshotResponse {
            info: Some(info(found)),
        }))
    }

    async fn update(
        &self,
        request: Request<api::UpdateSnapshotRequest>,
    ) -> Result<Response<api::UpdateSnapshotResponse>, Status> {
        let r = request.into_inner();
        let wanted = r
            .info
            .ok_or_else(|| Status::invalid_argument("update request has no info"))?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let updated = self
            .call(move |s| s.update(&wanted.name, &labels(wanted.labels), &paths))
            .await?;
        Ok(Response::new(api::UpdateSnapshotResponse {
            info: Some(info(updated)),
        }))
    }

    type ListStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<api::ListSnapshotsResponse, Status>>>;

    async fn list(
        &self,
        request: Request<api::ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let filter = Filter::parse(&request.into_inner().filters)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let infos = self.call(move |s| s.list(&filter)).await?;
        let batches = batches(infos.into_iter().map(info)).into_iter().map(Ok).collect::<Vec<_>>();
        Ok(Response::new(tokio_stream::iter(batches)))
    }

    async fn usage(
        &self,
        request: Request<api::UsageRequest>,
    ) -> Result<Response<api::UsageResponse>, Status> {
        let key = request.into_inner().key;
        let mut walk = self.read(|s| s.usage_walk(&key))?;
        let deadline = Instant::now() + INLINE_USAGE;
        let usage = loop {
            if let Some(usage) = walk.advance(USAGE_STEP).map_err(|e| status(e.into()))? {
                break usage;
            }
            if Instant::now() >= deadline {
                break blocking(move || Ok(walk.finish()?)).await?;
            }
        };
        Ok(Response::new(api::UsageResponse {
            size: usage.size,
            inodes: usage.inodes,
        }))
    }

    async fn cleanup(
        &self,
        _request: Request<api::CleanupRequest>,
    ) -> Result<Response<()>, Status> {
        self.call(Snapshotter::cleanup).await?;
        Ok(Response::new(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info_with_labels(name: &str, labels: usize) -> api::Info {
        api::Info {
            name: name.into(),
            labels: (0..labels).map(|i| (format!("label-{i}"), "v".repeat(100))).collect(),
            ..api::Info::default()
        }
    }

    /// Found by the snapshotter fuzz suite: 100 infos of thousands of labels
    /// made a List message over 4 MiB, which the client refused, so List
    /// failed for everyone.
    #[test]
    fn list_messages_stay_under_a_mebibyte_whatever_the_labels() {
        let infos = (0..40).map(|i| info_with_labels(&format!("s{i}"), 3000));
        let out = batches(infos);
        assert_eq!(out.iter().map(|b| b.info.len()).sum::<usize>(), 40);
        for b in &out {
            assert!(b.info.len() == 1 || prost::Message::encoded_len(b) <= LIST_BATCH_BYTES + 64);
        }
        let small = batches((0..250).map(|i| info_with_labels(&format!("s{i}"), 0)));
        assert_eq!(small.iter().map(|b| b.info.len()).collect::<Vec<_>>(), [100, 100, 50]);
    }
}
