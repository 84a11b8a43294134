//! The CRI plugin's sections of config.toml: runtime handlers `ferrum`,
//! `ferrum-features` and `runc`, the local pause image, the test CNI,
//! everything inside the Env.
//! containerd 1.x (`version = 2`) has one plugin `io.containerd.grpc.v1.cri`;
//! 2.x (`version = 3`) splits it into `io.containerd.cri.v1.images` and
//! `io.containerd.cri.v1.runtime`.

use std::fmt::Write;
use std::path::Path;

use crate::containerd::{quoted, Schema};

pub(crate) struct CriPaths<'a> {
    pub pause_image: &'a str,
    /// runc's `--root` for the runc handler, and the same option of ferrum's:
    /// both keep their state inside the test's dir.
    pub runc_root: &'a Path,
    pub ferrum_root: &'a Path,
    /// Where the ferrum options go for containerd 1.6 (see `FerrumHandler::options`).
    pub ferrum_options_file: &'a Path,
    /// containerd-shim-ferrum-v2, absolute: the `runtime_path` of `ferrum-features`.
    pub ferrum_shim: &'a Path,
    pub cni_bin: &'a Path,
    pub cni_conf: &'a Path,
    /// Every handler's `base_runtime_spec`, if any (`CriOptions::base_spec_hooks`).
    pub base_runtime_spec: Option<&'a Path>,
}

/// What the `ferrum` handler gets besides its runtime type.
#[derive(Debug, Clone, Default)]
pub struct FerrumHandler {
    /// Runtime options besides `Root` (which the harness sets), as TOML lines
    /// with runc's key names. containerd 2.x hands the handler's `options`
    /// table to the shim inline (runtimeoptions.Options `config_body`); 1.6
    /// decodes that table into runtimeoptions.Options itself, so there the
    /// options go into a file named by `ConfigPath` (`config_path`).
    pub options: Vec<String>,
    /// The handler's own snapshotter (containerd 2.x only: 1.6 has no such key).
    pub snapshotter: Option<String>,
}

impl FerrumHandler {
    /// The options with `Root` first.
    pub(crate) fn option_lines(&self, root: &Path) -> Vec<String> {
        let root = format!("Root = {}", quoted(root));
        std::iter::once(root)
            .chain(self.options.iter().cloned())
            .collect()
    }
}

pub(crate) fn render(schema: Schema, paths: &CriPaths, ferrum: &FerrumHandler) -> String {
    let (runtime_plugin, images_plugin) = match schema {
        Schema::V2 => ("io.containerd.grpc.v1.cri", "io.containerd.grpc.v1.cri"),
        Schema::V3 => (
            "io.containerd.cri.v1.runtime",
            "io.containerd.cri.v1.images",
        ),
    };
    let mut toml = String::new();
    let runtime = format!("plugins.\"{runtime_plugin}\"");
    // No CAP_SYS_RESOURCE here: runc fails a container whose oom_score_adj it
    // cannot lower unless the CRI keeps it at containerd's own. Network
    // namespaces are mounted inside the Env's state dir, so cleanup finds them.
    let _ = writeln!(
        toml,
        "[{runtime}]\n  restrict_oom_score_adj = true\n  netns_mounts_under_state_dir = true\n  enable_selinux = false"
    );
    match schema {
        Schema::V2 => {
            let _ = writeln!(toml, "  sandbox_image = \"{}\"", paths.pause_image);
        }
        Schema::V3 => {
            let _ = writeln!(toml, "  enable_cdi = false");
            let _ = writeln!(
                toml,
                "\n[plugins.\"{images_plugin}\"]\n  snapshotter = \"overlayfs\"\n\
                 [plugins.\"{images_plugin}\".pinned_images]\n  sandbox = \"{}\"",
                paths.pause_image
            );
        }
    }
    let containerd = format!("{runtime}.containerd");
    let base_spec = match paths.base_runtime_spec {
        Some(path) => format!("\n  base_runtime_spec = {}", quoted(path)),
        None => String::new(),
    };
    let _ = writeln!(toml, "\n[{containerd}]\n  default_runtime_name = \"runc\"");
    if schema == Schema::V2 {
        let _ = writeln!(toml, "  snapshotter = \"overlayfs\"");
    }
    let _ = writeln!(
        toml,
        "\n[{containerd}.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"{base_spec}\n\
         [{containerd}.runtimes.runc.options]\n  Root = {}",
        quoted(paths.runc_root)
    );
    let _ = writeln!(
        toml,
        "\n[{containerd}.runtimes.ferrum]\n  runtime_type = \"{}\"{base_spec}",
        crate::FERRUM_RUNTIME
    );
    if let Some(snapshotter) = &ferrum.snapshotter {
        let _ = writeln!(toml, "  snapshotter = \"{snapshotter}\"");
    }
    let _ = writeln!(toml, "[{containerd}.runtimes.ferrum.options]");
    match schema {
        Schema::V2 => {
            let _ = writeln!(toml, "  ConfigPath = {}", quoted(paths.ferrum_options_file));
        }
        Schema::V3 => {
            for line in ferrum.option_lines(paths.ferrum_root) {
                let _ = writeln!(toml, "  {line}");
            }
        }
    }
    // The same runtime and options as `ferrum`, under runc's runtime type: the
    // options then reach the shim as runc's typed Options (on 1.6 too).
    let _ = writeln!(
        toml,
        "\n[{containerd}.runtimes.ferrum-features]\n  runtime_type = \"{}\"\n  runtime_path = {}{base_spec}",
        crate::RUNC_RUNTIME,
        quoted(paths.ferrum_shim)
    );
    if let Some(snapshotter) = &ferrum.snapshotter {
        let _ = writeln!(toml, "  snapshotter = \"{snapshotter}\"");
    }
    let _ = writeln!(toml, "[{containerd}.runtimes.ferrum-features.options]");
    for line in ferrum.option_lines(paths.ferrum_root) {
        let _ = writeln!(toml, "  {line}");
    }
    let bin = quoted(paths.cni_bin);
    let bin_key = match schema {
        Schema::V2 => format!("bin_dir = {bin}"),
        Schema::V3 => format!("bin_dirs = [{bin}]"),
    };
    let _ = writeln!(
        toml,
        "\n[{runtime}.cni]\n  {bin_key}\n  conf_dir = {}",
        quoted(paths.cni_conf)
    );
    if schema == Schema::V3 {
        // NRI would open /var/run/nri/nri.sock on the host.
        let _ = writeln!(
            toml,
            "\n[plugins.\"io.containerd.nri.v1.nri\"]\n  disable = true"
        );
    }
    toml
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> CriPaths<'static> {
        CriPaths {
            pause_image: "localhost/pause:local",
            runc_root: Path::new("/t/runc"),
            ferrum_root: Path::new("/t/ferrum"),
            ferrum_options_file: Path::new("/t/ferrum.toml"),
            ferrum_shim: Path::new("/b/containerd-shim-ferrum-v2"),
            cni_bin: Path::new("/t/cni/bin"),
            cni_conf: Path::new("/t/cni/conf"),
            base_runtime_spec: None,
        }
    }

    #[test]
    fn v2_has_one_plugin_and_both_handlers() {
        let ferrum = FerrumHandler {
            options: vec!["IoUid = 0".into()],
            snapshotter: None,
        };
        let toml = render(Schema::V2, &paths(), &ferrum);
        assert!(!toml.contains("io.containerd.cri.v1"), "{toml}");
        assert!(
            toml.contains("sandbox_image = \"localhost/pause:local\""),
            "{toml}"
        );
        assert!(toml.contains(
            "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.ferrum]\n  runtime_type = \"io.containerd.ferrum.v2\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.ferrum.options]\n  ConfigPath = \"/t/ferrum.toml\"\n"
        ), "{toml}");
        assert!(
            toml.contains("runtimes.runc.options]\n  Root = \"/t/runc\""),
            "{toml}"
        );
        assert!(toml.contains("bin_dir = \"/t/cni/bin\""), "{toml}");
        assert!(toml.contains(
            "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.ferrum-features]\n  runtime_type = \"io.containerd.runc.v2\"\n  runtime_path = \"/b/containerd-shim-ferrum-v2\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.ferrum-features.options]\n  Root = \"/t/ferrum\"\n  IoUid = 0\n"
        ), "{toml}");
    }

    #[test]
    fn v3_splits_images_and_runtime() {
        let ferrum = FerrumHandler {
            options: Vec::new(),
            snapshotter: Some("ferrum".into()),
        };
        let toml = render(Schema::V3, &paths(), &ferrum);
        assert!(!toml.contains("grpc.v1.cri"), "{toml}");
        assert!(
            toml.contains("pinned_images]\n  sandbox = \"localhost/pause:local\""),
            "{toml}"
        );
        assert!(toml.contains("runtimes.ferrum]\n  runtime_type = \"io.containerd.ferrum.v2\"\n  snapshotter = \"ferrum\""), "{toml}");
        assert!(
            toml.contains("runtimes.ferrum.options]\n  Root = \"/t/ferrum\"\n\n"),
            "{toml}"
        );
        assert!(toml.contains("bin_dirs = [\"/t/cni/bin\"]"), "{toml}");
        assert!(toml.contains("runtimes.ferrum-features]\n  runtime_type = \"io.containerd.runc.v2\"\n  runtime_path = \"/b/containerd-shim-ferrum-v2\"\n  snapshotter = \"ferrum\"\n"), "{toml}");
    }

    #[test]
    fn a_base_runtime_spec_goes_to_every_handler() {
        let paths = CriPaths { base_runtime_spec: Some(Path::new("/t/base.json")), ..paths() };
        for schema in [Schema::V2, Schema::V3] {
            let toml = render(schema, &paths, &FerrumHandler::default());
            assert_eq!(toml.matches("\n  base_runtime_spec = \"/t/base.json\"\n").count(), 3, "{toml}");
            assert!(toml.contains("runtimes.ferrum]\n  runtime_type = \"io.containerd.ferrum.v2\"\n  base_runtime_spec"), "{toml}");
        }
    }
}
