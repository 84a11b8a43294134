//! A blocking CRI v1 client over containerd's Unix socket (k8s-cri's tonic
//! stubs on a current-thread tokio runtime), for synchronous tests.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Response, Status};
use tower::service_fn;

/// Longer than any single CRI call of the tests should take, so a hung
/// runtime fails the test instead of stalling it.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

pub struct CriClient {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl CriClient {
    pub fn connect(socket: &Path) -> Result<CriClient> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building a tokio runtime for the CRI client")?;
        let socket: PathBuf = socket.to_path_buf();
        let channel = rt
            .block_on(async {
                // The URI is required by tonic but unused: every connection goes to the socket.
                Endpoint::try_from("http://[::]:50051")?
                    .connect_with_connector(service_fn(move |_: Uri| {
                        let socket = socket.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(
                                UnixStream::connect(socket).await?,
                            ))
                        }
                    }))
                    .await
            })
            .context("connecting to containerd's CRI socket")?;
        Ok(CriClient {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    /// A handle on the RuntimeService, for `call(client.runtime().rpc(req))`.
    pub fn runtime(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    pub fn images(&self) -> ImageServiceClient<Channel> {
        self.images.clone()
    }

    /// Runs one RPC to completion; a call still running after CALL_TIMEOUT fails
    /// with DEADLINE_EXCEEDED.
    pub fn call<T>(
        &self,
        rpc: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, Status> {
        self.rt.block_on(async {
            match tokio::time::timeout(CALL_TIMEOUT, rpc).await {
                Ok(reply) => reply.map(Response::into_inner),
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "no reply from the CRI within {CALL_TIMEOUT:?}"
                ))),
            }
        })
    }
}
