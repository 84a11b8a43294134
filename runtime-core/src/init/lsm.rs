//! AppArmor profile and SELinux label of the container's process, as runc:
//! set for the exec (they take effect when the user's program starts).
//!
//! Written through our own procfs (crate::procfs): a container whose /proc
//! holds dummy attr files, or has a host directory mounted over them, would
//! otherwise take the label into a plain file and run unconfined.

use super::Result;
use crate::procfs::{self, Base};
use oci_spec::runtime::Process;
use std::io::ErrorKind;
use std::path::Path;

/// The LSMs the host has, found out before any container mount exists: after
/// them, /sys may be the container's.
pub(crate) struct Host {
    apparmor: bool,
    selinux: bool,
}

impl Host {
    pub(crate) fn detect() -> Host {
        // As runc: AppArmor's securityfs directory, and the module saying so.
        let apparmor = Path::new("/sys/kernel/security/apparmor").is_dir()
            && std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.starts_with('Y'));
        // The kernel creates this mount point in every sysfs once SELinux is on.
        let selinux = Path::new("/sys/fs/selinux").is_dir();
        Host { apparmor, selinux }
    }

    /// Apply process.apparmorProfile and process.selinuxLabel for the next exec.
    pub(crate) fn set_exec_labels(&self, p: &Process) -> Result<()> {
        // As runc: a label for an LSM the host lacks is an error (the container
        // would run unconfined); the CRI only asks for what the host has.
        if p.selinux_label().as_deref().is_some_and(|l| !l.is_empty()) && !self.selinux {
            return Err("process.selinuxLabel: selinux label is specified in config, but selinux is disabled or not supported".into());
        }
        if p.apparmor_profile().as_deref().is_some_and(|l| !l.is_empty()) && !self.apparmor {
            return Err("process.apparmorProfile: apparmor profile is specified in config, but apparmor is disabled or not supported".into());
        }
        for (lsm, content) in exec_attributes(p, self.apparmor, self.selinux) {
            write_exec_attr(lsm, &content).map_err(|e| match (lsm, e.kind()) {
                // AppArmor's answer for a profile it does not have.
                ("apparmor", ErrorKind::NotFound) => {
                    format!("process.apparmorProfile: AppArmor profile {:?} is not loaded ({e})", p.apparmor_profile().as_deref().unwrap_or_default())
                }
                _ => format!("set the {lsm} exec label {content:?}: {e}"),
            })?;
        }
        Ok(())
    }
}

/// What to write where before the exec: (attr file, content).
fn exec_attributes(p: &Process, apparmor: bool, selinux: bool) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(profile) = p.apparmor_profile().as_deref().filter(|s| !s.is_empty() && apparmor) {
        out.push(("apparmor", format!("exec {profile}")));
    }
    if let Some(label) = p.selinux_label().as_deref().filter(|s| !s.is_empty() && selinux) {
        out.push(("selinux", label.to_string()));
    }
    out
}

/// The per-LSM file (Linux 5.1+) where it exists, the shared one before:
/// one write of `content`, which the LSM takes or refuses whole.
fn write_exec_attr(lsm: &str, content: &str) -> std::io::Result<()> {
    let own = format!("attr/{lsm}/exec");
    match procfs::write(Base::ThreadSelf, &own, content.as_bytes()) {
        // The file, not the profile, is missing (before Linux 5.1).
        Err(e) if e.kind() == ErrorKind::NotFound && !procfs::exists(Base::ThreadSelf, &own) => {
            procfs::write(Base::ThreadSelf, "attr/exec", content.as_bytes())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(json: &str) -> Process {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn labels_only_for_enabled_lsms_and_in_their_syntax() {
        let p = process(r#"{"cwd":"/","user":{"uid":0,"gid":0},"apparmorProfile":"cri-containerd.apparmor.d","selinuxLabel":"system_u:system_r:container_t:s0"}"#);
        assert_eq!(exec_attributes(&p, false, false), vec![]);
        assert_eq!(exec_attributes(&p, true, false), vec![("apparmor", "exec cri-containerd.apparmor.d".to_string())]);
        assert_eq!(exec_attributes(&p, false, true), vec![("selinux", "system_u:system_r:container_t:s0".to_string())]);
    }
}
