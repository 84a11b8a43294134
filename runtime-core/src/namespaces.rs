//! Which namespaces a container gets: new ones are created by `clone3` itself
//! (so the init is born inside them), existing ones (`path`) are joined by init.

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::path::PathBuf;

#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Namespaces {
    /// CLONE_NEW* flags for clone3. The cgroup namespace is not among them: init
    /// unshares it only after the parent has placed it in its cgroup, so that the
    /// container's cgroup becomes its cgroup root.
    pub clone_flags: u64,
    pub new_cgroup: bool,
    /// A new time namespace is unshared by init too: its offsets can only be
    /// written before any process is inside.
    pub new_time: bool,
    /// A new IPC namespace is unshared by init too, once it is root of the
    /// container's user namespace: the namespace's mqueue root is owned by
    /// whoever creates it, and the container's root must own /dev/mqueue.
    pub new_ipc: bool,
    /// An existing pid namespace: the parent clones init into it (setns on a
    /// pid namespace only moves future children, so init cannot join itself).
    pub pid_path: Option<PathBuf>,
    /// Other existing namespaces, joined by init, user namespace first (joining
    /// it changes what the others may be joined with).
    pub joins: Vec<(LinuxNamespaceType, PathBuf)>,
}

impl Namespaces {
    pub(crate) fn from_spec(spec: &Spec) -> Self {
        let mut ns = Namespaces::default();
        let list = spec.linux().as_ref().and_then(|l| l.namespaces().clone()).unwrap_or_default();
        for n in list {
            match (n.typ(), n.path()) {
                (LinuxNamespaceType::Pid, Some(path)) if !path.as_os_str().is_empty() => {
                    ns.pid_path = Some(path.clone())
                }
                (typ, Some(path)) if !path.as_os_str().is_empty() => {
                    ns.joins.push((typ, path.clone()))
                }
                (LinuxNamespaceType::Cgroup, _) => ns.new_cgroup = true,
                (LinuxNamespaceType::Time, _) => ns.new_time = true,
                (LinuxNamespaceType::Ipc, _) => ns.new_ipc = true,
                (typ, _) => ns.clone_flags |= typ as u64,
            }
        }
        ns.joins.sort_by_key(|(t, _)| *t != LinuxNamespaceType::User);
        ns
    }

    pub(crate) fn creates(&self, typ: LinuxNamespaceType) -> bool {
        self.clone_flags & typ as u64 != 0
    }

    pub(crate) fn has(&self, typ: LinuxNamespaceType) -> bool {
        self.creates(typ)
            || (typ == LinuxNamespaceType::Cgroup && self.new_cgroup)
            || (typ == LinuxNamespaceType::Time && self.new_time)
            || (typ == LinuxNamespaceType::Ipc && self.new_ipc)
            || (typ == LinuxNamespaceType::Pid && self.pid_path.is_some())
            || self.joins.iter().any(|(t, _)| *t == typ)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(namespaces: &str) -> Spec {
        serde_json::from_str(&format!(
            r#"{{"ociVersion":"1.0.2","linux":{{"namespaces":{namespaces}}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn new_and_joined_namespaces_are_split() {
        let ns = Namespaces::from_spec(&spec(
            r#"[{"type":"pid"},{"type":"mount"},{"type":"network","path":"/proc/1/ns/net"},{"type":"cgroup"},{"type":"user","path":"/proc/1/ns/user"}]"#,
        ));
        assert_eq!(ns.clone_flags, libc::CLONE_NEWPID as u64 | libc::CLONE_NEWNS as u64);
        assert_eq!(ns.pid_path, None);
        assert!(ns.new_cgroup);
        assert_eq!(ns.joins[0].0, LinuxNamespaceType::User);
        assert_eq!(ns.joins[1].0, LinuxNamespaceType::Network);
        assert!(ns.has(LinuxNamespaceType::Network) && !ns.creates(LinuxNamespaceType::Network));
        assert!(!ns.has(LinuxNamespaceType::Ipc));
    }

    #[test]
    fn a_pid_namespace_path_is_for_the_parent() {
        let ns = Namespaces::from_spec(&spec(r#"[{"type":"pid","path":"/proc/7/ns/pid"},{"type":"mount"}]"#));
        assert_eq!(ns.pid_path.as_deref(), Some(std::path::Path::new("/proc/7/ns/pid")));
        assert!(ns.joins.is_empty() && !ns.creates(LinuxNamespaceType::Pid) && ns.has(LinuxNamespaceType::Pid));
    }
}
