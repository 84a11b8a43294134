//! Where a container's rootfs layers (containerd's Create `rootfs` mounts)
//! are mounted: on `<bundle>/rootfs` in the host's mount namespace, as
//! runc-v2's shim does, when something outside the container may look there;
//! otherwise by init, on the same path in the container's new mount namespace
//! before it pivots, where nothing else sees them.
//!
//! Inside, the host's mount table does not grow by a mount per running
//! container. Every later container pays for that growth: its new mount
//! namespace starts as a copy of the table, its pivot_root's detach of the old
//! root walks it, and every mountinfo read reads it. And the layers go with
//! the container's last process: there is nothing to unmount at delete, and
//! nothing a crash could leave behind.

use crate::error::{Error, Result};
use crate::hooks::HookKind;
use crate::mount::{mount_rootfs, MountOptions, RootfsMount};
use crate::namespaces::Namespaces;
use nix::mount::MsFlags;
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    Host,
    Namespace,
}

/// Host when any of these holds:
/// - the container makes no mount namespace of its own (or joins one);
/// - it is in a user namespace, or we are rootless: the layers are the
///   host's, mounted with the host root's privilege;
/// - the spec has hooks that run in the runtime's namespaces (prestart,
///   createRuntime, poststart, poststop): they may read the rootfs at its
///   path, as runc lets them, poststop after the container is gone;
/// - the layers are idmapped (`uidmap=`): made with user namespaces of the
///   runtime's (`idmap::take_layer_maps`);
/// - the rootfs propagation is shared: a mount made inside would propagate
///   to the host, and outlive the container there.
pub(crate) fn place(spec: &Spec, ns: &Namespaces, layers: &[RootfsMount]) -> Place {
    let own_mount_namespace = ns.creates(LinuxNamespaceType::Mount);
    let user_namespace = ns.has(LinuxNamespaceType::User) || crate::rootless::is_rootless();
    let runtime_hooks = [HookKind::Prestart, HookKind::CreateRuntime, HookKind::Poststart, HookKind::Poststop]
        .iter()
        .any(|kind| !kind.of(spec).is_empty());
    let idmapped = layers.iter().flat_map(|m| &m.options).any(|o| o.starts_with("uidmap=") || o.starts_with("gidmap="));
    let shared = spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().as_deref())
        .is_some_and(|p| MountOptions::parse(&[p]).propagation.iter().any(|f| f.contains(MsFlags::MS_SHARED)));
    if own_mount_namespace && !user_namespace && !runtime_hooks && !idmapped && !shared {
        Place::Namespace
    } else {
        Place::Host
    }
}

/// Mount the layers on the host's `<bundle>/rootfs`, which is returned for
/// the create's guard to unmount should the create fail.
pub(super) fn mount_on_host(id: &str, bundle: &Path, layers: &[RootfsMount]) -> Result<PathBuf> {
    mount_rootfs(bundle, layers).map_err(|e| Error::Init { id: id.into(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> Spec {
        serde_json::from_str(&format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},"linux":{{"namespaces":[{{"type":"mount"}},{{"type":"pid"}}]{extra}}}}}"#
        ))
        .unwrap()
    }

    fn overlay(extra: &[&str]) -> Vec<RootfsMount> {
        let mut options = vec!["lowerdir=/l".to_string(), "upperdir=/u".into(), "workdir=/w".into()];
        options.extend(extra.iter().map(|o| o.to_string()));
        vec![RootfsMount { typ: "overlay".into(), source: "overlay".into(), options }]
    }

    fn place_of(spec: &Spec, layers: &[RootfsMount]) -> Place {
        place(spec, &Namespaces::from_spec(spec), layers)
    }

    #[test]
    fn a_plain_container_mounts_its_layers_itself() {
        assert_eq!(place_of(&spec(""), &overlay(&[])), Place::Namespace);
        assert_eq!(place_of(&spec(r#","rootfsPropagation":"rslave""#), &overlay(&[])), Place::Namespace);
        assert_eq!(place_of(&spec(r#","rootfsPropagation":"private""#), &overlay(&[])), Place::Namespace);
    }

    #[test]
    fn what_the_host_may_need_to_see_is_mounted_there() {
        let layers = overlay(&[]);
        let joined = r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"mount","path":"/proc/1/ns/mnt"}]}}"#;
        assert_eq!(place_of(&serde_json::from_str(joined).unwrap(), &layers), Place::Host, "joined mount namespace");
        let none = r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"pid"}]}}"#;
        assert_eq!(place_of(&serde_json::from_str(none).unwrap(), &layers), Place::Host, "no mount namespace");
        let user = r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"mount"},{"type":"user"}]}}"#;
        assert_eq!(place_of(&serde_json::from_str(user).unwrap(), &layers), Place::Host, "user namespace");
        assert_eq!(place_of(&spec(r#","rootfsPropagation":"rshared""#), &layers), Place::Host, "shared propagation");
        assert_eq!(place_of(&spec(""), &overlay(&["uidmap=0:1000:65536"])), Place::Host, "idmapped layers");
        for kind in ["prestart", "createRuntime", "poststart", "poststop"] {
            let hooked = format!(
                r#"{{"ociVersion":"1.0.2","hooks":{{"{kind}":[{{"path":"/bin/true"}}]}},"linux":{{"namespaces":[{{"type":"mount"}}]}}}}"#
            );
            assert_eq!(place_of(&serde_json::from_str(&hooked).unwrap(), &layers), Place::Host, "{kind} hook");
        }
        let in_container = r#"{"ociVersion":"1.0.2","hooks":{"createContainer":[{"path":"/bin/true"}],"startContainer":[{"path":"/bin/true"}]},"linux":{"namespaces":[{"type":"mount"}]}}"#;
        assert_eq!(place_of(&serde_json::from_str(in_container).unwrap(), &layers), Place::Namespace);
    }
}
