//! linux.sysctl: only keys that belong to a namespace the container has, as runc.

use super::{Describe, Result};
use crate::namespaces::Namespaces;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

const IPC_KEYS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// The namespace a sysctl key lives in, if any.
fn namespace_of(key: &str) -> Option<LinuxNamespaceType> {
    if IPC_KEYS.contains(&key) || key.starts_with("fs.mqueue.") {
        Some(LinuxNamespaceType::Ipc)
    } else if key.starts_with("net.") {
        Some(LinuxNamespaceType::Network)
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        Some(LinuxNamespaceType::Uts)
    } else {
        None
    }
}

pub(super) fn check(key: &str, ns: &Namespaces) -> Result<()> {
    match namespace_of(key) {
        Some(typ) if ns.has(typ) => Ok(()),
        Some(typ) => Err(format!("sysctl {key:?} needs a {typ} namespace of the container's own")),
        None => Err(format!("sysctl {key:?} is not namespaced: setting it would change the host")),
    }
}

pub(super) fn apply(spec: &Spec, ns: &Namespaces) -> Result<()> {
    let Some(sysctl) = spec.linux().as_ref().and_then(|l| l.sysctl().clone()) else { return Ok(()) };
    for (key, value) in &sysctl {
        check(key, ns)?;
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        std::fs::write(&path, value).describe(|| format!("sysctl {key}={value}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_wide_and_unowned_keys_are_refused() {
        let mut ns = Namespaces::default();
        assert!(check("kernel.panic", &ns).unwrap_err().contains("not namespaced"));
        assert!(check("net.ipv4.ip_forward", &ns).unwrap_err().contains("net namespace"));
        ns.clone_flags |= LinuxNamespaceType::Network as u64;
        assert!(check("net.ipv4.ip_forward", &ns).is_ok());
        assert!(check("fs.mqueue.msg_max", &ns).is_err());
    }
}
