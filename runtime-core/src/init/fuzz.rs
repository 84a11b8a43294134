//! config.json fuzzed into everything runtime-core checks that needs no
//! container: `load_spec`, then each check the init makes of the fields it
//! reads (the seccomp profile compiled, capability names, sysctl keys, mount
//! options, CPU lists, hook state), the cgroup placement (cgroupfs and
//! systemd paths) and the resources written to a scratch copy of this
//! process's cgroup files. The cases start from containerd's default spec with
//! every field set (`ferrum_fuzz::spec`) and change one to three fields, or
//! the file's bytes. The live half, which creates the containers through a
//! shim, is tests/tests/fuzz_config.rs.

use super::{capabilities, seccomp, sysctl};
use crate::cgroup::systemd::UnitPath;
use crate::cgroup::Cgroup;
use crate::hooks::{self, HookKind, HookState};
use crate::mount::MountOptions;
use crate::namespaces::Namespaces;
use crate::spec::load_spec;
use ferrum_fuzz::{mutate_bytes, mutate_json, short, Mutation, Rng, Run, Scratch};
use oci_spec::runtime::Spec;
use serde_json::Value;
use std::path::{Component, Path};

/// `ctr oci spec` of containerd 1.6.
const CONTAINERD_SPEC: &str = include_str!("fuzz/containerd-spec.json");

fn base() -> Value {
    ferrum_fuzz::spec::every_field(serde_json::from_str(CONTAINERD_SPEC).expect("the fixture is JSON"))
}


/// A plain directory `cg` in `dir` with the names of this process's own
/// cgroup files, so that `Cgroup::apply` takes the paths it takes on this host
/// (v1 or v2) and writes its values into ordinary files; and a child cgroup
/// whose name a file name built from the spec could climb out through.
fn scratch_cgroup(dir: &Path) -> Cgroup {
    let dir = &dir.join("cg");
    std::fs::create_dir_all(dir.join("hugetlb.a")).unwrap();
    let own = Cgroup::resolve(None, "x").expect("read this process's cgroups");
    for parent in own.dirs().iter().filter_map(|d| d.parent()) {
        for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                let _ = std::fs::write(dir.join(entry.file_name()), "");
            }
        }
    }
    // The controllers every_field sets that this host may not have.
    for file in ["hugetlb.2MB.limit_in_bytes", "rdma.max", "net_cls.classid", "net_prio.ifpriomap", "memory.high", "pids.max"] {
        std::fs::write(dir.join(file), "").unwrap();
    }
    // A v2 directory: its parent (the scratch's own) has no controllers to enable.
    let _ = std::fs::remove_file(dir.join("cgroup.subtree_control"));
    Cgroup::from_dirs(vec![dir.to_path_buf()])
}

/// What one case wrote, for the assertions and the failure message.
struct Case {
    bytes: Vec<u8>,
    mutations: Vec<Mutation>,
}

fn make_case(n: usize, rng: &mut Rng) -> Case {
    let mut spec = base();
    if n == 0 {
        // The unmutated spec must load and pass every check.
        return Case { bytes: serde_json::to_vec(&spec).unwrap(), mutations: Vec::new() };
    }
    if rng.chance(20) {
        let mut bytes = serde_json::to_vec_pretty(&spec).unwrap();
        mutate_bytes(rng, &mut bytes);
        return Case { bytes, mutations: Vec::new() };
    }
    let mutations = (0..1 + rng.below(3)).map(|_| mutate_json(rng, &mut spec)).collect();
    Case { bytes: serde_json::to_vec(&spec).unwrap(), mutations }
}

impl Case {
    fn describe(&self) -> String {
        let changes: Vec<String> = self.mutations.iter().map(|m| format!("{} <- {}", m.path, m.what)).collect();
        match changes.is_empty() {
            true => format!("bytes: {}", short(&String::from_utf8_lossy(&self.bytes))),
            false => changes.join("; "),
        }
    }

    /// Whether `message` names one of the fields this case changed: its path,
    /// one of the field names on the way, or (for a removed key) its parent.
    fn names_a_changed_field(&self, message: &str) -> bool {
        self.mutations.iter().any(|m| {
            message.contains(&m.path)
                || m.fields.iter().any(|f| message.contains(f.as_str()))
                || m.what.strip_prefix("removed key ").is_some_and(|k| message.contains(k.trim_matches('"')))
        })
    }
}

#[test]
fn config_json_fuzz() {
    let run = Run::new("config.json (runtime-core checks)", 3000);
    let bundle = Scratch::new("bundle");
    let cgroup_dir = Scratch::new("cgroup");
    let scratch = scratch_cgroup(cgroup_dir.path());
    let (mut loaded, mut refused) = (0, 0);
    run.each(|n, rng| {
        let case = make_case(n, rng);
        std::fs::write(bundle.path().join("config.json"), &case.bytes).unwrap();
        let spec = match load_spec(bundle.path()) {
            Ok(spec) => spec,
            Err(e) => {
                assert!(n != 0, "containerd's full spec is refused: {e}");
                let message = e.to_string();
                assert!(
                    message.starts_with(&format!("bundle {}: invalid config.json: ", bundle.path().display())),
                    "{message}"
                );
                // serde names the field it failed on; our own checks name theirs.
                assert!(
                    case.mutations.is_empty() || case.names_a_changed_field(&message),
                    "the error names no field that changed\n  case: {}\n  error: {message}",
                    case.describe()
                );
                refused += 1;
                return;
            }
        };
        loaded += 1;
        check_fields(&spec, bundle.path(), &scratch, n == 0).unwrap_or_else(|e| panic!("{e}\n  case: {}", case.describe()));
        let outside: Vec<_> = std::fs::read_dir(cgroup_dir.path()).unwrap().flatten().map(|e| e.file_name()).filter(|n| n != "cg").collect();
        assert!(outside.is_empty(), "resources written outside the cgroup: {outside:?}\n  case: {}", case.describe());
    });
    run.report(&format!("{loaded} loaded and checked, {refused} refused by load_spec"));
}

/// The checks init and the cgroup code make of a loaded spec: none may panic,
/// and every refusal names what it refuses. `clean` (the unmutated spec)
/// must pass them all.
fn check_fields(spec: &Spec, bundle: &Path, scratch: &Cgroup, clean: bool) -> Result<(), String> {
    let refused = |what: String| if clean { Err(format!("the unmutated spec: {what}")) } else { Ok(()) };
    let ns = Namespaces::from_spec(spec);
    let linux = spec.linux().as_ref();
    let process = spec.process().as_ref().expect("load_spec checks there is one");

    if let Some(profile) = linux.and_then(|l| l.seccomp().as_ref()) {
        if let Err(e) = seccomp::build(profile) {
            if !e.starts_with("seccomp: ") {
                return Err(format!("a seccomp error that does not say so: {e}"));
            }
            refused(e)?;
        }
    }
    if let Some(caps) = process.capabilities() {
        let mut warnings = Vec::new();
        capabilities::Sets::from_spec(caps, &mut warnings);
        if let Some(w) = warnings.iter().find(|w| !w.starts_with("capability ")) {
            return Err(format!("a capability warning that names none: {w}"));
        }
    }
    for key in linux.and_then(|l| l.sysctl().as_ref()).into_iter().flatten().map(|(k, _)| k) {
        if let Err(e) = sysctl::check(key, &ns) {
            if !e.contains(&format!("{key:?}")) {
                return Err(format!("a sysctl error that does not name {key:?}: {e}"));
            }
            refused(e)?;
        }
    }
    for m in spec.mounts().iter().flatten() {
        let opts = MountOptions::parse(m.options().as_deref().unwrap_or_default());
        let _ = opts.data_string();
    }
    let affinity = process.exec_cpu_affinity().as_ref();
    for list in affinity.into_iter().flat_map(|a| [a.initial(), a.cpu_affinity_final()]).flatten() {
        if let Err(e) = crate::affinity::parse_cpu_list(list) {
            if !e.contains("CPU list") {
                return Err(format!("a CPU list error that does not say so: {e}"));
            }
            refused(e)?;
        }
    }
    let state = HookState::new(spec, "fuzz", bundle, "creating", Some(1));
    hooks::encode(HookKind::Prestart, &state)?;

    let cgroups_path = linux.and_then(|l| l.cgroups_path().as_deref());
    // The hierarchies' mount points, read now: other tests mount and unmount some.
    let probe = Cgroup::resolve(Some(Path::new("/probe")), "fuzz").map_err(|e| e.to_string())?;
    let roots: Vec<&Path> = probe.dirs().iter().filter_map(|d| d.parent()).collect();
    match Cgroup::resolve(cgroups_path, "fuzz") {
        Ok(cgroup) => {
            for dir in cgroup.dirs() {
                let inside = roots.iter().any(|r| dir.starts_with(r) && dir != r)
                    && !dir.components().any(|c| c == Component::ParentDir);
                if !inside {
                    return Err(format!("linux.cgroupsPath {cgroups_path:?} places the container at {}", dir.display()));
                }
            }
        }
        Err(e) => refused(e.to_string())?,
    }
    match UnitPath::parse(cgroups_path, "fuzz") {
        Ok(path) => {
            if path.unit.contains(['/', '\0']) || path.slice.contains(['/', '\0']) {
                return Err(format!("linux.cgroupsPath {cgroups_path:?} gives the systemd unit {path:?}"));
            }
        }
        Err(e) => {
            if !e.starts_with("linux.cgroupsPath ") {
                return Err(format!("a systemd path error that does not name linux.cgroupsPath: {e}"));
            }
        }
    }
    // Even the unmutated resources may be refused here, by the host's cgroup
    // version (realtime CPU on v2) or the scratch directory (no eBPF device
    // filter attaches to it): only the error's shape is checked.
    if let Some(resources) = linux.and_then(|l| l.resources().as_ref()) {
        if let Err(e) = scratch.apply(resources) {
            let message = e.to_string();
            if !message.contains("linux.resources") && !message.starts_with("cgroup ") {
                return Err(format!("a resources error that names no field or file: {message}"));
            }
        }
    }
    Ok(())
}

