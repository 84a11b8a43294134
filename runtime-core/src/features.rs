//! What this runtime supports, as the runtime-spec's features document
//! (features.md, features-linux.md): containerd 2.x asks the shim's `-info`
//! for it before it creates a container with, e.g., idmapped mounts.

use serde_json::{json, Value};

pub fn features() -> Value {
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.1",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": &crate::mount::OPTION_NAMES[..],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts", "time"],
            "capabilities": crate::init::capability_names(),
            "cgroup": { "v1": true, "v2": true, "systemd": true, "systemdUser": false },
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                            "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                              "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
            },
            "apparmor": { "enabled": true },
            "selinux": { "enabled": true },
            "intelRdt": { "enabled": false },
            "mountExtensions": { "idmap": { "enabled": true } },
        },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_mount_option_listed_is_understood() {
        for name in crate::mount::OPTION_NAMES {
            let parsed = crate::mount::MountOptions::parse(&[name]);
            assert!(parsed.data.is_empty(), "{name} would be passed to the filesystem as data");
        }
    }
}
