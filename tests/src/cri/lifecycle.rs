//! The CRI calls of a pod's life, as kubelet makes them. Calls that may
//! legitimately fail return the gRPC status; the rest panic with it.

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tonic::Status;

use super::api::{
    ContainerConfig, ContainerState, ContainerStatus, CreateContainerRequest, ExecSyncRequest,
    ExecSyncResponse, PodSandboxConfig, PodSandboxStatus, PodSandboxStatusRequest,
    RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StatusRequest, StatusResponse, StopContainerRequest, StopPodSandboxRequest,
};
use super::{CriEnv, Handler};

impl CriEnv {
    /// The runtime's Status as kubelet asks for it: what each handler supports
    /// (containerd 2.x) and what the CRI implementation does.
    #[track_caller]
    pub fn runtime_status(&self) -> StatusResponse {
        let request = StatusRequest { verbose: false };
        self.client
            .call(self.client.runtime().status(request))
            .unwrap_or_else(|e| panic!("Status: {e}"))
    }

    pub fn run_pod(&self, handler: Handler, config: &PodSandboxConfig) -> Result<String, Status> {
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.name().to_string(),
        };
        let id = self
            .client
            .call(self.client.runtime().run_pod_sandbox(request))?
            .pod_sandbox_id;
        Ok(id)
    }

    pub fn create_container(
        &self,
        pod_id: &str,
        pod: &PodSandboxConfig,
        config: &ContainerConfig,
    ) -> Result<String, Status> {
        let request = CreateContainerRequest {
            pod_sandbox_id: pod_id.to_string(),
            config: Some(config.clone()),
            sandbox_config: Some(pod.clone()),
        };
        let id = self
            .client
            .call(self.client.runtime().create_container(request))?
            .container_id;
        Ok(id)
    }

    pub fn start_container(&self, id: &str) -> Result<(), Status> {
        let request = StartContainerRequest {
            container_id: id.to_string(),
        };
        self.client
            .call(self.client.runtime().start_container(request))
            .map(drop)
    }

    /// Create and start, or panic saying which failed.
    #[track_caller]
    pub fn run_container(
        &self,
        pod_id: &str,
        pod: &PodSandboxConfig,
        config: &ContainerConfig,
    ) -> String {
        let id = self
            .create_container(pod_id, pod, config)
            .expect("CreateContainer");
        self.start_container(&id).expect("StartContainer");
        id
    }

    /// ContainerStatus (verbose), or a panic.
    #[track_caller]
    pub fn container_status(&self, id: &str) -> (ContainerStatus, HashMap<String, String>) {
        let request = super::api::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: true,
        };
        let reply = self
            .client
            .call(self.client.runtime().container_status(request))
            .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e}"));
        (
            reply.status.expect("ContainerStatus without a status"),
            reply.info,
        )
    }

    /// The status once the container has exited, or a panic after `timeout`.
    #[track_caller]
    pub fn wait_exited(&self, id: &str, timeout: Duration) -> ContainerStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, _) = self.container_status(id);
            if status.state == ContainerState::ContainerExited as i32 {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} still {:?} after {timeout:?}",
                status.state()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// PodSandboxStatus (verbose) and its `info` JSON, or a panic.
    #[track_caller]
    pub fn pod_status(&self, id: &str) -> (PodSandboxStatus, Value) {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: true,
        };
        let reply = self
            .client
            .call(self.client.runtime().pod_sandbox_status(request))
            .unwrap_or_else(|e| panic!("PodSandboxStatus {id}: {e}"));
        let info = reply
            .info
            .get("info")
            .and_then(|i| serde_json::from_str(i).ok())
            .unwrap_or(Value::Null);
        (
            reply.status.expect("PodSandboxStatus without a status"),
            info,
        )
    }

    /// The OCI spec containerd gave the runtime for a container (from the
    /// verbose status), for tests that check what the CRI asked for.
    #[track_caller]
    pub fn container_spec(&self, id: &str) -> Value {
        let (_, info) = self.container_status(id);
        let info: Value =
            serde_json::from_str(info.get("info").expect("verbose info")).expect("info is JSON");
        info["runtimeSpec"].clone()
    }

    pub fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        timeout_secs: i64,
    ) -> Result<ExecSyncResponse, Status> {
        let request = ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|c| c.to_string()).collect(),
            timeout: timeout_secs,
        };
        self.client.call(self.client.runtime().exec_sync(request))
    }

    /// ExecSync that must exit 0; returns its stdout.
    #[track_caller]
    pub fn exec_ok(&self, id: &str, cmd: &[&str]) -> String {
        let reply = self
            .exec_sync(id, cmd, 30)
            .unwrap_or_else(|e| panic!("ExecSync {cmd:?} in {id}: {e}"));
        let stderr = String::from_utf8_lossy(&reply.stderr);
        assert_eq!(
            reply.exit_code, 0,
            "ExecSync {cmd:?} in {id}: stderr {stderr}"
        );
        String::from_utf8_lossy(&reply.stdout).into_owned()
    }

    pub fn stop_container(&self, id: &str, timeout_secs: i64) -> Result<(), Status> {
        let request = StopContainerRequest {
            container_id: id.to_string(),
            timeout: timeout_secs,
        };
        self.client
            .call(self.client.runtime().stop_container(request))
            .map(drop)
    }

    pub fn remove_container(&self, id: &str) -> Result<(), Status> {
        let request = RemoveContainerRequest {
            container_id: id.to_string(),
        };
        self.client
            .call(self.client.runtime().remove_container(request))
            .map(drop)
    }

    pub fn stop_pod(&self, id: &str) -> Result<(), Status> {
        let request = StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.client
            .call(self.client.runtime().stop_pod_sandbox(request))
            .map(drop)
    }

    pub fn remove_pod(&self, id: &str) -> Result<(), Status> {
        let request = RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        };
        self.client
            .call(self.client.runtime().remove_pod_sandbox(request))
            .map(drop)
    }

    /// StopPodSandbox then RemovePodSandbox (which removes its containers), or a panic.
    #[track_caller]
    pub fn remove_pod_fully(&self, id: &str) {
        self.stop_pod(id)
            .unwrap_or_else(|e| panic!("StopPodSandbox {id}: {e}"));
        self.remove_pod(id)
            .unwrap_or_else(|e| panic!("RemovePodSandbox {id}: {e}"));
    }
}
