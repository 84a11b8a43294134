//! containerd's config.toml for a test Env: every path inside the Env's temp dir.

use std::fmt::Write;
use std::path::Path;

/// The config schema: `version = 2` for containerd 1.x, `version = 3` for 2.x.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    V2,
    V3,
}

impl Schema {
    /// From `containerd --version`, e.g. `containerd github.com/containerd/containerd
    /// 1.6.20~ds1 …` or `containerd github.com/containerd/containerd/v2 v2.1.9 …`.
    pub fn from_version_output(output: &str) -> Option<Schema> {
        let version = output.split_whitespace().nth(2)?.trim_start_matches('v');
        let major: u32 = version.split('.').next()?.parse().ok()?;
        Some(if major >= 2 { Schema::V3 } else { Schema::V2 })
    }

    /// The CRI plugin ids; 2.x split the plugin into runtime, images and the gRPC service.
    fn cri_plugins(self) -> &'static [&'static str] {
        match self {
            Schema::V2 => &["io.containerd.grpc.v1.cri"],
            Schema::V3 => &[
                "io.containerd.cri.v1.runtime",
                "io.containerd.cri.v1.images",
                "io.containerd.grpc.v1.cri",
            ],
        }
    }
}

pub(crate) struct ConfigPaths<'a> {
    pub root: &'a Path,
    pub state: &'a Path,
    pub grpc: &'a Path,
    pub ttrpc: &'a Path,
    pub opt: &'a Path,
    /// The ferrum-snapshotter socket, when the Env runs one.
    pub snapshotter: Option<&'a Path>,
}

pub(crate) fn render(schema: Schema, paths: &ConfigPaths, cri: bool, extra: &str) -> String {
    let mut toml = String::new();
    let version = match schema {
        Schema::V2 => 2,
        Schema::V3 => 3,
    };
    let _ = writeln!(toml, "version = {version}");
    let _ = writeln!(toml, "root = {}", quoted(paths.root));
    let _ = writeln!(toml, "state = {}", quoted(paths.state));
    if !cri {
        let ids: Vec<String> = schema
            .cri_plugins()
            .iter()
            .map(|id| format!("\"{id}\""))
            .collect();
        let _ = writeln!(toml, "disabled_plugins = [{}]", ids.join(", "));
    }
    let _ = writeln!(toml, "\n[grpc]\n  address = {}", quoted(paths.grpc));
    let _ = writeln!(toml, "\n[ttrpc]\n  address = {}", quoted(paths.ttrpc));
    // The opt plugin would otherwise create /opt/containerd on the host.
    let _ = writeln!(
        toml,
        "\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = {}",
        quoted(paths.opt)
    );
    if let Some(socket) = paths.snapshotter {
        let _ = writeln!(
            toml,
            "\n[proxy_plugins.ferrum]\n  type = \"snapshot\"\n  address = {}",
            quoted(socket)
        );
    }
    if !extra.is_empty() {
        let _ = writeln!(toml, "\n{extra}");
    }
    toml
}

/// A TOML basic string. Test paths are plain ASCII; quotes and backslashes are
/// still escaped so an odd TMPDIR cannot break the file.
pub(crate) fn quoted(path: &Path) -> String {
    let raw = path.display().to_string();
    format!("\"{}\"", raw.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(snapshotter: Option<&Path>) -> ConfigPaths<'_> {
        ConfigPaths {
            root: Path::new("/t/root"),
            state: Path::new("/t/state"),
            grpc: Path::new("/t/grpc.sock"),
            ttrpc: Path::new("/t/grpc.sock.ttrpc"),
            opt: Path::new("/t/opt"),
            snapshotter,
        }
    }

    #[test]
    fn version_output() {
        let debian = "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3";
        assert_eq!(Schema::from_version_output(debian), Some(Schema::V2));
        let upstream2 = "containerd github.com/containerd/containerd/v2 v2.1.9 abcdef";
        assert_eq!(Schema::from_version_output(upstream2), Some(Schema::V3));
        // Debian sid's 2.1.9+ds1-5, as scripts/install-containerd2 fetches it.
        let sid = "containerd github.com/containerd/containerd/v2 2.1.9+unknown ";
        assert_eq!(Schema::from_version_output(sid), Some(Schema::V3));
        assert_eq!(
            Schema::from_version_output(
                "containerd github.com/containerd/containerd/v2 2.1.9~ds1-1"
            ),
            Some(Schema::V3)
        );
        assert_eq!(Schema::from_version_output("garbage"), None);
    }

    #[test]
    fn v2_config() {
        let toml = render(
            Schema::V2,
            &paths(Some(Path::new("/t/snap.sock"))),
            false,
            "",
        );
        assert!(
            toml.starts_with("version = 2\nroot = \"/t/root\"\nstate = \"/t/state\"\n"),
            "{toml}"
        );
        assert!(
            toml.contains("disabled_plugins = [\"io.containerd.grpc.v1.cri\"]"),
            "{toml}"
        );
        assert!(
            toml.contains("[grpc]\n  address = \"/t/grpc.sock\""),
            "{toml}"
        );
        assert!(
            toml.contains("[ttrpc]\n  address = \"/t/grpc.sock.ttrpc\""),
            "{toml}"
        );
        assert!(
            toml.contains(
                "[proxy_plugins.ferrum]\n  type = \"snapshot\"\n  address = \"/t/snap.sock\""
            ),
            "{toml}"
        );
    }

    #[test]
    fn v3_config_disables_all_cri_plugins() {
        let toml = render(
            Schema::V3,
            &paths(None),
            false,
            "[debug]\n  level = \"debug\"",
        );
        assert!(toml.starts_with("version = 3\n"), "{toml}");
        assert!(toml.contains(
            "disabled_plugins = [\"io.containerd.cri.v1.runtime\", \"io.containerd.cri.v1.images\", \"io.containerd.grpc.v1.cri\"]"
        ));
        assert!(!toml.contains("proxy_plugins"), "{toml}");
        assert!(toml.ends_with("[debug]\n  level = \"debug\"\n"), "{toml}");
    }

    #[test]
    fn cri_on_disables_nothing() {
        assert!(!render(Schema::V2, &paths(None), true, "").contains("disabled_plugins"));
    }

    #[test]
    fn quotes_are_escaped() {
        assert_eq!(quoted(Path::new("/a\"b\\c")), r#""/a\"b\\c""#);
    }
}
