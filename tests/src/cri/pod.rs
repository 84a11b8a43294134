//! Pod and container configs as kubelet would send them for a plain pod, which
//! tests then change field by field.

use std::fs;
use std::sync::atomic::Ordering;

use super::api::{
    ContainerConfig, ContainerMetadata, ImageSpec, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata,
};
use super::{CriEnv, APP_IMAGE};

impl CriEnv {
    /// A pod named `name`: its own network, IPC and UTS namespaces, a pid
    /// namespace per container (kubelet's default), logs in the CriEnv's dir,
    /// and a cgroup parent below the Env's namespace cgroup so cleanup finds it.
    pub fn pod_config(&self, name: &str) -> PodSandboxConfig {
        let n = self.next_pod.fetch_add(1, Ordering::Relaxed);
        let namespace = self.env().namespace().to_string();
        let log_directory = self.dir().join("logs").join(format!("{name}-{n}"));
        fs::create_dir_all(&log_directory).expect("creating the pod's log directory");
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_string(),
                uid: format!("{namespace}-{n}"),
                namespace: "default".to_string(),
                attempt: 0,
            }),
            hostname: name.to_string(),
            log_directory: log_directory.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("/{namespace}/pod{n}"),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(pod_namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A busybox container running `command`, logging to `<name>.log` in the
    /// pod's log directory, in the pod's namespaces as kubelet copies them.
    pub fn container_config(
        &self,
        pod: &PodSandboxConfig,
        name: &str,
        command: &[&str],
    ) -> ContainerConfig {
        let namespaces = pod
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_else(pod_namespaces);
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: APP_IMAGE.to_string(),
                ..Default::default()
            }),
            command: strings(command),
            log_path: format!("{name}.log"),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(namespaces),
                    masked_paths: strings(&MASKED_PATHS),
                    readonly_paths: strings(&READONLY_PATHS),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// What kubelet sends for the default procMount: containerd applies only the
/// lists it is given to app containers.
const MASKED_PATHS: [&str; 10] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn pod_namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// The container's security context, created on first use.
pub fn security_context(config: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

/// The pod's security context, created on first use.
pub fn pod_security_context(config: &mut PodSandboxConfig) -> &mut LinuxSandboxSecurityContext {
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}
