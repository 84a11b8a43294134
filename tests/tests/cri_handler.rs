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
/// options are in the file the example's ConfigPath names. The 2.x example's
/// `ferrum-features` must be the same runtime, options and snapshotter under
/// runc's type, as the harness declares it.
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
    match schema {
        Schema::V3 => {
            let features = table_lines(&toml, ".runtimes.ferrum-features]");
            assert!(features.contains(&"runtime_type = \"io.containerd.runc.v2\"".to_string()), "{features:?}");
            let shim = features
                .iter()
                .find_map(|l| l.strip_prefix("runtime_path = "))
                .map(|p| Path::new(p.trim_matches('"')))
                .expect("runtime_path");
            assert!(shim.is_absolute(), "containerd takes only an absolute runtime_path: {shim:?}");
            assert_eq!(shim.file_name().unwrap(), Handler::Ferrum.shim_binary());
            let rest = |lines: &[String]| -> Vec<String> {
                lines.iter().filter(|l| !l.starts_with("runtime_")).cloned().collect()
            };
            assert_eq!(rest(&features), rest(&runtime), "the same snapshotter");
            assert_eq!(table_lines(&toml, ".runtimes.ferrum-features.options]"), options);
        }
        Schema::V2 => assert!(!toml.contains("ferrum-features"), "1.6 would run runc for it"),
    }
    FerrumHandler {
        options: options
            .into_iter()
            .filter(|l| !l.starts_with("Root = "))
            .collect(),
        snapshotter,
    }
}

/// A pod under each of the example's handlers: the shim keeps its state where
/// the handler's `Root` option says, and (2.x) the pod's containers are on the
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
    let handlers: &[Handler] = match schema {
        Schema::V3 => &[Handler::Ferrum, Handler::FerrumFeatures],
        Schema::V2 => &[Handler::Ferrum],
    };
    for &handler in handlers {
        pod_under_the_example(&cri, handler, on_own_snapshotter.as_deref());
    }
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

fn pod_under_the_example(cri: &CriEnv, handler: Handler, on_own_snapshotter: Option<&str>) {
    let pod = cri.pod_config("example");
    let pod_id = cri.run_pod(handler, &pod).expect("RunPodSandbox");
    assert_eq!(cri.shims(Handler::Runc), Vec::<i32>::new(), "{handler:?} is served by ferrum's shim");
    let id = cri.run_container(
        &pod_id,
        &pod,
        &cri.container_config(&pod, "app", &["sleep", "600"]),
    );
    let state = cri.state_root(handler).join("k8s.io");
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
        assert_eq!(info["snapshotter"], snapshotter, "{info}");
        assert_eq!(
            cri.exec_ok(&id, &["cat", "/proc/self/cmdline"]),
            "cat\0/proc/self/cmdline\0"
        );
    }
    cri.remove_pod_fully(&pod_id);
}

/// A CRI whose ferrum handlers have one option besides Root.
fn with_option(line: &str) -> CriEnv {
    CriEnv::start_with(CriOptions {
        ferrum: FerrumHandler { options: vec![line.into()], snapshotter: None },
        ..Default::default()
    })
    .expect("starting containerd")
}

/// A key ferrum does not know fails the sandbox with an error naming it.
/// Under runc's runtime type (`ferrum-features`) containerd decodes the table
/// into runc's Options itself and drops what they lack: the key never
/// reaches ferrum, and the pod runs.
#[test]
fn an_unknown_option_is_refused_by_name() {
    let cri = with_option("NoSuchOption = true");
    let err = cri
        .run_pod(Handler::Ferrum, &cri.pod_config("refused"))
        .expect_err("an unknown option");
    assert!(err.message().contains("NoSuchOption"), "{err}");
    // The other handlers of the same containerd run.
    for handler in [Handler::Runc, Handler::FerrumFeatures] {
        let pod = cri.pod_config(handler.name());
        let pod_id = cri.run_pod(handler, &pod).expect("RunPodSandbox");
        cri.remove_pod_fully(&pod_id);
    }
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

/// runc's keys that mean nothing without runc reach ferrum under either
/// runtime type and are refused by name: BinaryName would pick a runc binary.
/// (Not `ferrum-features` on 1.6, where it is runc: see `CriEnv::served_by`.)
#[test]
fn binary_name_is_refused_under_either_type() {
    let cri = with_option("BinaryName = \"/usr/sbin/runc\"");
    for handler in [Handler::Ferrum, Handler::FerrumFeatures] {
        if cri.served_by(handler) == Handler::Runc {
            let pod_id = cri.run_pod(handler, &cri.pod_config("runc")).expect("runc takes BinaryName");
            cri.remove_pod_fully(&pod_id);
            continue;
        }
        let err = cri
            .run_pod(handler, &cri.pod_config(handler.name()))
            .expect_err(&format!("{handler:?}: BinaryName"));
        assert!(err.message().contains("BinaryName is set, but ferrum runs no runc binary"), "{handler:?}: {err}");
    }
    assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new());
}

/// The RuntimeClasses name the handlers the config examples declare, and a
/// pod uses each: `ferrum-features` one with `hostUsers: false`.
#[test]
fn runtime_class_names_the_handler() {
    let yaml = fs::read_to_string(Path::new(EXAMPLES).join("runtimeclass.yaml")).unwrap();
    let handlers: Vec<&str> = yaml
        .lines()
        .filter_map(|l| l.strip_prefix("handler: "))
        .collect();
    assert_eq!(handlers, [Handler::Ferrum.name(), Handler::FerrumFeatures.name()]);
    for handler in &handlers {
        assert!(yaml.contains(&format!("runtimeClassName: {handler}\n")), "{yaml}");
    }
    assert!(yaml.contains("hostUsers: false"), "{yaml}");
    for (config, declared) in [
        ("containerd-config-v2.toml", &handlers[..1]),
        ("containerd-config-v3.toml", &handlers[..]),
    ] {
        let toml = fs::read_to_string(Path::new(EXAMPLES).join(config)).unwrap();
        for handler in declared {
            assert!(toml.contains(&format!(".runtimes.{handler}]")), "{config}: {handler}");
        }
    }
}

