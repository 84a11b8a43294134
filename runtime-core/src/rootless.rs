//! Rootless mode: the runtime runs without the host's root, as a normal user
//! or as root of a user namespace that does not own the host (RootlessKit's,
//! where a rootless containerd and so its shims live). Detected as runc does.
//!
//! What changes in this mode: cgroups the caller may not create are done
//! without (a limit that then cannot be applied fails by name, see
//! `cgroup::Cgroup::create`), device nodes are bound from the host (a user
//! namespace may not mknod), and a sysfs the kernel refuses is bound from the
//! host's /sys.

use crate::procfs::{self, Base};
use std::sync::OnceLock;

/// Whether this process lacks the host's root. Asked once: neither the euid
/// nor the user namespace of a runtime changes.
pub fn is_rootless() -> bool {
    static ROOTLESS: OnceLock<bool> = OnceLock::new();
    *ROOTLESS.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        euid != 0 || in_user_namespace()
    })
}

/// Whether this process is in a user namespace other than the host's (asked
/// anew: a container's init asks from the namespace it was cloned into).
pub(crate) fn in_user_namespace() -> bool {
    // No uid_map (no procfs): assume the initial namespace, as runc.
    let uid_map = procfs::read(Base::OwnProcess, "uid_map").unwrap_or_default();
    !is_initial_user_namespace(&uid_map)
}

/// The initial user namespace maps every id onto itself: "0 0 4294967295".
fn is_initial_user_namespace(uid_map: &str) -> bool {
    let lines: Vec<Vec<&str>> = uid_map.lines().map(|l| l.split_whitespace().collect()).filter(|f: &Vec<&str>| !f.is_empty()).collect();
    lines.is_empty() || lines == [["0", "0", "4294967295"]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_identity_map_of_every_id_is_the_host() {
        assert!(is_initial_user_namespace("         0          0 4294967295\n"));
        assert!(is_initial_user_namespace(""));
        // RootlessKit's: the user, then its subordinate ids.
        assert!(!is_initial_user_namespace("0 1000 1\n1 100000 65536\n"));
        // A container's own user namespace, even mapping root to root.
        assert!(!is_initial_user_namespace("0 0 65536\n"));
    }
}
