//! Security properties of ferrum's containers, attacked from inside through
//! ctr -> containerd -> shim -> runtime-core: no runtime fd or cwd reaches the
//! container (the CVE-2024-21626 class), the runtime binary can never be opened
//! for writing (CVE-2019-5736), the runtime is not readable while it joins a
//! container for an exec, and nothing beyond the spec is granted.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use ferrum_tests::ctr::{assert_only_stdio, listed_fds};
use ferrum_tests::{ferrum_binary, CtrOutput, Env};
use serde_json::Value;
use sha2::{Digest, Sha256};

const GRACE: Duration = Duration::from_secs(5);

fn finish(env: &Env, id: &str) {
    env.remove_task(id);
    assert_eq!(
        env.leftovers_after(GRACE),
        Vec::<String>::new(),
        "left behind"
    );
}

#[test]
fn no_runtime_fd_reaches_the_init_or_an_exec() {
    let (env, image) = Env::with_busybox();
    // ls itself is the container's init here.
    assert_only_stdio(&env.run_on_ferrum(&["--rm"], &image, "fds", &["ls", "-l", "/proc/self/fd"]));
    env.run_on_ferrum(&["-d"], &image, "c1", &["sleep", "600"])
        .assert_ok();
    assert_only_stdio(&env.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "e1",
        "c1",
        "ls",
        "-l",
        "/proc/self/fd",
    ]));
    // With a terminal the pty slave is stdio; the master stays with the shim.
    let tty = env.ctr_in_terminal(&[
        "tasks",
        "exec",
        "-t",
        "--exec-id",
        "e2",
        "c1",
        "ls",
        "-l",
        "/proc/self/fd",
    ]);
    assert_only_stdio(&tty);
    assert!(
        listed_fds(&tty)
            .iter()
            .take(3)
            .all(|(_, t)| t.starts_with("/dev/pts/")),
        "{tty}"
    );
    finish(&env, "c1");
}

/// Prints where the process is and whether `..` walks reach anything of the
/// host: `marker` is a host path (the Env's temp dir) that the container's own
/// filesystem does not have.
fn where_am_i(marker: &str) -> String {
    format!(
        "echo cwd=$(readlink /proc/self/cwd); cd ../../../../../..; echo top=$(pwd -P); \
         test -e .{marker} && echo HOST-REACHED; test -e /proc/self/cwd{marker} && echo HOST-REACHED; \
         test -x ./bin/busybox && echo container-root; true"
    )
}

#[track_caller]
fn assert_inside(out: &CtrOutput, cwd: &str) {
    out.assert_ok();
    assert!(out.stdout.contains(&format!("cwd={cwd}\n")), "{out}");
    assert!(
        out.stdout.contains("top=/\n") && out.stdout.contains("container-root"),
        "{out}"
    );
    assert!(
        !out.stdout.contains("HOST-REACHED"),
        "a host path is reachable: {out}"
    );
}

#[test]
fn the_cwd_of_init_and_exec_is_inside_the_container() {
    let (env, image) = Env::with_busybox();
    let marker = env.root_dir().display().to_string();
    let script = where_am_i(&marker);
    let init = env.run_on_ferrum(
        &["--rm", "--cwd", "/tmp"],
        &image,
        "cwd",
        &["sh", "-c", &script],
    );
    assert_inside(&init, "/tmp");
    env.run_on_ferrum(&["-d"], &image, "c1", &["sleep", "600"])
        .assert_ok();
    let exec = env.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "e1",
        "--cwd",
        "/etc",
        "c1",
        "sh",
        "-c",
        &script,
    ]);
    assert_inside(&exec, "/etc");
    finish(&env, "c1");
}

/// CVE-2024-21626: a cwd of /proc/self/fd/N resolved while a runtime fd N to a
/// host directory is still open puts the process on the host. Every N either
/// fails the container with an error, or leaves it inside.
#[test]
fn a_cwd_through_proc_self_fd_never_reaches_the_host() {
    let (env, image) = Env::with_busybox();
    let marker = env.root_dir().display().to_string();
    let script = where_am_i(&marker);
    env.run_on_ferrum(&["-d"], &image, "c1", &["sleep", "600"])
        .assert_ok();
    for n in 3..=9 {
        let cwd = format!("/proc/self/fd/{n}");
        let id = format!("fd{n}");
        let init = env.run_on_ferrum(
            &["--rm", "--cwd", &cwd],
            &image,
            &id,
            &["sh", "-c", &script],
        );
        let exec = env.ctr(&[
            "tasks",
            "exec",
            "--exec-id",
            &id,
            "--cwd",
            &cwd,
            "c1",
            "sh",
            "-c",
            &script,
        ]);
        for out in [init, exec] {
            assert!(!out.stdout.contains("HOST-REACHED"), "{out}");
            if out.success() {
                assert!(out.stdout.contains("container-root"), "{out}");
            } else {
                assert!(
                    out.stderr.contains(&cwd) || out.stderr.contains("cwd"),
                    "the error names the cwd: {out}"
                );
            }
        }
    }
    finish(&env, "c1");
}

fn sha256_of(path: &std::path::Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    format!("{:x}", Sha256::digest(bytes))
}

/// The shim binary on the host, with its hash before an attack.
struct RuntimeBinary {
    path: std::path::PathBuf,
    before: String,
}

impl RuntimeBinary {
    fn assert_unchanged(&self) {
        assert_eq!(sha256_of(&self.path), self.before, "the shim binary on the host changed");
    }
}

/// A container `c1` (made with `flags`) that sleeps, for an attack from inside;
/// and the runtime binary as it was before.
fn running_victim(flags: &[&str]) -> (Env, RuntimeBinary) {
    let (env, image) = Env::with_busybox();
    let path = ferrum_binary("containerd-shim-ferrum-v2");
    let runtime = RuntimeBinary { before: sha256_of(&path), path };
    let mut all = vec!["-d"];
    all.extend_from_slice(flags);
    env.run_on_ferrum(&all, &image, "c1", &["sleep", "600"]).assert_ok();
    (env, runtime)
}

/// Runs as an exec in the container: finds the process whose command line
/// names /tmp/evil (the runtime binary, run through `#!/proc/self/exe`), and
/// tries to open its executable for writing, directly and through an fd.
/// (The name is pieced together so that this script's own command line does not match.)
const ATTACK: &str = r#"
name=/tmp/ev; name=${name}il
for d in /proc/[0-9]*; do
  [ "${d#/proc/}" = $$ ] && continue
  grep -q $name $d/cmdline 2>/dev/null || continue
  echo "victim ${d#/proc/} exe=$(readlink $d/exe)"
  ( exec 5>>$d/exe ) 2>&1 && echo "OPENED-FOR-WRITE direct"
  ( exec 4<$d/exe && exec 5>>/proc/self/fd/4 ) 2>&1 && echo "OPENED-FOR-WRITE via fd"
done
echo attack-done
"#;

/// CVE-2019-5736: a container program `#!/proc/self/exe`, run by the runtime
/// for an exec, makes the kernel re-execute the runtime's own binary inside the
/// container, where the container then opens it for writing through
/// /proc/<pid>/exe. Safe outcomes: the runtime cannot be re-executed at all
/// (ferrum: its binary is reachable only through a detached read-only mount),
/// or every open for writing is refused. Should it run, the victim waits (the
/// binary's `start` reads its stdin to the end) so the attack is no race.
fn proc_self_exe_program(flags: &[&str]) {
    let (env, runtime) = running_victim(flags);
    // `-bundle` swallows the script's path, so the binary parses the rest of
    // the exec's arguments as a `start`.
    let plant = "printf '#!/proc/self/exe -bundle\\n' > /tmp/evil && chmod 755 /tmp/evil";
    env.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "plant",
        "c1",
        "sh",
        "-c",
        plant,
    ])
    .assert_ok();

    let mut victim = env
        .ctr_command(&[
            "tasks",
            "exec",
            "--exec-id",
            "victim",
            "c1",
            "/tmp/evil",
            "-namespace",
            "x",
            "-id",
            "y",
            "start",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ctr for the victim exec");
    let deadline = Instant::now() + Duration::from_secs(20);
    let attack = loop {
        let out = env.ctr(&[
            "tasks",
            "exec",
            "--exec-id",
            "attack",
            "c1",
            "sh",
            "-c",
            ATTACK,
        ]);
        let victim_done = victim.try_wait().ok().flatten().is_some();
        if out.stdout.contains("victim ") || victim_done || Instant::now() > deadline {
            break out;
        }
        thread::sleep(Duration::from_millis(100));
    };
    env.ctr(&[
        "tasks",
        "kill",
        "--exec-id",
        "victim",
        "--signal",
        "SIGKILL",
        "c1",
    ]);
    drop(victim.stdin.take());
    let victim = victim
        .wait_with_output()
        .expect("wait for the victim's ctr");
    let victim_err = String::from_utf8_lossy(&victim.stderr);

    attack.assert_ok();
    assert!(!attack.stdout.contains("OPENED-FOR-WRITE"), "{attack}");
    if attack.stdout.contains("victim ") {
        let refused = [
            "Read-only file system",
            "Text file busy",
            "Permission denied",
        ];
        let errors: Vec<&str> = attack
            .stdout
            .lines()
            .filter(|l| l.contains("can't create"))
            .collect();
        assert_eq!(errors.len(), 2, "both opens were refused: {attack}");
        assert!(
            errors.iter().all(|l| refused.iter().any(|r| l.contains(r))),
            "EROFS, ETXTBSY or EACCES: {attack}"
        );
    } else {
        // The kernel found no interpreter: the exec failed, naming the program.
        assert!(
            !victim.status.success() && victim_err.contains("/tmp/evil"),
            "{victim_err}\n{attack}"
        );
    }
    runtime.assert_unchanged();
    finish(&env, "c1");
}

#[test]
fn a_proc_self_exe_program_cannot_write_the_runtime() {
    proc_self_exe_program(&[]);
}

/// A privileged container has CAP_SYS_PTRACE and so gets past the ptrace
/// checks on /proc/<pid>/exe of anything.
#[test]
fn a_proc_self_exe_program_cannot_write_the_runtime_even_when_privileged() {
    proc_self_exe_program(&["--privileged"]);
}

/// Watches, from inside, every process that enters the pid namespace from
/// outside (PPid 0: an exec, created by the shim) and records what it can get
/// of it: its executable, opened and then reopened for writing through the
/// fd, and its environment. Runs until /tmp/stop exists. Each look is a
/// subshell: a failed `exec` redirection would end the watching shell itself.
const WATCH: &str = r#"
seen=" 1 $$ "
while [ ! -e /tmp/stop ]; do
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    case "$seen" in *" $p "*) continue;; esac
    ppid=
    while read -r k v; do [ "$k" = PPid: ] && { ppid=$v; break; }; done < $d/status 2>/dev/null
    if [ "$ppid" != 0 ]; then seen="$seen$p "; continue; fi
    (
      exec 4<$d/exe || exit 1
      exe=$(readlink /proc/self/fd/4)
      ( exec 5>>/proc/self/fd/4 ) && echo "OPENED-FOR-WRITE pid $p exe=$exe"
      echo "pid $p exe=$exe env=$(tr '\0' ' ' < $d/environ)"
      [ "$exe" = /bin/busybox ] && exit 3
      exit 0
    ) 2>/dev/null
    [ $? = 3 ] && seen="$seen$p "
  done
done
echo watch-done
"#;

/// Runs WATCH in a container made with `flags` while 15 execs join it, and
/// returns what it saw: one line per look at a joining process.
fn watch_execs(flags: &[&str]) -> Vec<String> {
    let (env, runtime) = running_victim(flags);
    let watch = thread::scope(|s| {
        let watcher = s.spawn(|| {
            env.ctr(&[
                "tasks",
                "exec",
                "--exec-id",
                "watch",
                "c1",
                "sh",
                "-c",
                WATCH,
            ])
        });
        thread::sleep(Duration::from_millis(300));
        for i in 0..15 {
            let id = format!("e{i}");
            env.ctr(&["tasks", "exec", "--exec-id", &id, "c1", "sleep", "0.3"])
                .assert_ok();
        }
        env.ctr(&[
            "tasks",
            "exec",
            "--exec-id",
            "stop",
            "c1",
            "touch",
            "/tmp/stop",
        ])
        .assert_ok();
        watcher.join().unwrap()
    });
    watch.assert_ok();
    assert!(
        !watch.stdout.contains("OPENED-FOR-WRITE"),
        "the runtime's binary was opened for writing: {watch}"
    );
    runtime.assert_unchanged();
    let seen: Vec<String> = watch
        .stdout
        .lines()
        .filter(|l| l.starts_with("pid "))
        .map(String::from)
        .collect();
    let user_programs = seen
        .iter()
        .filter(|l| l.contains("exe=/bin/busybox "))
        .count();
    assert!(
        user_programs >= 5,
        "the watcher saw the execs' programs: {watch}"
    );
    finish(&env, "c1");
    seen
}

/// The runtime is non-dumpable from the moment it runs in the container until
/// it executes the user's program, and holds capabilities the container lacks:
/// the container's root (without CAP_SYS_PTRACE) gets the executable and the
/// environment only of the user's program. What is asserted does not depend on
/// timing: every look that succeeded must have been at the user's program; the
/// watcher seeing the programs at all shows it was looking.
#[test]
fn the_runtime_is_not_readable_while_an_exec_joins() {
    for line in watch_execs(&[]) {
        assert!(
            line.contains("exe=/bin/busybox "),
            "a process other than the user's program was readable: {line}"
        );
        assert!(
            !line.contains("TTRPC_ADDRESS") && !line.contains("ferrum-it-"),
            "the runtime's environment leaked: {line}"
        );
    }
}

/// With CAP_SYS_PTRACE a privileged container may look at the runtime while it
/// joins (as under runc), but it never gets its binary open for writing.
#[test]
fn the_runtime_binary_is_not_writable_while_an_exec_joins_a_privileged_container() {
    let seen = watch_execs(&["--privileged"]);
    let runtime = seen
        .iter()
        .filter(|l| !l.contains("exe=/bin/busybox "))
        .count();
    eprintln!("the watcher got hold of the joining runtime {runtime} times");
}

/// Capability names to the mask /proc/<pid>/status shows.
fn cap_mask(names: &Value) -> u64 {
    const CAPS: [&str; 41] = [
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "KILL",
        "SETGID",
        "SETUID",
        "SETPCAP",
        "LINUX_IMMUTABLE",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_ADMIN",
        "NET_RAW",
        "IPC_LOCK",
        "IPC_OWNER",
        "SYS_MODULE",
        "SYS_RAWIO",
        "SYS_CHROOT",
        "SYS_PTRACE",
        "SYS_PACCT",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_NICE",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "MKNOD",
        "LEASE",
        "AUDIT_WRITE",
        "AUDIT_CONTROL",
        "SETFCAP",
        "MAC_OVERRIDE",
        "MAC_ADMIN",
        "SYSLOG",
        "WAKE_ALARM",
        "BLOCK_SUSPEND",
        "AUDIT_READ",
        "PERFMON",
        "BPF",
        "CHECKPOINT_RESTORE",
    ];
    names
        .as_array()
        .into_iter()
        .flatten()
        .fold(0, |mask, name| {
            let name = name.as_str().unwrap().trim_start_matches("CAP_");
            let bit = CAPS
                .iter()
                .position(|c| *c == name)
                .unwrap_or_else(|| panic!("unknown capability {name}"));
            mask | 1 << bit
        })
}

/// Default deny: the container has the capabilities its spec lists and no
/// other, the devices the spec and the OCI defaults give and no other, and a
/// mount for each spec mount, masked and read-only path and nothing else.
#[test]
fn nothing_beyond_the_spec_is_granted() {
    let (env, image) = Env::with_busybox();
    let script = "grep ^Cap /proc/self/status; echo ==; \
        find /dev -path /dev/shm/\\* -prune -o -path /dev/mqueue/\\* -prune -o -print; echo ==; \
        cut -d' ' -f5 /proc/self/mountinfo";
    env.run_on_ferrum(&["-d"], &image, "c1", &["sleep", "600"])
        .assert_ok();
    let out = env.ctr(&["tasks", "exec", "--exec-id", "e1", "c1", "sh", "-c", script]);
    out.assert_ok();
    let bundle = env.root_dir().join(format!(
        "state/io.containerd.runtime.v2.task/{}/c1",
        env.namespace()
    ));
    let spec: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    let parts: Vec<&str> = out.stdout.split("==\n").collect();
    let [caps, dev, mounts] = parts[..] else {
        panic!("{out}")
    };

    let caps_spec = &spec["process"]["capabilities"];
    for (line, set) in [
        ("CapInh", "inheritable"),
        ("CapPrm", "permitted"),
        ("CapEff", "effective"),
        ("CapBnd", "bounding"),
        ("CapAmb", "ambient"),
    ] {
        let shown = caps
            .lines()
            .find(|l| l.starts_with(line))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap();
        let shown = u64::from_str_radix(shown, 16).unwrap();
        assert_eq!(
            shown,
            cap_mask(&caps_spec[set]),
            "{line} vs the spec's {set}: {out}"
        );
    }

    let mut allowed: BTreeSet<String> = [
        "/dev",
        "/dev/pts",
        "/dev/pts/ptmx",
        "/dev/ptmx",
        "/dev/shm",
        "/dev/mqueue",
        "/dev/fd",
        "/dev/stdin",
        "/dev/stdout",
        "/dev/stderr",
    ]
    .map(String::from)
    .into();
    // The OCI runtime spec's default devices, whether or not the spec lists them.
    allowed
        .extend(["null", "zero", "full", "random", "urandom", "tty"].map(|d| format!("/dev/{d}")));
    for device in spec["linux"]["devices"].as_array().into_iter().flatten() {
        allowed.insert(device["path"].as_str().unwrap().to_string());
    }
    let extra: Vec<&str> = dev.lines().filter(|d| !allowed.contains(*d)).collect();
    assert!(
        extra.is_empty(),
        "devices beyond the spec: {extra:?}\n{out}"
    );

    let mut allowed: BTreeSet<String> = BTreeSet::from(["/".to_string()]);
    for m in spec["mounts"].as_array().into_iter().flatten() {
        allowed.insert(m["destination"].as_str().unwrap().to_string());
    }
    for key in ["maskedPaths", "readonlyPaths"] {
        for p in spec["linux"][key].as_array().into_iter().flatten() {
            allowed.insert(p.as_str().unwrap().to_string());
        }
    }
    let extra: Vec<&str> = mounts.lines().filter(|m| !allowed.contains(*m)).collect();
    assert!(extra.is_empty(), "mounts beyond the spec: {extra:?}\n{out}");
    finish(&env, "c1");
}
