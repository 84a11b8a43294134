//! Loading and checking config.json.

use crate::error::{Error, Result};
use oci_spec::runtime::Spec;
use std::path::{Path, PathBuf};

/// Read `<bundle>/config.json`. Errors name the bundle, the field (as a path
/// like `linux.namespaces[7].type`) and say what is wrong (serde's message
/// carries the line and column).
pub fn load_spec(bundle: &Path) -> Result<Spec> {
    let path = bundle.join("config.json");
    let invalid = |reason: String| Error::InvalidSpec { bundle: bundle.to_path_buf(), reason };
    let text = std::fs::read(&path).map_err(|e| invalid(format!("read {}: {e}", path.display())))?;
    let spec: Spec = serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&text))
        .map_err(|e| invalid(format!("{}: {}", e.path(), e.inner())))?;
    validate(&spec).map_err(invalid)?;
    Ok(spec)
}

fn validate(spec: &Spec) -> std::result::Result<(), String> {
    let process = spec.process().as_ref().ok_or("no process section")?;
    match process.args() {
        Some(args) if !args.is_empty() && !args[0].is_empty() => {}
        _ => return Err("process.args must name the program to run".into()),
    }
    if !process.cwd().is_absolute() {
        return Err(format!("process.cwd {:?} is not an absolute path", process.cwd()));
    }
    if spec.root().is_none() {
        return Err("no root section".into());
    }
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        if !m.destination().is_absolute() {
            return Err(format!("mounts[{i}].destination {:?} is not absolute", m.destination()));
        }
    }
    Ok(())
}

/// The rootfs as an absolute path: `root.path` is relative to the bundle unless absolute.
pub(crate) fn rootfs_path(bundle: &Path, spec: &Spec) -> PathBuf {
    let root = spec.root().as_ref().map(|r| r.path().clone()).unwrap_or_else(|| "rootfs".into());
    if root.is_absolute() {
        root
    } else {
        bundle.join(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_with(config: &str) -> tempdir::TempBundle {
        tempdir::TempBundle::new(config)
    }

    mod tempdir {
        pub struct TempBundle(pub std::path::PathBuf);
        impl TempBundle {
            pub fn new(config: &str) -> Self {
                let dir = std::env::temp_dir().join(format!(
                    "ferrum-spec-{}-{:?}",
                    std::process::id(),
                    std::thread::current().id()
                ));
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("config.json"), config).unwrap();
                Self(dir)
            }
        }
        impl Drop for TempBundle {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn malformed_json_names_bundle_and_position() {
        let b = bundle_with("{\"ociVersion\": \"1.0.2\",");
        let err = load_spec(&b.0).unwrap_err().to_string();
        assert!(err.contains("invalid config.json"), "{err}");
        assert!(err.contains(&b.0.display().to_string()), "{err}");
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn an_unknown_name_is_reported_with_its_field() {
        let b = bundle_with(r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"pid"},{"type":"bogusns"}]}}"#);
        let err = load_spec(&b.0).unwrap_err().to_string();
        assert!(err.contains("linux.namespaces[1].type: unknown variant `bogusns`"), "{err}");
    }

    #[test]
    fn empty_args_are_rejected() {
        let b = bundle_with(
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"cwd":"/","args":[],"user":{"uid":0,"gid":0}}}"#,
        );
        let err = load_spec(&b.0).unwrap_err().to_string();
        assert!(err.contains("process.args"), "{err}");
    }

    /// Found by the config.json fuzz suite: the error did not say which
    /// mount, and with a mount given as a JSON array the value alone was no help.
    #[test]
    fn a_relative_mount_destination_is_named_by_index() {
        let b = bundle_with(
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"cwd":"/","args":["sh"],"user":{"uid":0,"gid":0}},
                "mounts":[{"destination":"/proc","type":"proc"},["vf","x"]]}"#,
        );
        let err = load_spec(&b.0).unwrap_err().to_string();
        assert!(err.contains(r#"mounts[1].destination "vf" is not absolute"#), "{err}");
    }

    #[test]
    fn relative_root_is_joined_to_bundle() {
        let b = bundle_with(
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"cwd":"/","args":["sh"],"user":{"uid":0,"gid":0}}}"#,
        );
        let spec = load_spec(&b.0).unwrap();
        assert_eq!(rootfs_path(&b.0, &spec), b.0.join("rootfs"));
    }
}
