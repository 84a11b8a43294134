//! linux.sysctl: only keys that belong to a namespace the container has, as
//! runc, written through an unmasked procfs of our own (crate::procfs): the
//! container's /proc/sys may be dummy files, or none.

use super::{Describe, Result};
use crate::namespaces::Namespaces;
use crate::procfs::Global;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::collections::HashMap;
use std::path::PathBuf;

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

/// The key's file under /proc/sys, as sysctl(8) names it: dots separate the
/// components, and a slash stands for a dot inside one (a VLAN interface
/// "eth0.1" is "net.ipv4.conf.eth0/1.forwarding"). No component may be
/// empty, "." or "..": a key names one file of its namespace, nothing else.
fn path_of(key: &str) -> Result<PathBuf> {
    let mut path = PathBuf::from("sys");
    for part in key.split('.') {
        let part = part.replace('/', ".");
        if part.is_empty() || part == "." || part == ".." {
            return Err(format!("sysctl {key:?} is not a sysctl name (an empty, \".\" or \"..\" component)"));
        }
        path.push(part);
    }
    Ok(path)
}

/// The spec's sysctls, checked, with the procfs they will be written through.
pub(super) struct Writer {
    sysctls: HashMap<String, String>,
    procfs: Option<Global>,
}

impl Writer {
    /// Check the keys and open the procfs while no mount of the container
    /// exists yet (the writes come later, inside the container's namespaces,
    /// which decide what the files are).
    pub(super) fn new(spec: &Spec, ns: &Namespaces) -> Result<Writer> {
        let sysctls = spec.linux().as_ref().and_then(|l| l.sysctl().clone()).unwrap_or_default();
        for key in sysctls.keys() {
            check(key, ns)?;
            path_of(key)?;
        }
        let procfs = match sysctls.is_empty() {
            true => None,
            false => Some(Global::open().describe(|| "linux.sysctl".into())?),
        };
        Ok(Writer { sysctls, procfs })
    }

    pub(super) fn apply(self) -> Result<()> {
        let Some(procfs) = &self.procfs else { return Ok(()) };
        for (key, value) in &self.sysctls {
            procfs.write(path_of(key)?, value.as_bytes()).describe(|| format!("sysctl {key}={value}"))?;
        }
        Ok(())
    }
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

    #[test]
    fn keys_name_one_file_as_sysctl_8_does() {
        assert_eq!(path_of("net.ipv4.ip_forward").unwrap(), PathBuf::from("sys/net/ipv4/ip_forward"));
        assert_eq!(path_of("net.ipv4.conf.eth0/1.forwarding").unwrap(), PathBuf::from("sys/net/ipv4/conf/eth0.1/forwarding"));
        for walk in ["net.ipv4.//.//.kernel.domainname", "net..ipv4", "net.ipv4.", "net.ipv4././x"] {
            assert!(path_of(walk).unwrap_err().contains("not a sysctl name"), "{walk}");
        }
    }
}
