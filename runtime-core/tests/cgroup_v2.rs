//! Cgroup placement against the real kernel: `Cgroup::resolve`, `join`,
//! `procs`, `kill_all`, `remove`, on whatever cgroup layout this host has.
//!
//! - pure cgroup v2 (most users; in CI the User-Mode Linux lane,
//!   scripts/uml/test-lane, which sets FERRUM_EXPECT_PURE_V2=1 so a guest that
//!   is not pure v2 fails instead of silently testing the other path): one
//!   directory, in the single unified hierarchy;
//! - v1 or hybrid (this CI host): one directory per mounted hierarchy.
//!
//! Everything is made under a parent of the test's own, `ferrum-test-<pid>`,
//! and removed by a guard also when an assertion fails. Needs root.

use runtime_core::cgroup::{is_pure_v2, Cgroup, OomWatcher};
use std::os::fd::AsRawFd;
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Kills and reaps the child, then removes the cgroups (leaf first) and their
/// parents, whatever the test got to.
struct Cleanup {
    child: Option<libc::pid_t>,
    dirs: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(pid) = self.child.take() {
            // SAFETY: plain syscalls on our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        for dir in &self.dirs {
            // Busy for a moment after the last process died.
            let deadline = Instant::now() + Duration::from_secs(2);
            while dir.exists() && std::fs::remove_dir(dir).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if dir.exists() {
                eprintln!("cgroup_v2 cleanup: could not remove {}", dir.display());
            }
        }
    }
}

/// A child that only waits to be killed. After fork in a multi-threaded test
/// process it calls nothing but async-signal-safe pause().
fn fork_waiting_child() -> libc::pid_t {
    // SAFETY: the child runs only pause() until it is killed.
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", std::io::Error::last_os_error()),
        0 => loop {
            unsafe { libc::pause() };
        },
        pid => pid,
    }
}

/// Whether we run as root; when not, says the test is skipped. In CI, which
/// runs as root, not being root fails the test instead.
fn has_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(std::env::var("CI").is_err(), "cgroup_v2 needs root, and CI runs as root");
    eprintln!("skipped: cgroup_v2 needs root");
    false
}

/// Mountpoints of the cgroup hierarchies, one per hierarchy (st_dev of the
/// mount tells bind mounts of the same hierarchy apart), read independently
/// of runtime-core's own mountinfo parser.
fn hierarchy_mountpoints() -> BTreeSet<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut devs = BTreeSet::new();
    let mut out = BTreeSet::new();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let sep = fields.iter().position(|f| *f == "-").unwrap();
        if matches!(fields[sep + 1], "cgroup" | "cgroup2") && devs.insert(fields[2].to_string()) {
            out.insert(PathBuf::from(fields[4]));
        }
    }
    out
}

/// Waits for `pid` (our child) and returns how it ended.
fn reap(pid: libc::pid_t) -> libc::c_int {
    let mut status = 0;
    // SAFETY: waitpid on our own child, status is a valid out pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
    status
}

#[test]
fn cgroup_join_procs_kill_remove() {
    if !has_root() {
        return;
    }
    let pure_v2 = is_pure_v2();
    if std::env::var("FERRUM_EXPECT_PURE_V2").as_deref() == Ok("1") {
        assert!(pure_v2, "FERRUM_EXPECT_PURE_V2=1 but /sys/fs/cgroup is not cgroup2");
    }

    let parent = format!("ferrum-test-{}", std::process::id());
    let cgroups_path = PathBuf::from(format!("/{parent}/c1"));
    let cg = Cgroup::resolve(Some(&cgroups_path), "c1").expect("resolve");
    // Removed leaf first, then the parent of each.
    let mut guard = Cleanup { child: None, dirs: cg.dirs().to_vec() };
    guard.dirs.extend(cg.dirs().iter().map(|d| d.parent().unwrap().to_path_buf()));

    let mountpoints = hierarchy_mountpoints();
    if pure_v2 {
        // One hierarchy, and the path taken from its root (absolute cgroupsPath).
        assert_eq!(mountpoints, BTreeSet::from([PathBuf::from("/sys/fs/cgroup")]));
        assert_eq!(cg.dirs(), [Path::new("/sys/fs/cgroup").join(&parent).join("c1")]);
    } else {
        // One directory per hierarchy: every v1 controller (and the v2 one on a
        // hybrid host), each under its own mountpoint.
        let got: BTreeSet<PathBuf> =
            cg.dirs().iter().map(|d| mountpoint_of(d, &format!("{parent}/c1"))).collect();
        assert_eq!(got, mountpoints, "dirs: {:?}", cg.dirs());
        assert_eq!(cg.dirs().len(), mountpoints.len(), "one dir per hierarchy: {:?}", cg.dirs());
    }

    let child = fork_waiting_child();
    guard.child = Some(child);
    cg.join(child).expect("join");

    // The kernel's view: the child is in our cgroup in every hierarchy.
    for dir in cg.dirs() {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
        assert_eq!(procs.trim(), child.to_string(), "{}/cgroup.procs", dir.display());
    }
    let own = std::fs::read_to_string(format!("/proc/{child}/cgroup")).unwrap();
    let want = format!("/{parent}/c1");
    if pure_v2 {
        assert_eq!(own.trim(), format!("0::{want}"));
        // Same device as the root: a cgroup of the v2 hierarchy, not a stray dir.
        let dev = |p: &Path| std::fs::metadata(p).unwrap().dev();
        assert_eq!(dev(&cg.dirs()[0]), dev(Path::new("/sys/fs/cgroup")));
        assert!(cg.dirs()[0].join("cgroup.controllers").exists());
    } else {
        let placed = own.lines().filter(|l| l.ends_with(&want)).count();
        assert_eq!(placed, cg.dirs().len(), "/proc/{child}/cgroup:\n{own}");
        // A v1 cpuset cgroup takes no tasks until cpus/mems are filled in.
        for dir in cg.dirs().iter().filter(|d| d.join("cpuset.cpus").exists() && !d.join("cgroup.controllers").exists()) {
            let cpus = std::fs::read_to_string(dir.join("cpuset.cpus")).unwrap();
            assert!(!cpus.trim().is_empty(), "{}/cpuset.cpus is empty", dir.display());
        }
    }
    assert_eq!(cg.procs(), [child]);

    cg.kill_all(Duration::from_secs(5));
    assert_eq!(cg.procs(), Vec::<i32>::new(), "kill_all left processes");
    let status = reap(child);
    guard.child = None;
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "child ended with status {status:#x}, not SIGKILL"
    );

    cg.remove().expect("remove");
    for dir in cg.dirs() {
        assert!(!dir.exists(), "{} still exists after remove", dir.display());
    }
    // The parents are the guard's (runtime-core removes only the leaf).
    drop(guard);
    for dir in cg.dirs() {
        assert!(!dir.parent().unwrap().exists(), "{} left behind", dir.parent().unwrap().display());
    }
}

/// `remove` of a cgroup that still has a process fails instead of pretending.
#[test]
fn remove_of_a_busy_cgroup_fails() {
    if !has_root() {
        return;
    }
    let parent = format!("ferrum-test-{}-busy", std::process::id());
    let cg = Cgroup::resolve(Some(Path::new(&format!("/{parent}/c1"))), "c1").expect("resolve");
    let mut guard = Cleanup { child: None, dirs: cg.dirs().to_vec() };
    guard.dirs.extend(cg.dirs().iter().map(|d| d.parent().unwrap().to_path_buf()));

    let child = fork_waiting_child();
    guard.child = Some(child);
    cg.join(child).expect("join");
    let err = cg.remove().expect_err("remove of a cgroup with a live process");
    assert!(err.to_string().contains("c1"), "error names the cgroup: {err}");
    assert_eq!(cg.procs(), [child], "a failed remove must leave the process where it was");
}

/// The hierarchy's mountpoint of a cgroup dir: `/sys/fs/cgroup/memory/ferrum-test-1/c1`
/// less `ferrum-test-1/c1`.
fn mountpoint_of(dir: &Path, cgroup: &str) -> PathBuf {
    let s = dir.to_str().unwrap();
    let stripped = s.strip_suffix(cgroup).unwrap_or_else(|| panic!("{s} does not end in {cgroup}"));
    PathBuf::from(stripped.trim_end_matches('/'))
}

/// A child that runs `work` (and exits with what it returns) once `go` is
/// called: the parent moves it into a cgroup first. After the fork it uses
/// only async-signal-safe calls (and plain memory writes).
fn fork_on_go(work: fn() -> libc::c_int) -> (libc::pid_t, impl FnOnce()) {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) into a two-element array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child calls only read, _exit and what `work` does.
    match unsafe { libc::fork() } {
        -1 => panic!("fork: {}", std::io::Error::last_os_error()),
        0 => unsafe {
            let mut go = 0u8;
            libc::read(fds[0], (&mut go as *mut u8).cast(), 1);
            libc::_exit(work())
        },
        pid => {
            // SAFETY: closing our copy of the read end.
            unsafe { libc::close(fds[0]) };
            let go = move || {
                // SAFETY: one byte to the pipe, then close it.
                unsafe {
                    libc::write(fds[1], [1u8].as_ptr().cast(), 1);
                    libc::close(fds[1]);
                }
            };
            (pid, go)
        }
    }
}

/// Maps `len` bytes of fresh anonymous memory and writes all of it (so it is
/// charged to the cgroup). Only mmap and memory writes: fine after fork.
fn touch_new_memory(len: usize) -> bool {
    // SAFETY: an anonymous private mapping, written within its length.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return false;
        }
        std::ptr::write_bytes(p.cast::<u8>(), 1, len);
    }
    true
}

/// Allocates and touches memory until something kills it.
fn allocate_forever() -> libc::c_int {
    loop {
        touch_new_memory(1 << 20);
    }
}

/// A new cgroup `/ferrum-test-<pid>-<name>/c1` with a guard that removes it.
fn test_cgroup(name: &str) -> (Cgroup, Cleanup) {
    let parent = format!("ferrum-test-{}-{name}", std::process::id());
    let cg = Cgroup::resolve(Some(Path::new(&format!("/{parent}/c1"))), "c1").expect("resolve");
    let mut guard = Cleanup { child: None, dirs: cg.dirs().to_vec() };
    guard.dirs.extend(cg.dirs().iter().map(|d| d.parent().unwrap().to_path_buf()));
    cg.create().expect("create");
    (cg, guard)
}

fn resources(json: serde_json::Value) -> oci_spec::runtime::LinuxResources {
    serde_json::from_value(json).expect("LinuxResources")
}

/// The OOM watcher counts one kill per OOM kill (v1: memory.oom_control's
/// eventfd, v2: memory.events under inotify) and its fd wakes a poller.
#[test]
fn an_oom_kill_is_counted_once_and_wakes_the_watcher() {
    if !has_root() {
        return;
    }
    let (cg, mut guard) = test_cgroup("oom");
    cg.apply(&resources(serde_json::json!({ "memory": { "limit": 16 << 20 } }))).expect("apply");
    let watcher = OomWatcher::new(&cg).expect("watch").expect("the cgroup has a memory controller");
    assert_eq!(watcher.new_kills(), 0);
    oom_kill_in(&cg, &mut guard);

    let mut poll = libc::pollfd { fd: watcher.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    let ready = unsafe { libc::poll(&mut poll, 1, 5000) };
    assert_eq!(ready, 1, "the watcher's fd did not become readable");
    assert_eq!(watcher.new_kills(), 1, "one kill");
    assert_eq!(watcher.new_kills(), 0, "reported once");
    assert_eq!(cg.stats().memory_events.get("oom_kill"), Some(&1), "in the metrics too");
    // Read empty: not readable until the next wakeup.
    // SAFETY: as above.
    assert_eq!(unsafe { libc::poll(&mut poll, 1, 0) }, 0);
    cg.remove().expect("remove");
}

/// Runs a child that allocates past `cg`'s 16 MiB limit; returns once the
/// OOM killer has killed (and we reaped) it.
fn oom_kill_in(cg: &Cgroup, guard: &mut Cleanup) {
    let limit = resources(serde_json::json!({ "memory": { "limit": 16 << 20, "swap": 16 << 20 } }));
    cg.apply(&limit).expect("apply a 16 MiB limit");
    let (child, go) = fork_on_go(allocate_forever);
    guard.child = Some(child);
    cg.add(child).expect("add");
    go();
    let status = reap(child);
    guard.child = None;
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL, "status {status:#x}");
}

/// With the systemd driver the cgroup goes as soon as its last process does,
/// maybe before the watcher looked. On v2 the kill is then taken from the
/// parent's (hierarchical) count, once: a sibling's later kill is not ours.
/// v1 has no such count.
#[test]
fn a_kill_in_a_cgroup_already_removed_is_counted_on_v2() {
    if !has_root() {
        return;
    }
    let (cg, mut guard) = test_cgroup("oomgone");
    let sibling = Cgroup::from_dirs(cg.dirs().iter().map(|d| d.with_file_name("c2")).collect());
    guard.dirs.splice(0..0, sibling.dirs().iter().cloned());
    cg.apply(&resources(serde_json::json!({ "memory": { "limit": 16 << 20 } }))).expect("apply");
    let watcher = OomWatcher::new(&cg).expect("watch").expect("the cgroup has a memory controller");

    oom_kill_in(&cg, &mut guard);
    cg.remove().expect("remove, as systemd does");
    assert_eq!(watcher.new_kills(), u64::from(is_pure_v2()), "the kill, from the parent's count on v2");

    sibling.create().expect("create the sibling");
    oom_kill_in(&sibling, &mut guard);
    assert_eq!(watcher.new_kills(), 0, "a sibling's kill counted as ours");
    sibling.remove().expect("remove the sibling");
}

/// 0 when /dev/null opens read-write and /dev/kmsg (1:11, not in runc's
/// default list) read-only is refused with EPERM; else which check failed.
fn null_yes_kmsg_no() -> libc::c_int {
    // SAFETY: open/close with static NUL-terminated paths.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null < 0 {
            return 10;
        }
        libc::close(null);
        match libc::open(c"/dev/kmsg".as_ptr(), libc::O_RDONLY) {
            fd if fd >= 0 => 11,
            _ if *libc::__errno_location() == libc::EPERM => 0,
            _ => 12,
        }
    }
}

/// 0 when /dev/kmsg opens read-only.
fn kmsg_yes() -> libc::c_int {
    // SAFETY: as above.
    unsafe {
        match libc::open(c"/dev/kmsg".as_ptr(), libc::O_RDONLY) {
            fd if fd >= 0 => 0,
            _ => 20 + *libc::__errno_location(),
        }
    }
}

/// Runs `work` in the cgroup and returns its exit code.
fn run_in(cg: &Cgroup, guard: &mut Cleanup, work: fn() -> libc::c_int) -> libc::c_int {
    let (child, go) = fork_on_go(work);
    guard.child = Some(child);
    cg.add(child).expect("add");
    go();
    let status = reap(child);
    guard.child = None;
    assert!(libc::WIFEXITED(status), "status {status:#x}");
    libc::WEXITSTATUS(status)
}

/// Skips (saying why) a test of v2-only behaviour on a v1 or hybrid host,
/// where tests/tests/resources.rs covers the v1 side through containerd.
fn pure_v2_or_skip(test: &str) -> bool {
    if !has_root() {
        return false;
    }
    if !is_pure_v2() {
        assert_ne!(std::env::var("FERRUM_EXPECT_PURE_V2").as_deref(), Ok("1"), "not pure v2");
        eprintln!("{test}: skipped on this v1/hybrid host, runs in the pure v2 lane (scripts/uml/test-lane)");
        return false;
    }
    true
}

/// The eBPF device filter: default deny plus the spec's and runc's rules,
/// replaced (not stacked) on update.
#[test]
fn v2_device_filter_denies_by_default_and_is_replaced_on_update() {
    if !pure_v2_or_skip("v2_device_filter_denies_by_default_and_is_replaced_on_update") {
        return;
    }
    let (cg, mut guard) = test_cgroup("devices");
    // containerd's default: deny all, then runc's list is appended.
    cg.apply(&resources(serde_json::json!({ "devices": [{ "allow": false, "access": "rwm" }] }))).expect("apply");
    assert_eq!(run_in(&cg, &mut guard, null_yes_kmsg_no), 0, "filter: /dev/null allowed, /dev/kmsg denied");

    let kmsg = serde_json::json!({ "devices": [{ "allow": true, "type": "c", "major": 1, "minor": 11, "access": "r" }] });
    cg.apply(&resources(kmsg)).expect("update");
    // Were the first filter still attached, it would deny /dev/kmsg still.
    assert_eq!(run_in(&cg, &mut guard, kmsg_yes), 0, "the updated filter allows /dev/kmsg");
    cg.remove().expect("remove");
}

/// v2 writes of the fields v1 names differently, and what v2 cannot do.
#[test]
fn v2_resource_files_and_refusals() {
    if !pure_v2_or_skip("v2_resource_files_and_refusals") {
        return;
    }
    let (cg, _guard) = test_cgroup("resources");
    let dir = &cg.dirs()[0];
    let warnings = cg
        .apply(&resources(serde_json::json!({
            "memory": { "limit": 67108864, "swappiness": 10, "kernelTCP": 1048576 },
            "cpu": { "shares": 1024, "quota": 50000, "period": 100000, "burst": 10000 },
            "pids": { "limit": 32 },
            "unified": { "memory.high": "50331648" }
        })))
        .expect("apply");
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap().trim().to_string();
    assert_eq!(read("memory.max"), "67108864");
    assert_eq!(read("memory.high"), "50331648");
    assert_eq!(read("cpu.weight"), "39");
    assert_eq!(read("cpu.max"), "50000 100000");
    assert_eq!(read("cpu.max.burst"), "10000");
    // An idle cgroup (SCHED_IDLE for its tasks); the kernel then shows weight 1.
    cg.apply(&resources(serde_json::json!({ "cpu": { "idle": 1 } }))).expect("idle");
    assert_eq!(read("cpu.idle"), "1");
    assert_eq!(read("pids.max"), "32");
    for field in ["swappiness", "kernelTCP"] {
        assert!(warnings.iter().any(|w| w.contains(field)), "no warning for {field}: {warnings:?}");
    }
    // v2 has no realtime budget per cgroup: refused, naming the field.
    let rt = cg.apply(&resources(serde_json::json!({ "cpu": { "realtimeRuntime": 950000 } }))).unwrap_err();
    assert!(rt.to_string().contains("realtimeRuntime"), "{rt}");
    // A unified key for a file the cgroup does not have.
    let bad = cg.apply(&resources(serde_json::json!({ "unified": { "memory.nonesuch": "1" } }))).unwrap_err();
    assert!(bad.to_string().contains("memory.nonesuch"), "{bad}");
    cg.remove().expect("remove");
}

/// Debian's runc, the reference for the values (bookworm's 1.1.5 on the CI host).
const RUNC: &str = "/usr/sbin/runc";

/// A container runc created, force-deleted (with its cgroup) on drop.
struct RuncContainer {
    root: PathBuf,
    id: &'static str,
}

impl Drop for RuncContainer {
    fn drop(&mut self) {
        let _ = std::process::Command::new(RUNC)
            .arg("--root")
            .arg(&self.root)
            .args(["delete", "-f", self.id])
            .status();
        let _ = std::fs::remove_dir_all(self.root.parent().unwrap());
    }
}

/// Differential against runc on cgroup v2: the same resources give the same
/// file values (runc creates its container in a bundle of its own).
#[test]
fn v2_values_match_runcs() {
    if !pure_v2_or_skip("v2_values_match_runcs") {
        return;
    }
    if !Path::new(RUNC).exists() {
        assert!(std::env::var("CI").is_err(), "{RUNC} missing: apt-get install runc");
        eprintln!("v2_values_match_runcs: skipped, no {RUNC}");
        return;
    }
    let resources_json = serde_json::json!({
        "memory": { "limit": 67108864, "reservation": 33554432, "swap": 134217728 },
        "cpu": { "shares": 512, "quota": 50000, "period": 100000 },
        "pids": { "limit": 64 },
        "unified": { "memory.high": "50331648" }
    });
    let parent = format!("ferrum-test-{}-diff", std::process::id());

    // runc's side: a busybox bundle with runc's own default spec.
    let work = std::env::temp_dir().join(&parent);
    let bundle = work.join("bundle");
    std::fs::create_dir_all(bundle.join("rootfs/bin")).unwrap();
    std::fs::copy("/bin/busybox", bundle.join("rootfs/bin/busybox")).expect("busybox");
    std::os::unix::fs::symlink("busybox", bundle.join("rootfs/bin/sleep")).unwrap();
    // Errors to a file: a pipe would stay open in the container's init.
    let errors = work.join("runc-errors");
    let runc = |args: &[&str]| {
        let status = std::process::Command::new(RUNC)
            .args(args)
            .current_dir(&bundle)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&errors).unwrap())
            .status()
            .expect("run runc");
        assert!(status.success(), "runc {args:?}: {}", std::fs::read_to_string(&errors).unwrap_or_default());
    };
    runc(&["spec"]);
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    spec["process"]["terminal"] = serde_json::json!(false);
    spec["process"]["args"] = serde_json::json!(["sleep", "600"]);
    spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/{parent}/r1"));
    spec["linux"]["resources"] = resources_json.clone();
    std::fs::write(bundle.join("config.json"), serde_json::to_vec(&spec).unwrap()).unwrap();
    let state = work.join("state");
    let _runc_container = RuncContainer { root: state.clone(), id: "r1" };
    let state_arg = state.to_str().unwrap();
    runc(&["--root", state_arg, "create", "--bundle", bundle.to_str().unwrap(), "r1"]);

    // Ours, next to it.
    let ours = Cgroup::resolve(Some(Path::new(&format!("/{parent}/f1"))), "f1").expect("resolve");
    let _guard = Cleanup {
        child: None,
        dirs: vec![ours.dirs()[0].clone(), ours.dirs()[0].parent().unwrap().to_path_buf()],
    };
    ours.create().expect("create");
    ours.apply(&resources(resources_json)).expect("apply");

    let read = |id: &str, f: &str| {
        let path = Path::new("/sys/fs/cgroup").join(&parent).join(id).join(f);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    for file in ["memory.max", "memory.low", "memory.swap.max", "memory.high", "cpu.weight", "cpu.max", "pids.max"] {
        assert_eq!(read("f1", file), read("r1", file), "{file} differs from runc's");
    }
    ours.remove().expect("remove");
}

/// Touches 16 MiB, then waits to be killed.
fn use_16_mib() -> libc::c_int {
    if !touch_new_memory(16 << 20) {
        return 1;
    }
    loop {
        // SAFETY: pause(2) has no preconditions.
        unsafe { libc::pause() };
    }
}

/// checkBeforeUpdate refuses a memory limit below what the cgroup uses, on
/// whatever cgroup version this host has.
#[test]
fn a_memory_limit_below_usage_is_refused_with_check_before_update() {
    if !has_root() {
        return;
    }
    let (cg, mut guard) = test_cgroup("check");
    // Created with a limit (which on v2 also enables the memory controller), updated below.
    cg.apply(&resources(serde_json::json!({ "memory": { "limit": 128 << 20 } }))).expect("apply");
    let (child, go) = fork_on_go(use_16_mib);
    guard.child = Some(child);
    cg.add(child).expect("add");
    go();
    let deadline = Instant::now() + Duration::from_secs(5);
    while cg.stats().memory_usage < 16 << 20 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(cg.stats().memory_usage >= 16 << 20, "the child's 16 MiB are not charged");
    let below = resources(serde_json::json!({ "memory": { "limit": 8 << 20, "checkBeforeUpdate": true } }));
    let err = cg.apply(&below).expect_err("a limit below the usage");
    assert!(err.to_string().contains("checkBeforeUpdate") && err.to_string().contains("8388608"), "{err}");
    assert_eq!(cg.procs(), [child], "the refused limit killed nothing");
    // Above the usage it applies.
    cg.apply(&resources(serde_json::json!({ "memory": { "limit": 64 << 20, "checkBeforeUpdate": true } })))
        .expect("a limit above the usage");
    assert_eq!(cg.stats().memory_limit, 64 << 20);
}
