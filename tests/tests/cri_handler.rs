//! ferrum as a CRI runtime handler configured the way examples/ ships it: the
//! handler's `options` table reaches the shim (as runtimeoptions TOML) and is
//! honoured or refused by name, the per-handler snapshotter (containerd 2.x),
//! and the RuntimeClass naming the handler.

use std::fs;
use std::path::Path;
use std::time::Duration;

use ferrum_tests::containerd::{containerd_config_schema, Schema};
use ferrum_tests::cri::{CriEnv, CriOptions, FerrumHandler, Handler};

const GRACE: Duration = Duration::from_secs(10);
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");

/// `key = value` lines of table `[…suffix]` in an example config.
fn table_lines(toml: &str, suffix: &str) -> Vec<String> {
    let mut lines = toml
        .lines()
        .skip_while(|l| !(l.starts_with('[') && l.ends_with(suffix)));
    assert!(lines.next().is_some(), "no table ending in {suffix}");
    lines
        .take_while(|l| !l.starts_with('['))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// The example config for the containerd under test, as the ferrum handler
/// the harness configures: its options (Root pointed into the test's dir by
/// the harness) and, where containerd has one, its snapshotter. For 1.6 the
/// options are in the file the example's ConfigPath names.
fn example_handler(schema: Schema) -> FerrumHandler {
    let read = |file: &str| fs::read_to_string(Path::new(EXAMPLES).join(file)).unwrap();
    let (toml, options) = match schema {
        Schema::V2 => {
            let toml = read("containerd-config-v2.toml");
            let table = table_lines(&toml, ".runtimes.ferrum.options]");
            let config_path = table
                .iter()
                .find_map(|l| l.strip_prefix("ConfigPath = "))
                .expect("ConfigPath");
            let file = Path::new(config_path.trim_matches('"'))
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let body = read(&file)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from)
                .collect();
            (toml, body)
        }
        Schema::V3 => {
            let toml = read("containerd-config-v3.toml");
            let table = table_lines(&toml, ".runtimes.ferrum.options]");
            (toml, table)
        }
    };
    let runtime = table_lines(&toml, ".runtimes.ferrum]");
    assert!(
        runtime.contains(&"runtime_type = \"io.containerd.ferrum.v2\"".to_string()),
        "{runtime:?}"
    );
    let snapshotter = runtime
        .iter()
        .find_map(|l| l.strip_prefix("snapshotter = "))
        .map(|s| s.trim_matches('"').to_string());
    assert!(
        options.iter().any(|l| l.starts_with("Root = ")),
        "the example sets Root: {options:?}"
    );
    FerrumHandler {
        options: options
            .into_iter()
            .filter(|l| !l.starts_with("Root = "))
            .collect(),
        snapshotter,
    }
}

/// A pod under the example's handler: the shim keeps its state where the
/// handler's `Root` option says, and (2.x) the pod's containers are on the
/// handler's snapshotter.
#[test]
fn example_handler_options_reach_the_shim() {
    let schema = containerd_config_schema().expect("finding containerd");
    let ferrum = example_handler(schema);
    let on_own_snapshotter = ferrum.snapshotter.clone();
    assert_eq!(
        on_own_snapshotter.is_some(),
        schema == Schema::V3,
        "1.6 has no per-runtime snapshotter"
    );
    let cri = CriEnv::start_with(CriOptions {
        ferrum,
        ferrum_snapshotter: on_own_snapshotter.is_some(),
        ..Default::default()
    })
    .expect("starting containerd with the example's handler");
    let pod = cri.pod_config("example");
    let pod_id = cri.run_pod(Handler::Ferrum, &pod).expect("RunPodSandbox");
    let id = cri.run_container(
        &pod_id,
        &pod,
        &cri.container_config(&pod, "app", &["sleep", "600"]),
    );
    let state = cri.state_root(Handler::Ferrum).join("k8s.io");
    for container in [&pod_id, &id] {
        let file = state.join(container).join("state.json");
        assert!(
            file.is_file(),
            "{} missing: Root did not reach the shim",
            file.display()
        );
    }
    assert!(!Path::new("/run/ferrum/containers/k8s.io")
        .join(&id)
        .exists());
    if let Some(snapshotter) = on_own_snapshotter {
        let (_, info) = cri.container_status(&id);
        let info: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
        assert_eq!(info["snapshotter"], snapshotter.as_str(), "{info}");
        assert_eq!(
            cri.exec_ok(&id, &["cat", "/proc/self/cmdline"]),
            "cat\0/proc/self/cmdline\0"
        );
    }
    cri.remove_pod_fully(&pod_id);
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

/// A key ferrum does not know fails the sandbox with an error naming it.
#[test]
fn an_unknown_option_is_refused_by_name() {
    let cri = CriEnv::start_with(CriOptions {
        ferrum: FerrumHandler {
            options: vec!["NoSuchOption = true".into()],
            snapshotter: None,
        },
        ..Default::default()
    })
    .expect("starting containerd");
    let err = cri
        .run_pod(Handler::Ferrum, &cri.pod_config("refused"))
        .expect_err("an unknown option");
    assert!(err.message().contains("NoSuchOption"), "{err}");
    // The runc handler of the same containerd is unaffected.
    let pod = cri.pod_config("runc");
    let pod_id = cri.run_pod(Handler::Runc, &pod).expect("RunPodSandbox");
    cri.remove_pod_fully(&pod_id);
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

/// The RuntimeClass names the handler the config examples declare.
#[test]
fn runtime_class_names_the_handler() {
    let yaml = fs::read_to_string(Path::new(EXAMPLES).join("runtimeclass.yaml")).unwrap();
    let handlers: Vec<&str> = yaml
        .lines()
        .filter_map(|l| l.strip_prefix("handler: "))
        .collect();
    assert_eq!(handlers, [Handler::Ferrum.name()]);
    assert!(
        yaml.contains(&format!("runtimeClassName: {}", Handler::Ferrum.name())),
        "{yaml}"
    );
    for config in ["containerd-config-v2.toml", "containerd-config-v3.toml"] {
        let toml = fs::read_to_string(Path::new(EXAMPLES).join(config)).unwrap();
        assert!(
            toml.contains(&format!(".runtimes.{}]", Handler::Ferrum.name())),
            "{config}"
        );
    }
}
