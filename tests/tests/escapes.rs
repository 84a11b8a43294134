//! The escapes runc has had CVEs for, attacked through ctr -> containerd ->
//! shim -> runtime-core, each modelled on its public advisory. (CVE-2019-5736,
//! the runtime binary overwritten through /proc/self/exe, and CVE-2024-21626,
//! a runtime fd as the cwd, are attacked in security.rs.)
//!
//! Every attack aims at a harmless target that proves the redirect: a file of
//! the test's own, or a procfs file of the container's own namespaces. Nothing
//! is ever written to the host's core_pattern or sysrq-trigger. The racing
//! variants (a second container sharing a volume with the victim, changing it
//! while the victim is created) are bounded in count and time.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrum_tests::{CtrOutput, Env, SpecFile, FERRUM_RUNTIME, RUNC_RUNTIME};
use serde_json::json;

const GRACE: Duration = Duration::from_secs(5);
/// How many victims a racing attack creates, and for how long at most.
const RACE_VICTIMS: usize = 15;
const RACE_TIME: Duration = Duration::from_secs(60);

/// A host directory under the Env's temp dir, for volumes.
fn host_dir(env: &Env, name: &str) -> PathBuf {
    let dir = env.root_dir().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn mknod_char(path: &Path, major: u32, minor: u32) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mknod with a valid path.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(major, minor)) };
    assert_eq!(r, 0, "mknod {}: {}", path.display(), std::io::Error::last_os_error());
}

/// `--mount` of a host directory (rbind, rw) at `dst`.
fn bind(src: &Path, dst: &str) -> String {
    format!("type=bind,src={},dst={dst},options=rbind:rw", src.display())
}

/// ctr run flags for `mounts`.
fn mount_flags(mounts: &[String]) -> Vec<&str> {
    mounts.iter().flat_map(|m| ["--mount", m.as_str()]).collect()
}

/// The container failed, with an error (reaching ctr) that says each of `what`.
#[track_caller]
fn assert_refused(out: &CtrOutput, what: &[&str]) {
    assert!(!out.success(), "the container ran: {out}");
    // With a terminal, ctr's error comes on the terminal: stdout.
    let said = format!("{}{}", out.stderr, out.stdout);
    for w in what {
        assert!(said.contains(w), "the error does not say {w:?}: {out}");
    }
}

#[track_caller]
fn assert_clean(env: &Env) {
    assert_eq!(env.leftovers_after(GRACE), Vec::<String>::new(), "left behind");
}

/// A container that changes a shared volume in a loop (`script`, run by sh in
/// /v, until the file `stop` appears there) while the test creates victims.
struct Racer<'a> {
    env: &'a Env,
    volume: PathBuf,
}

impl<'a> Racer<'a> {
    fn start(env: &'a Env, image: &str, volume: &Path, script: &str) -> Racer<'a> {
        let body = format!("cd /v && while [ ! -e stop ]; do {script}; done");
        let m = [bind(volume, "/v")];
        let mut flags = vec!["-d"];
        flags.extend(mount_flags(&m));
        env.run_on_ferrum(&flags, image, "racer", &["sh", "-c", &body]).assert_ok();
        Racer { env, volume: volume.to_path_buf() }
    }

    /// Create victims with `victim(i)` (true: it ran; false: it was
    /// refused) until RACE_VICTIMS were made or RACE_TIME passed.
    fn race(&self, mut victim: impl FnMut(usize) -> bool) {
        let deadline = Instant::now() + RACE_TIME;
        let (mut ran, mut refused) = (0, 0);
        while ran + refused < RACE_VICTIMS && Instant::now() < deadline {
            if victim(ran + refused) {
                ran += 1;
            } else {
                refused += 1;
            }
        }
        eprintln!("{ran} victims ran, {refused} were refused");
    }
}

impl Drop for Racer<'_> {
    /// Never panics (it may run while a failed assertion unwinds): the Env
    /// removes whatever is left.
    fn drop(&mut self) {
        let _ = std::fs::write(self.volume.join("stop"), "");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.env.ctr(&["tasks", "delete", "racer"]).success() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.env.ctr(&["containers", "rm", "racer"]);
    }
}

/// CVE-2019-16884: a mount onto /proc/self/attr makes the container's LSM
/// label land in a host directory, and the process runs unconfined. Refused,
/// as by runc, also when the destination reaches /proc through a symlink an
/// earlier mount brought in, and a non-procfs on /proc itself. The files
/// lxcfs emulates may still be mounted over, on both.
#[test]
fn cve_2019_16884_no_mount_lands_in_proc() {
    let (env, image) = Env::with_busybox();
    let attr = host_dir(&env, "attr");
    let links = host_dir(&env, "links");
    symlink("/proc/self/attr", links.join("x")).unwrap();
    let cases: [(&str, Vec<String>, &str); 3] = [
        ("direct", vec![bind(&attr, "/proc/self/attr")], "/proc/self/attr"),
        ("symlink", vec![bind(&links, "/lnk"), bind(&attr, "/lnk/x")], "/lnk/x"),
        ("tmpfs", vec!["type=tmpfs,src=tmpfs,dst=/proc".to_string()], "/proc"),
    ];
    for (name, mounts, dest) in &cases {
        let mut flags = vec!["--rm"];
        flags.extend(mount_flags(mounts));
        let ferrum = env.run_on_ferrum(&flags, &image, name, &["true"]);
        assert_refused(&ferrum, &[dest, "mounts["]);
        let runc = env.run_on(RUNC_RUNTIME, &flags, &image, &format!("{name}-runc"), &["true"]);
        assert!(!runc.success(), "runc refuses {name} too: {runc}");
    }
    assert!(std::fs::read_dir(&attr).unwrap().next().is_none(), "a label landed on the host");

    // lxcfs's files.
    let uptime = env.root_dir().join("uptime");
    std::fs::write(&uptime, "12345.00 0.00\n").unwrap();
    let m = [format!("type=bind,src={},dst=/proc/uptime,options=rbind:ro", uptime.display())];
    let mut flags = vec!["--rm"];
    flags.extend(mount_flags(&m));
    for (runtime, id) in [(FERRUM_RUNTIME, "lxcfs"), (RUNC_RUNTIME, "lxcfs-runc")] {
        let out = env.run_on(runtime, &flags, &image, id, &["cat", "/proc/uptime"]);
        out.assert_ok();
        assert_eq!(out.stdout, "12345.00 0.00\n", "{runtime}: {out}");
    }
    assert_clean(&env);
}

/// CVE-2021-30465: a volume shared with a running container whose symlink
/// changes while the victim mounts through it. The victim's tmpfs lands
/// inside its root (the symlink's target resolved there, even an absolute
/// host path) or the victim is refused (a target in /proc); it is never
/// mounted anywhere else, so it always shows in the victim's mount table.
#[test]
fn cve_2021_30465_a_racing_symlink_never_moves_a_mount() {
    let (env, image) = Env::with_busybox();
    let volume = host_dir(&env, "race-vol");
    std::fs::create_dir(volume.join("d")).unwrap();
    symlink("d", volume.join("x")).unwrap();
    // A host directory no container has: reached only by escaping.
    let outside = host_dir(&env, "outside");
    let flip = format!(
        "ln -sfn d x.a; mv -fT x.a x; ln -sfn {} x.b; mv -fT x.b x; ln -sfn /proc/self/attr x.c; mv -fT x.c x",
        outside.display()
    );
    let racer = Racer::start(&env, &image, &volume, &flip);
    let mounts = [bind(&volume, "/vol"), "type=tmpfs,src=tmpfs,dst=/vol/x".to_string()];
    let inside = ["/vol/d".to_string(), outside.display().to_string()];
    racer.race(|i| {
        let mut flags = vec!["--rm"];
        flags.extend(mount_flags(&mounts));
        let id = format!("victim{i}");
        let out = env.run_on_ferrum(&flags, &image, &id, &["cut", "-d ", "-f5", "/proc/self/mountinfo"]);
        if out.success() {
            let tmpfs_at: Vec<&str> =
                out.stdout.lines().filter(|m| inside.iter().any(|i| i == m)).collect();
            assert_eq!(tmpfs_at.len(), 1, "the tmpfs is not where x pointed inside the root: {out}");
            assert!(!out.stdout.lines().any(|m| m.starts_with("/proc/") && m.ends_with("/attr")), "a mount in /proc: {out}");
        } else {
            assert_refused(&out, &["/vol/x", "inside /proc"]);
        }
        out.success()
    });
    drop(racer);
    assert!(std::fs::read_dir(&outside).unwrap().next().is_none(), "the host directory was written");
    assert_clean(&env);
}

/// A /dev of the container's own from a volume (`--mount …,dst=/dev`), with
/// `null` made by `make_null`.
fn dev_volume(env: &Env, name: &str, make_null: impl FnOnce(&Path)) -> PathBuf {
    let dev = host_dir(env, name);
    make_null(&dev.join("null"));
    dev
}

/// The first bytes of each masked file, as `od` shows them.
const READ_MASKED: &str = "for f in /proc/keys /proc/timer_list; do echo $f; head -c 16 $f | od -c; done";

/// Puts something at a volume's `null`.
type MakeNull = fn(&Path);

/// CVE-2025-31133: maskedPaths bind /dev/null over files such as /proc/keys.
/// When the container's /dev comes from a volume whose `null` is no null
/// device — a symlink to a procfs file, a plain file, another device — a mask
/// must never become a (writable) bind of that. The container is refused,
/// naming /dev/null; with a real null device it runs, with empty masks.
#[test]
fn cve_2025_31133_masks_never_follow_a_redirected_dev_null() {
    let (env, image) = Env::with_busybox();
    let redirects: [(&str, MakeNull); 3] = [
        // Harmless: the container's own UTS namespace's domain name.
        ("symlink", |p| symlink("/proc/sys/kernel/domainname", p).unwrap()),
        ("file", |p| std::fs::write(p, "NOT-NULL").unwrap()),
        ("zero", |p| mknod_char(p, 1, 5)),
    ];
    for (name, make_null) in redirects {
        let dev = dev_volume(&env, &format!("dev-{name}"), make_null);
        let mounts = [bind(&dev, "/dev")];
        let mut flags = vec!["--rm"];
        flags.extend(mount_flags(&mounts));
        let out = env.run_on_ferrum(&flags, &image, name, &["sh", "-c", READ_MASKED]);
        assert_refused(&out, &["/dev/null"]);
    }
    let dev = dev_volume(&env, "dev-null", |p| mknod_char(p, 1, 3));
    let mounts = [bind(&dev, "/dev")];
    let mut flags = vec!["--rm"];
    flags.extend(mount_flags(&mounts));
    let out = env.run_on_ferrum(&flags, &image, "real", &["sh", "-c", READ_MASKED]);
    out.assert_ok();
    assert_eq!(out.stdout, "/proc/keys\n0000000\n/proc/timer_list\n0000000\n", "masks are empty: {out}");
    assert_clean(&env);
}

/// CVE-2025-31133, racing: a container sharing the victims' /dev volume swaps
/// its `null` between a real null device and a symlink to a procfs file while
/// victims are created. Each is refused naming /dev/null, or runs with
/// empty masks.
#[test]
fn cve_2025_31133_a_racing_dev_null_never_becomes_a_mask() {
    let (env, image) = Env::with_busybox();
    let dev = dev_volume(&env, "dev-race", |p| mknod_char(p, 1, 3));
    mknod_char(&dev.join("real-null"), 1, 3);
    let flip = "ln -f real-null n.a; mv -f n.a null; ln -sfn /proc/sys/kernel/domainname n.b; mv -f n.b null";
    let racer = Racer::start(&env, &image, &dev, flip);
    let mounts = [bind(&dev, "/dev")];
    racer.race(|i| {
        let mut flags = vec!["--rm"];
        flags.extend(mount_flags(&mounts));
        let out = env.run_on_ferrum(&flags, &image, &format!("victim{i}"), &["sh", "-c", READ_MASKED]);
        if out.success() {
            assert_eq!(out.stdout, "/proc/keys\n0000000\n/proc/timer_list\n0000000\n", "a mask is not empty: {out}");
        } else {
            assert_refused(&out, &["/dev/null"]);
        }
        out.success()
    });
    drop(racer);
    assert_clean(&env);
}

/// What the container's /dev/console and the test's canary file are.
/// (A canary that became the pty is not read: that would wait for input.)
const SHOW_CONSOLE: &str =
    "stat -c '%F %t' /dev/console; stat -c %F /dev/canary; [ -f /dev/canary ] && cat /dev/canary; echo";

/// CVE-2025-52565: with a terminal, /dev/console becomes a bind of the pty.
/// Neither the bind's target (a /dev/console that is a symlink) nor its
/// source (/dev/pts/N, when /dev/pts is a volume of symlinks and the ptmx
/// comes from elsewhere) may send it elsewhere: the container is refused,
/// naming what is wrong, and the canary is never covered. With a /dev of
/// regular files and a devpts, /dev/console is the container's pty (a
/// character device of major 136).
#[test]
fn cve_2025_52565_the_console_is_always_the_pty() {
    let (env, image) = Env::with_busybox();
    let devpts = |dst: &str| format!("type=devpts,src=devpts,dst={dst},options=newinstance:ptmxmode=0666:mode=0620:gid=5");
    let run = |id: &str, mounts: &[String]| {
        let mut flags = vec!["run", "--rm", "-t", "--runtime", FERRUM_RUNTIME, "--snapshotter", "ferrum"];
        flags.extend(mount_flags(mounts));
        flags.extend([image.as_str(), id, "sh", "-c", SHOW_CONSOLE]);
        env.ctr_in_terminal(&flags)
    };
    let dev_with = |name: &str, console: fn(&Path)| {
        let dev = dev_volume(&env, name, |p| mknod_char(p, 1, 3));
        std::fs::write(dev.join("canary"), "CANARY").unwrap();
        console(&dev.join("console"));
        dev
    };

    // The target: /dev/console is a symlink to the canary.
    let dev = dev_with("dev-target", |p| symlink("canary", p).unwrap());
    symlink("pts/ptmx", dev.join("ptmx")).unwrap();
    std::fs::create_dir(dev.join("pts")).unwrap();
    let out = run("target", &[bind(&dev, "/dev"), devpts("/dev/pts")]);
    assert_refused(&out, &["/dev/console is a symlink"]);
    assert_eq!(std::fs::read_to_string(dev.join("canary")).unwrap(), "CANARY");

    // The source: /dev/pts/N are symlinks to the canary; a pty would come
    // from a devpts mounted elsewhere, through /dev/ptmx.
    let dev = dev_with("dev-source", |p| std::fs::write(p, "").unwrap());
    symlink("realpts/ptmx", dev.join("ptmx")).unwrap();
    std::fs::create_dir(dev.join("realpts")).unwrap();
    std::fs::create_dir(dev.join("pts")).unwrap();
    for n in 0..32 {
        symlink("../canary", dev.join("pts").join(n.to_string())).unwrap();
    }
    let out = run("source", &[bind(&dev, "/dev"), devpts("/dev/realpts")]);
    assert_refused(&out, &["/dev/pts/ptmx"]);

    // Regular files and a devpts: the console is the pty.
    let dev = dev_with("dev-plain", |p| std::fs::write(p, "").unwrap());
    symlink("pts/ptmx", dev.join("ptmx")).unwrap();
    std::fs::create_dir(dev.join("pts")).unwrap();
    let out = run("plain", &[bind(&dev, "/dev"), devpts("/dev/pts")]);
    out.assert_ok();
    let said = out.stdout.replace('\r', "");
    assert!(said.starts_with("character special file 88\nregular file\nCANARY"), "{out}");
    assert_clean(&env);
}

/// A victim of the procfs-write attacks: a config.json container whose
/// oom_score_adj and net.ipv4.ip_forward sysctl the runtime writes into /proc.
fn procfs_victim(env: &Env, id: &str) -> SpecFile {
    let mut file = SpecFile::new(env, id, &["sleep", "600"]).unwrap();
    file.spec["process"]["oomScoreAdj"] = json!(321);
    file.spec["linux"]["sysctl"] = json!({ "net.ipv4.ip_forward": "1" });
    file
}

/// Fake procfs files where the runtime's writes would land if redirected.
fn plant_fake_proc(dir: &Path) {
    for (file, content) in [("self/oom_score_adj", "0\n"), ("sys/net/ipv4/ip_forward", "0\n")] {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

/// Seen from the host: the victim's oom_score_adj and its network
/// namespace's ip_forward are what its spec asks.
#[track_caller]
fn assert_writes_reached_the_kernel(env: &Env, id: &str) {
    let pid = env.task_pid(id).unwrap_or_else(|| panic!("no task {id}"));
    let adj = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
    assert_eq!(adj.trim(), "321", "{id}: oom_score_adj was not set");
    let forward = std::process::Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "cat", "/proc/sys/net/ipv4/ip_forward"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&forward.stdout).trim(), "1", "{id}: the sysctl was not set");
}

/// CVE-2025-52881: the runtime's writes into /proc (sysctls, oom_score_adj,
/// LSM labels…) must reach the kernel, whatever the container's /proc is.
/// With no procfs mounted and fake files in the image's /proc, a write by
/// path lands in a plain file and the setting is silently lost.
#[test]
fn cve_2025_52881_proc_writes_reach_the_kernel_not_dummy_files() {
    let env = Env::start().unwrap();
    let mut file = procfs_victim(&env, "dummy");
    let mounts = file.spec["mounts"].as_array_mut().unwrap();
    mounts.retain(|m| m["type"] != "proc");
    plant_fake_proc(&file.rootfs.join("proc"));
    file.run(&env, FERRUM_RUNTIME, &["-d"]).unwrap().assert_ok();
    assert_writes_reached_the_kernel(&env, "dummy");
    for (fake, content) in [("self/oom_score_adj", "0\n"), ("sys/net/ipv4/ip_forward", "0\n")] {
        let seen = std::fs::read_to_string(file.rootfs.join("proc").join(fake)).unwrap();
        assert_eq!(seen, content, "a write landed in the image's /proc/{fake}");
    }
    env.remove_task("dummy");
    assert_clean(&env);
}

/// CVE-2025-52881, racing: the victim's /proc is a symlink to a procfs
/// mounted in a volume shared with a running container, which renames the
/// mount point away (detaching the victim's procfs) and a directory of fake
/// files into its place while victims are created. (A procfs mounted *on* a
/// /proc that is a symlink is refused outright: runc's CVE-2019-19921 rule.)
/// Each victim is refused with an error or runs with its settings in the
/// kernel; never silently without them.
#[test]
fn cve_2025_52881_a_racing_volume_never_diverts_proc_writes() {
    let (env, image) = Env::with_busybox();
    let volume = host_dir(&env, "proc-vol");
    std::fs::create_dir(volume.join("p")).unwrap();
    plant_fake_proc(&volume.join("fake"));
    let racer = Racer::start(&env, &image, &volume, "mv -T p t; mv -T fake p; mv -T t fake");
    racer.race(|i| {
        let id = format!("victim{i}");
        let mut file = procfs_victim(&env, &id);
        std::fs::remove_dir(file.rootfs.join("proc")).unwrap();
        symlink("/vol/p", file.rootfs.join("proc")).unwrap();
        let mounts = file.spec["mounts"].as_array_mut().unwrap();
        for m in mounts.iter_mut().filter(|m| m["type"] == "proc") {
            m["destination"] = json!("/vol/p");
        }
        mounts.insert(0, json!({"destination": "/vol", "type": "bind", "source": volume, "options": ["rbind", "rw"]}));
        let out = file.run(&env, FERRUM_RUNTIME, &["-d"]).unwrap();
        if out.success() {
            assert_writes_reached_the_kernel(&env, &id);
            env.remove_task(&id);
        } else {
            assert!(out.stderr.contains("sysctl") || out.stderr.contains("proc"), "an unclear error: {out}");
            env.ctr(&["containers", "rm", &id]);
        }
        out.success()
    });
    drop(racer);
    assert_clean(&env);
}

/// A sysctl key is a path under /proc/sys: a net.* key (allowed with a
/// network namespace of the container's own) must not walk with ".." to a
/// file of another namespace or of the host. Refused, naming the key. (The
/// walk here ends at the container's own UTS domain name: harmless.)
#[test]
fn a_sysctl_key_never_walks_out_of_its_namespace() {
    let env = Env::start().unwrap();
    let mut file = SpecFile::new(&env, "walk", &["domainname"]).unwrap();
    // Dots are path separators, and sysctl(8) writes a dot inside a name
    // (a VLAN interface's) as a slash: either way round, no "..".
    for key in ["net.ipv4/../../kernel/domainname", "net.ipv4.//.//.kernel.domainname"] {
        file.spec["linux"]["sysctl"] = json!({ key: "walked" });
        let out = file.run(&env, FERRUM_RUNTIME, &["--rm"]).unwrap();
        assert_refused(&out, &[key]);
    }
    assert_clean(&env);
}

/// runc's CVE-2026-41579 class: an image whose /dev is a symlink to a host
/// directory made the runtime create /dev's nodes and links there. They are
/// made inside the container's root, where the symlink resolves.
#[test]
fn an_image_dev_symlink_keeps_devices_inside() {
    let env = Env::start().unwrap();
    let outside = host_dir(&env, "outside-dev");
    let file = SpecFile::new(&env, "devlink", &["sh", "-c", "stat -c %F /dev/null; readlink /dev/fd"]).unwrap();
    std::fs::remove_dir_all(file.rootfs.join("dev")).unwrap();
    symlink(&outside, file.rootfs.join("dev")).unwrap();
    let out = file.run(&env, FERRUM_RUNTIME, &["--rm"]).unwrap();
    out.assert_ok();
    assert_eq!(out.stdout, "character special file\n/proc/self/fd\n", "{out}");
    assert!(std::fs::read_dir(&outside).unwrap().next().is_none(), "/dev was made on the host");
    assert_clean(&env);
}
