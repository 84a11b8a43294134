//! LSM labels enforced, through ctr (or the CRI) -> containerd -> shim ->
//! runtime-core -> kernel. AppArmor: a container given a profile runs
//! confined, and so do its execs; the CRI's RuntimeDefault confines a pod's
//! containers. SELinux: the same for process.selinuxLabel. Both: a label the
//! kernel refuses fails the container, and so do the redirects of the label
//! write (a mount onto /proc/self/attr, a rootfs without procfs whose /proc
//! holds plain files) — the container never runs unconfined. Each check runs
//! on containerd's runc-v2 shim with runc 1.1.5, the reference, then on ferrum.
//!
//! This machine's kernel has neither LSM on: the tests are `#[ignore]`d, and
//! the pure cgroup v2 lane (scripts/uml/test-lane) runs module `apparmor` with
//! `--ignored` in a User-Mode Linux guest booted with AppArmor on
//! (`FERRUM_UML_LSM=apparmor`) and module `selinux` in one enforcing the test
//! policy of scripts/uml/selinux-policy (`FERRUM_UML_LSM=selinux`). Run
//! anywhere else with `--ignored`, they fail.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrum_tests::lsm::label_of;
use ferrum_tests::{CtrOutput, Env, SpecFile, FERRUM_RUNTIME, RUNC_RUNTIME};
use serde_json::json;

const GRACE: Duration = Duration::from_secs(10);
/// The reference first: when ferrum fails a check, runc is known to pass it.
const RUNTIMES: [&str; 2] = [RUNC_RUNTIME, FERRUM_RUNTIME];

/// What a process sees of its confinement: its label (AppArmor ends it with a
/// newline, SELinux with a NUL), then whether a write only the LSM refuses
/// (to /tmp/denied) and one it allows went through.
/// The closing sleep is for the reference: runc-v2's shim copies a process's
/// output after its exit, and `ctr run --rm` may be gone before the last
/// lines (seen once in the slow guest: runc's probe ended after its first
/// line). ferrum's shim reports the exit once the output was read.
const PROBE: &str = "tr -d '\\0\\n' </proc/self/attr/current; echo
if echo x >/tmp/denied; then echo denied-write-done; else echo denied-write-refused; fi
echo x >/tmp/allowed && echo allowed-write-done; sleep 0.2";

fn probe_confined(label: &str) -> String {
    format!("{label}\ndenied-write-refused\nallowed-write-done\n")
}

fn probe_unconfined(label: &str) -> String {
    format!("{label}\ndenied-write-done\nallowed-write-done\n")
}

/// `ferrum` or `runc`, for container ids.
fn short(runtime: &str) -> &'static str {
    if runtime == FERRUM_RUNTIME {
        "ferrum"
    } else {
        "runc"
    }
}

#[track_caller]
fn assert_no_leftovers(env: &Env) {
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

/// One LSM's confinement as config.json asks for it and the kernel reports it.
struct Confinement {
    /// `apparmorProfile` or `selinuxLabel`, in the spec's `process`.
    field: &'static str,
    value: String,
    /// /proc/PID/attr/current of a process under it.
    label: String,
    /// Makes /tmp/denied of a rootfs unwritable under it (SELinux labels the
    /// file; an AppArmor profile names the path and needs nothing).
    deny: fn(&Path),
}

impl Confinement {
    /// A container `id` on a busybox rootfs of its own, running `args` under
    /// this confinement.
    fn spec(&self, env: &Env, id: &str, args: &[&str]) -> SpecFile {
        let mut file = SpecFile::new(env, id, args).unwrap();
        file.spec["process"][self.field] = json!(self.value);
        (self.deny)(&file.rootfs.join("tmp/denied"));
        file
    }
}

/// A runtime that writes the label by path would find a decoy there; after
/// the run, no decoy may hold it.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_holding(&path, needle));
        } else if fs::read_to_string(&path).is_ok_and(|s| s.contains(needle)) {
            found.push(path);
        }
    }
    found
}

/// Empty decoys of the files the label goes to, under `attr`: the per-LSM
/// file (AppArmor's, Linux 5.1+) and the shared one (SELinux's, and the
/// fallback), so a runtime writing by path finds whichever it looks for.
fn plant_decoys(attr: &Path) {
    fs::create_dir_all(attr.join("apparmor")).unwrap();
    fs::write(attr.join("apparmor/exec"), "").unwrap();
    fs::write(attr.join("exec"), "").unwrap();
}

/// A label the kernel refuses to set (an AppArmor profile that is not loaded,
/// an SELinux type the policy lacks) fails the container, naming the label on
/// ferrum; it never runs without it.
fn a_label_the_kernel_refuses_fails_the_container(refused: &Confinement) {
    let env = Env::start().unwrap();
    for runtime in RUNTIMES {
        let id = format!("refused-{}", short(runtime));
        let file = refused.spec(&env, &id, &["true"]);
        let out = file.run(&env, runtime, &["--rm"]).unwrap();
        assert!(!out.success(), "{runtime} ran a container under {:?}\n{out}", refused.value);
        if runtime == FERRUM_RUNTIME {
            assert!(out.stderr.contains(&refused.value), "the error names the label\n{out}");
        }
        env.ctr(&["containers", "rm", &id]);
    }
    let good = SpecFile::new(&env, "next", &["true"]).unwrap();
    good.run(&env, FERRUM_RUNTIME, &["--rm"]).unwrap().assert_ok();
    assert_no_leftovers(&env);
}

/// The CVE-2019-16884 class: a host directory mounted onto /proc/self/attr
/// (as `ctr run --mount type=bind,src=DIR,dst=/proc/self/attr,options=rbind:rw`
/// puts it in the spec), so that the label written for the exec lands in a
/// plain file and the process runs unconfined. Given directly, and through a
/// symlink in the rootfs (`/lnk -> /proc/self`). Refused, naming the
/// destination, as runc refuses it.
fn a_mount_onto_proc_self_attr_fails_closed(confinement: &Confinement) {
    let env = Env::start().unwrap();
    for runtime in RUNTIMES {
        for (n, destination) in ["/proc/self/attr", "/lnk/attr"].into_iter().enumerate() {
            let id = format!("attr-{}-{n}", short(runtime));
            let mut file = confinement.spec(&env, &id, &["sh", "-c", PROBE]);
            std::os::unix::fs::symlink("/proc/self", file.rootfs.join("lnk")).unwrap();
            let decoy = env.root_dir().join(format!("decoy-{id}"));
            plant_decoys(&decoy);
            let mount = json!({ "destination": destination, "type": "bind", "source": decoy, "options": ["rbind", "rw"] });
            file.spec["mounts"].as_array_mut().unwrap().push(mount);

            let out = file.run(&env, runtime, &["--rm"]).unwrap();
            let diverted = files_holding(&decoy, &confinement.value);
            assert!(diverted.is_empty(), "{runtime}: the label went to {diverted:?}\n{out}");
            assert!(!out.success(), "{runtime} ran a container with {destination} mounted over\n{out}");
            if runtime == FERRUM_RUNTIME {
                assert!(out.stderr.contains(destination), "the error names {destination}\n{out}");
            }
            env.ctr(&["containers", "rm", &id]);
        }
    }
    assert_no_leftovers(&env);
}

/// No procfs in the spec's mounts and a rootfs whose /proc holds plain files
/// where the label goes: a runtime writing by path would label a file and run
/// the process unconfined. The container must fail naming the path, or run
/// confined (the label written through a procfs of the runtime's own).
fn a_fake_proc_in_the_rootfs_cannot_take_the_label(confinement: &Confinement) {
    let env = Env::start().unwrap();
    for runtime in RUNTIMES {
        let id = format!("fakeproc-{}", short(runtime));
        let script = "echo x >/tmp/denied; exec sleep 600";
        let mut file = confinement.spec(&env, &id, &["sh", "-c", script]);
        file.spec["mounts"].as_array_mut().unwrap().retain(|m| m["type"] != "proc");
        plant_decoys(&file.rootfs.join("proc/self/attr"));

        let out = file.run(&env, runtime, &["-d"]).unwrap();
        let outcome = outcome_of(&env, &id, &out, &confinement.label);
        let diverted = files_holding(&file.rootfs.join("proc"), &confinement.value);
        assert!(diverted.is_empty(), "{runtime}: the label went to {diverted:?}\n{out}");
        match outcome {
            Outcome::Refused => {
                if runtime == FERRUM_RUNTIME {
                    assert!(out.stderr.contains("/proc"), "the error names the path\n{out}");
                }
                env.ctr(&["containers", "rm", &id]);
            }
            Outcome::Confined => {
                let denied = fs::read_to_string(file.rootfs.join("tmp/denied")).unwrap_or_default();
                assert!(denied.is_empty(), "{runtime}: a confined process wrote /tmp/denied");
                env.remove_task(&id);
            }
            Outcome::Unconfined(label) => {
                env.remove_task(&id);
                panic!("{runtime}: the container runs as {label:?}, not {:?}\n{out}", confinement.label);
            }
        }
    }
    assert_no_leftovers(&env);
}

enum Outcome {
    Refused,
    Confined,
    Unconfined(String),
}

/// What became of a container started with `ctr run -d`, as the kernel sees its init.
fn outcome_of(env: &Env, id: &str, out: &CtrOutput, label: &str) -> Outcome {
    if !out.success() {
        return Outcome::Refused;
    }
    let pid = env.task_pid(id).unwrap_or_else(|| panic!("no pid for {id}\n{out}"));
    match label_of(pid).unwrap() {
        seen if seen == label => Outcome::Confined,
        seen => Outcome::Unconfined(seen),
    }
}

/// Started with `-d` and labeled: its init as the kernel reports it, and an
/// exec's probe (the exec gets the container's process spec, label included).
fn assert_init_and_exec_confined(env: &Env, id: &str, label: &str) {
    let pid = env.task_pid(id).unwrap_or_else(|| panic!("no pid for {id}"));
    assert_eq!(label_of(pid).unwrap(), label, "{id}: the init");
    let exec = env.ctr(&["tasks", "exec", "--exec-id", "probe", id, "sh", "-c", PROBE]);
    assert_eq!(exec.assert_ok().stdout, probe_confined(label), "{id}: an exec\n{exec}");
    env.remove_task(id);
}

mod apparmor {
    use super::*;
    use ferrum_tests::cri::api::security_profile::ProfileType;
    use ferrum_tests::cri::api::{PodSandboxConfig, SecurityProfile};
    use ferrum_tests::cri::{security_context, CriEnv, Handler};
    use ferrum_tests::lsm::{is_loaded, require_apparmor, Profile};

    /// Everything allowed but writing /tmp/denied: a write the profile, and
    /// only the profile, refuses.
    const DENY_ONE_WRITE: &str = "
      file,
      capability,
      network,
      signal,
      ptrace,
      unix,
      mount,
      umount,
      pivot_root,
      deny /tmp/denied w,
    ";

    fn loaded(purpose: &str) -> (Profile, Confinement) {
        require_apparmor();
        let profile = Profile::load(purpose, DENY_ONE_WRITE).unwrap();
        let confinement = Confinement {
            field: "apparmorProfile",
            value: profile.name().to_string(),
            label: format!("{} (enforce)", profile.name()),
            deny: |_| {},
        };
        (profile, confinement)
    }

    /// As a user asks for it: `ctr run --apparmor-profile NAME`.
    #[test]
    #[ignore = "runs in the AppArmor guest lane (scripts/uml/test-lane)"]
    fn a_profile_confines_the_container_and_its_execs() {
        let (profile, confinement) = loaded("confines");
        let (env, image) = Env::with_busybox();
        for runtime in RUNTIMES {
            let rt = short(runtime);
            // The same probe without the profile: both writes go through.
            let plain = env.run_on(runtime, &["--rm"], &image, &format!("plain-{rt}"), &["sh", "-c", PROBE]);
            assert_eq!(plain.assert_ok().stdout, probe_unconfined("unconfined"), "{plain}");

            let flags = ["--rm", "--apparmor-profile", profile.name()];
            let run = env.run_on(runtime, &flags, &image, &format!("init-{rt}"), &["sh", "-c", PROBE]);
            assert_eq!(run.assert_ok().stdout, probe_confined(&confinement.label), "{run}");
            assert!(run.stderr.contains("/tmp/denied: Permission denied"), "{run}");

            let id = format!("execs-{rt}");
            let flags = ["-d", "--apparmor-profile", profile.name()];
            env.run_on(runtime, &flags, &image, &id, &["sleep", "600"]).assert_ok();
            assert_init_and_exec_confined(&env, &id, &confinement.label);
        }
        assert_no_leftovers(&env);
    }

    #[test]
    #[ignore = "runs in the AppArmor guest lane (scripts/uml/test-lane)"]
    fn a_profile_that_is_not_loaded_fails_the_container() {
        require_apparmor();
        let absent = format!("ferrum-absent-{}", std::process::id());
        assert!(!is_loaded(&absent));
        a_label_the_kernel_refuses_fails_the_container(&Confinement {
            field: "apparmorProfile",
            label: format!("{absent} (enforce)"),
            value: absent,
            deny: |_| {},
        });
    }

    #[test]
    #[ignore = "runs in the AppArmor guest lane (scripts/uml/test-lane)"]
    fn a_mount_onto_proc_self_attr_fails_closed() {
        let (_profile, confinement) = loaded("attr-mount");
        super::a_mount_onto_proc_self_attr_fails_closed(&confinement);
    }

    #[test]
    #[ignore = "runs in the AppArmor guest lane (scripts/uml/test-lane)"]
    fn a_fake_proc_in_the_rootfs_cannot_take_the_label() {
        let (_profile, confinement) = loaded("fake-proc");
        super::a_fake_proc_in_the_rootfs_cannot_take_the_label(&confinement);
    }

    /// The CRI's AppArmor: with AppArmor on, containerd loads its own profile
    /// `cri-containerd.apparmor.d` and gives it to every container that asks
    /// for RuntimeDefault or nothing; `localhost/NAME` names a loaded profile;
    /// `unconfined` sets none. The container's processes and its ExecSyncs
    /// run under it.
    fn pod_containers_run_under_the_cri_profiles(handler: Handler) {
        let (profile, confinement) = loaded("cri-localhost");
        let cri = CriEnv::start();
        let pod = cri.pod_config("apparmor");
        let pod_id = cri.run_pod(handler, &pod).expect("RunPodSandbox");
        let cases = [
            ("unset", None, "cri-containerd.apparmor.d (enforce)"),
            ("default", Some(runtime_default()), "cri-containerd.apparmor.d (enforce)"),
            ("localhost", Some(localhost(profile.name())), confinement.label.as_str()),
            ("unconfined", Some(unconfined()), "unconfined"),
        ];
        for (name, apparmor, label) in cases {
            let id = container_with(&cri, &pod_id, &pod, name, apparmor);
            // The container's own process (pid 1 of its pid namespace), then the ExecSync's.
            let seen = cri.exec_ok(&id, &["cat", "/proc/1/attr/current", "/proc/self/attr/current"]);
            assert_eq!(seen, format!("{label}\n{label}\n"), "{handler:?}: container {name}, its process and an ExecSync");
            if name == "localhost" {
                let probe = cri.exec_sync(&id, &["sh", "-c", PROBE], 30).expect("ExecSync");
                assert_eq!(String::from_utf8_lossy(&probe.stdout), probe_confined(label), "{handler:?}");
            }
        }
        assert!(is_loaded("cri-containerd.apparmor.d"), "containerd loaded its profile");
        cri.remove_pod_fully(&pod_id);
        assert_eq!(cri.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
    }

    /// A sleeping container `name` whose security context asks for
    /// `apparmor` (containerd 1.6 reads the older string field, 2.x the
    /// profile; set both).
    fn container_with(
        cri: &CriEnv,
        pod_id: &str,
        pod: &PodSandboxConfig,
        name: &str,
        apparmor: Option<SecurityProfile>,
    ) -> String {
        let mut config = cri.container_config(pod, name, &["sleep", "600"]);
        if let Some(profile) = apparmor {
            let context = security_context(&mut config);
            #[allow(deprecated)]
            {
                context.apparmor_profile = match ProfileType::try_from(profile.profile_type) {
                    Ok(ProfileType::RuntimeDefault) => "runtime/default".to_string(),
                    Ok(ProfileType::Unconfined) => "unconfined".to_string(),
                    _ => format!("localhost/{}", profile.localhost_ref),
                };
            }
            context.apparmor = Some(profile);
        }
        cri.run_container(pod_id, pod, &config)
    }

    fn runtime_default() -> SecurityProfile {
        SecurityProfile { profile_type: ProfileType::RuntimeDefault as i32, localhost_ref: String::new() }
    }

    fn unconfined() -> SecurityProfile {
        SecurityProfile { profile_type: ProfileType::Unconfined as i32, localhost_ref: String::new() }
    }

    fn localhost(name: &str) -> SecurityProfile {
        SecurityProfile { profile_type: ProfileType::Localhost as i32, localhost_ref: name.to_string() }
    }

    mod pod_containers_run_under_the_cri_profiles {
        use super::*;

        #[test]
        #[ignore = "runs in the AppArmor guest lane (scripts/uml/test-lane)"]
        fn ferrum() {
            pod_containers_run_under_the_cri_profiles(Handler::Ferrum)
        }

        #[test]
        #[ignore = "runs in the AppArmor guest lane (scripts/uml/test-lane)"]
        fn runc() {
            pod_containers_run_under_the_cri_profiles(Handler::Runc)
        }
    }
}

mod selinux {
    use super::*;
    use ferrum_tests::lsm::{require_selinux, set_file_label};

    /// The test policy's container domain (scripts/uml/selinux-test.cil):
    /// allowed everything but writing files labeled `ferrum_test_denied_t`.
    const DOMAIN: &str = "system_u:system_r:ferrum_test_t:s0";
    const DENIED_FILE: &str = "system_u:object_r:ferrum_test_denied_t:s0";
    /// Every process of the guest: the test policy never labels them otherwise.
    const GUEST: &str = "system_u:system_r:kernel_t:s0";

    fn deny(path: &Path) {
        fs::write(path, "").unwrap();
        set_file_label(path, DENIED_FILE).unwrap();
    }

    fn confinement(label: &str) -> Confinement {
        require_selinux();
        Confinement { field: "selinuxLabel", value: label.to_string(), label: label.to_string(), deny }
    }

    /// process.selinuxLabel (ctr has no flag for it: the CRI and config.json set it).
    #[test]
    #[ignore = "runs in the SELinux guest lane (scripts/uml/test-lane)"]
    fn a_label_confines_the_container_and_its_execs() {
        let confinement = confinement(DOMAIN);
        let env = Env::start().unwrap();
        for runtime in RUNTIMES {
            let rt = short(runtime);
            let mut plain = confinement.spec(&env, &format!("plain-{rt}"), &["sh", "-c", PROBE]);
            plain.spec["process"].as_object_mut().unwrap().remove("selinuxLabel");
            let out = plain.run(&env, runtime, &["--rm"]).unwrap();
            assert_eq!(out.assert_ok().stdout, probe_unconfined(GUEST), "{out}");

            let file = confinement.spec(&env, &format!("init-{rt}"), &["sh", "-c", PROBE]);
            let out = file.run(&env, runtime, &["--rm"]).unwrap();
            assert_eq!(out.assert_ok().stdout, probe_confined(DOMAIN), "{out}");

            let id = format!("execs-{rt}");
            confinement.spec(&env, &id, &["sleep", "600"]).run(&env, runtime, &["-d"]).unwrap().assert_ok();
            assert_init_and_exec_confined(&env, &id, DOMAIN);
        }
        assert_no_leftovers(&env);
    }

    #[test]
    #[ignore = "runs in the SELinux guest lane (scripts/uml/test-lane)"]
    fn a_label_the_policy_lacks_fails_the_container() {
        super::a_label_the_kernel_refuses_fails_the_container(&confinement("system_u:system_r:ferrum_no_such_t:s0"));
    }

    #[test]
    #[ignore = "runs in the SELinux guest lane (scripts/uml/test-lane)"]
    fn a_mount_onto_proc_self_attr_fails_closed() {
        super::a_mount_onto_proc_self_attr_fails_closed(&confinement(DOMAIN));
    }

    #[test]
    #[ignore = "runs in the SELinux guest lane (scripts/uml/test-lane)"]
    fn a_fake_proc_in_the_rootfs_cannot_take_the_label() {
        super::a_fake_proc_in_the_rootfs_cannot_take_the_label(&confinement(DOMAIN));
    }
}
