//! Runtime options through containerd: `ctr run --runtime-config-path FILE`
//! hands the shim `runtimeoptions.v1.Options` naming a TOML file (as the CRI
//! hands it the options table inline); every key is applied or refused with an
//! error that names it, and a refused container leaves its pod's shim serving.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrum_tests::{Env, Options};

const GRACE: Duration = Duration::from_secs(5);

/// Every mounted cgroup hierarchy (v1 controllers, hybrid's unified, or a pure v2 root).
fn cgroup_mounts() -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && (f[2] == "cgroup" || f[2] == "cgroup2")).then(|| PathBuf::from(f[1]))
        })
        .collect()
}

fn write_options(env: &Env, name: &str, toml: &str) -> String {
    let path = env.root_dir().join(name);
    std::fs::write(&path, toml).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn options_from_a_config_file_are_applied() {
    let (env, image) = Env::with_busybox();
    // ShimCgroup names an existing cgroup: made in every hierarchy, inside the
    // test's namespace cgroup, which the harness removes.
    let shim_cgroup = format!("/{}/ferrum-shims", env.namespace());
    let shim_dirs: Vec<PathBuf> = cgroup_mounts().iter().map(|m| m.join(shim_cgroup.trim_start_matches('/'))).collect();
    for d in &shim_dirs {
        std::fs::create_dir_all(d).unwrap();
        // A v1 cpuset cgroup takes no process before it has cpus and mems.
        for file in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(all) = std::fs::read_to_string(d.parent().unwrap().parent().unwrap().join(file)) {
                for dir in [d.parent().unwrap(), d.as_path()] {
                    std::fs::write(dir.join(file), all.trim()).unwrap();
                }
            }
        }
    }
    let root = env.root_dir().join("ferrum-root");
    let config = write_options(
        &env,
        "options.toml",
        &format!(
            "IoUid = 4242\nIoGid = 4343\nRoot = {:?}\nShimCgroup = {shim_cgroup:?}\nNoNewKeyring = true\n",
            root.display()
        ),
    );

    // IoUid/IoGid: the process's stdout and stderr FIFOs belong to that user.
    let script = "stat -L -c %u:%g /proc/self/fd/1 /proc/self/fd/2";
    let out = env.run_on_ferrum(&["--rm", "--runtime-config-path", &config], &image, "c1", &["sh", "-c", script]);
    out.assert_ok();
    assert_eq!(out.stdout.split_whitespace().collect::<Vec<_>>(), ["4242:4343", "4242:4343"], "{out}");

    // Root holds the state; the shim runs in ShimCgroup.
    env.run_on_ferrum(&["-d", "--runtime-config-path", &config], &image, "c2", &["sleep", "600"]).assert_ok();
    let state = root.join(env.namespace()).join("c2/state.json");
    assert!(state.exists(), "no state at {}", state.display());
    // Execs' stdio too.
    let out = env.ctr(&["tasks", "exec", "--exec-id", "e1", "c2", "stat", "-L", "-c", "%u:%g", "/proc/self/fd/1"]);
    assert!(out.success() && out.stdout.trim() == "4242:4343", "{out}");
    let shim = env.shim_pid("c2").expect("c2's shim runs");
    let cgroups = std::fs::read_to_string(format!("/proc/{shim}/cgroup")).unwrap();
    assert!(
        cgroups.lines().all(|l| l.ends_with(&shim_cgroup)),
        "the shim is not in {shim_cgroup} everywhere:\n{cgroups}"
    );
    env.remove_task("c2");
    assert!(!state.parent().unwrap().exists(), "state left in {}", state.display());

    // The shim is gone with its last container; then its cgroup can go too.
    let deadline = std::time::Instant::now() + GRACE;
    while Path::new(&format!("/proc/{shim}")).exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for d in &shim_dirs {
        std::fs::remove_dir(d).unwrap();
    }
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

/// `ctr run --no-pivot` sends runc's typed Options on containerd 2.x and
/// containerd.linux.runc.CreateOptions on 1.x; either way they reach Create and
/// the container runs (what the option does inside is runtime-core's, tested
/// there). The shim logs the options at debug level, which it runs at because
/// containerd does, each line naming the container.
#[test]
fn no_pivot_from_ctr_reaches_create_and_the_shim_logs_at_containerds_level() {
    let debug = Options { extra_config: "[debug]\n  level = \"debug\"".into(), ..Options::default() };
    let env = Env::start_with(debug).expect("starting containerd at debug level");
    let image = env.import_busybox().expect("importing busybox");
    env.run_on_ferrum(&["--rm", "--no-pivot"], &image, "c1", &["true"]).assert_ok();
    let log = std::fs::read_to_string(env.root_dir().join("containerd.log")).unwrap();
    let line =
        log.lines().find(|l| l.contains("runtime options")).unwrap_or_else(|| panic!("no options logged:\n{log}"));
    assert!(line.contains("level=debug") && line.contains("no_pivot_root: true") && line.contains("id=c1"), "{line}");
    let shim_lines: Vec<&str> = log.lines().filter(|l| l.contains("runtime=io.containerd.ferrum.v2")).collect();
    assert!(shim_lines.iter().all(|l| l.contains("id=c1")), "a shim line without the container id: {shim_lines:#?}");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
    // One private containerd at a time.
    drop(env);

    // At containerd's default level, no debug lines.
    let (env, image) = Env::with_busybox();
    env.run_on_ferrum(&["--rm"], &image, "c1", &["true"]).assert_ok();
    let log = std::fs::read_to_string(env.root_dir().join("containerd.log")).unwrap();
    assert!(!log.lines().any(|l| l.contains("runtime options")), "debug lines at info level:\n{log}");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

#[test]
fn bad_options_are_clear_errors_and_the_pod_shim_keeps_serving() {
    let (env, image) = Env::with_busybox();
    let group = ["--annotation", "io.ferrum.shim.group=pod1"];
    let mut flags = vec!["-d"];
    flags.extend(group);
    env.run_on_ferrum(&flags, &image, "good", &["sleep", "600"]).assert_ok();

    let cases = [
        ("unknown.toml", "Frobnicate = true\n", "Frobnicate"),
        ("type.toml", "IoGid = 1\nIoUid = \"nobody\"\n", "IoUid"),
        ("runc.toml", "BinaryName = \"/usr/sbin/runc\"\n", "BinaryName"),
        ("cgroup.toml", "ShimCgroup = \"/no/such/ferrum-cgroup\"\n", "ShimCgroup"),
    ];
    for (file, toml, key) in cases {
        let config = write_options(&env, file, toml);
        let mut flags = vec!["--rm", "--runtime-config-path", &config];
        flags.extend(group);
        let out = env.run_on_ferrum(&flags, &image, "bad", &["true"]);
        assert!(!out.success(), "bad options accepted\n{out}");
        assert!(out.stderr.contains(key) && out.stderr.contains("runtime options"), "unclear error\n{out}");
        // Whatever containerd kept of the failed container goes, so the next case can reuse the id.
        let _ = env.ctr(&["containers", "rm", "bad"]);
    }
    let missing = env.root_dir().join("missing.toml");
    let out =
        env.run_on_ferrum(&["--rm", "--runtime-config-path", &missing.to_string_lossy()], &image, "bad", &["true"]);
    assert!(out.stderr.contains(&*missing.to_string_lossy()), "unclear error\n{out}");
    let _ = env.ctr(&["containers", "rm", "bad"]);

    // The pod's shim still serves its container.
    let out = env.ctr(&["tasks", "exec", "--exec-id", "e1", "good", "echo", "still serving"]);
    assert!(out.success() && out.stdout.contains("still serving"), "{out}");
    env.remove_task("good");
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

/// containerd 2.x asks a runtime about itself (`ctr plugins inspect-runtime`,
/// the CRI's runtime features) by running `shim -info` with the options on
/// stdin. containerd 1.x has no such call.
#[test]
fn containerd_introspects_the_runtime() {
    use ferrum_tests::containerd::{containerd_config_schema, Schema};
    let (env, _image) = Env::with_busybox();
    let good = write_options(&env, "good.toml", "IoUid = 1000\n");
    let bad = write_options(&env, "bad.toml", "Frobnicate = 1\n");
    let inspect = |config: &str| {
        env.ctr(&[
            "plugins",
            "inspect-runtime",
            "--runtime",
            ferrum_tests::FERRUM_RUNTIME,
            "--runtime-config-path",
            config,
        ])
    };
    if containerd_config_schema().unwrap() == Schema::V2 {
        let out = inspect(&good);
        assert!(!out.success() && out.stderr.contains("inspect-runtime"), "1.x gained runtime introspection:\n{out}");
        return;
    }
    let out = inspect(&good);
    out.assert_ok();
    assert!(out.stdout.contains("io.containerd.ferrum.v2") && out.stdout.contains(&good), "{out}");
    let out = inspect(&bad);
    assert!(!out.success() && out.stderr.contains("Frobnicate"), "{out}");
    assert_eq!(env.leftovers(), Vec::<String>::new(), "left behind");
}
