//! AppArmor profile and SELinux label of the container's process, as runc:
//! set for the exec (they take effect when the user's program starts).

use super::{Describe, Result};
use oci_spec::runtime::Process;
use std::path::Path;

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

/// Apply process.apparmorProfile and process.selinuxLabel for the next exec.
pub(super) fn set_exec_labels(p: &Process) -> Result<()> {
    let apparmor = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.trim() == "Y");
    // The kernel creates this mount point in every sysfs once SELinux is on.
    let selinux = Path::new("/sys/fs/selinux").is_dir();
    // As runc: a label for an LSM the host lacks is an error (the container
    // would run unconfined); the CRI only asks for what the host has.
    if p.selinux_label().as_deref().is_some_and(|l| !l.is_empty()) && !selinux {
        return Err("process.selinuxLabel: selinux label is specified in config, but selinux is disabled or not supported".into());
    }
    if p.apparmor_profile().as_deref().is_some_and(|l| !l.is_empty()) && !apparmor {
        return Err("process.apparmorProfile: apparmor profile is specified in config, but apparmor is disabled or not supported".into());
    }
    for (lsm, content) in exec_attributes(p, apparmor, selinux) {
        // Per-LSM files (Linux 5.1+) where they exist, the shared one before.
        let own = format!("/proc/self/attr/{lsm}/exec");
        let file = if Path::new(&own).exists() { own } else { "/proc/self/attr/exec".to_string() };
        std::fs::write(&file, &content).describe(|| format!("set {lsm} exec label {content:?} ({file})"))?;
    }
    Ok(())
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
