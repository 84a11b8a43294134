//! The commands that move a container through its life: create, start, run,
//! kill, pause/resume, update, delete.

use crate::args::{parse, Spec};
use crate::{console, one_id, Global};
use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use runtime_core::{Container, CreateOptions, SetupOptions, Stdio};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

const CREATE: Spec = Spec {
    bools: &[&["no-pivot"], &["no-new-keyring"], &["detach", "d"], &["keep"], &["no-subreaper"]],
    values: &[&["bundle", "b"], &["console-socket"], &["pid-file"], &["preserve-fds"]],
};

/// `create ID`: init set up and waiting on its exec FIFO; the pid file
/// written; the console's master (process.terminal) sent to the socket.
pub fn create(g: &mut Global, args: &[String]) -> Result<()> {
    let a = parse(args, &CREATE)?;
    let id = one_id("create", &a.positional)?;
    let mut c = new_container(g, id, &a)?;
    let detached = c.detach();
    finish_create(g, c, detached, &a)
}

/// `start ID`: let a created container's init exec the user's process.
pub fn start(g: &mut Global, args: &[String]) -> Result<()> {
    let a = parse(args, &Spec { bools: &[], values: &[] })?;
    let id = one_id("start", &a.positional)?;
    let _lock = lock(g, id)?;
    let mut c = g.load(id)?;
    match c.status() {
        "created" => Ok(c.start()?),
        "stopped" => bail!("cannot start a container that has stopped"),
        _ => bail!("cannot start an already running container"),
    }
}

/// `run ID`: create and start; in the foreground, wait for the container to
/// exit (its status is ours) and delete it; with --detach, return once it runs.
pub fn run(g: &mut Global, args: &[String]) -> Result<i32> {
    let a = parse(args, &CREATE)?;
    let id = one_id("run", &a.positional)?;
    let mut c = new_container(g, id, &a)?;
    let pid = c.pid();
    let detach = a.has("detach");
    // In the foreground with a terminal and no console socket, ours is the
    // container's, as with runc.
    let attach = !detach && a.value("console-socket").is_none();
    match if attach { c.take_console() } else { None } {
        Some(master) => console::attach(master, || {
            let started = c.start();
            finish_create(g, c, started, &a)
        })?,
        None => {
            let started = c.start();
            finish_create(g, c, started, &a)?;
        }
    }
    if detach {
        return Ok(0);
    }
    let code = wait_exit(pid)?;
    let c = g.load(id)?;
    for w in c.delete()? {
        g.log.warn(&w);
    }
    Ok(code)
}

fn new_container(g: &Global, id: &str, a: &crate::args::Parsed) -> Result<Container> {
    let extra = crate::fds::extra(a.value("preserve-fds"), true)?;
    let bundle = match a.value("bundle") {
        Some(b) => PathBuf::from(b),
        None => std::env::current_dir().context("bundle (the working directory)")?,
    };
    let bundle = std::path::absolute(&bundle).with_context(|| format!("bundle {}", bundle.display()))?;
    let setup = SetupOptions { no_pivot_root: a.has("no-pivot"), no_new_keyring: a.has("no-new-keyring") };
    let stdio = Stdio { extra: extra.fds, ..own_stdio()? };
    let opts = CreateOptions { state_root: g.root.clone(), stdio, setup, cgroup_driver: g.cgroup_driver, extra_env: extra.env, ..Default::default() };
    Ok(Container::create(id, &bundle, opts)?)
}

/// After create: hand over the console, write the pid file — or undo the
/// container if any of it (or `step`, the detach or start) failed.
fn finish_create(g: &mut Global, mut c: Container, step: runtime_core::Result<()>, a: &crate::args::Parsed) -> Result<()> {
    let done = step.map_err(anyhow::Error::from).and_then(|()| {
        match (c.take_console(), a.value("console-socket")) {
            (Some(master), Some(socket)) => console::send_master(socket, &master)?,
            (Some(_), None) => bail!("cannot allocate tty if runc will detach without setting console socket"),
            (None, Some(_)) => bail!("cannot use console socket if runc will not detach or allocate tty"),
            (None, None) => {}
        }
        if let Some(file) = a.value("pid-file") {
            write_pid_file(Path::new(file), c.pid())?;
        }
        Ok(())
    });
    for w in c.warnings().to_vec() {
        g.log.warn(&w);
    }
    if let Err(e) = done {
        let _ = c.delete();
        return Err(e);
    }
    Ok(())
}

const KILL: Spec = Spec { bools: &[&["all", "a"]], values: &[] };

/// `kill ID [SIGNAL]`: SIGTERM by default; a name (KILL, SIGKILL) or number.
pub fn kill(g: &mut Global, args: &[String]) -> Result<()> {
    let a = parse(args, &KILL)?;
    let (id, signal) = match a.positional.as_slice() {
        [id] => (id, "SIGTERM"),
        [id, signal] => (id, signal.as_str()),
        _ => bail!("kill: \"kill\" requires a minimum of 1 and a maximum of 2 argument(s)"),
    };
    let signal = parse_signal(signal)?;
    let c = g.load(id)?;
    match (c.status(), a.has("all")) {
        // containerd's shim kills --all after a shared-pid-namespace init
        // exited: nothing left to signal is success (as runc).
        ("stopped", true) if c.pids().is_empty() => Ok(()),
        ("stopped", false) => bail!("container not running"),
        (_, all) => Ok(c.kill(signal, all)?),
    }
}

/// `pause ID` / `resume ID`: the cgroup freezer.
pub fn pause(g: &mut Global, args: &[String], freeze: bool) -> Result<()> {
    let a = parse(args, &Spec { bools: &[], values: &[] })?;
    let id = one_id(if freeze { "pause" } else { "resume" }, &a.positional)?;
    let _lock = lock(g, id)?;
    let c = g.load(id)?;
    match (c.status(), freeze) {
        ("running", true) => Ok(c.pause()?),
        ("paused", false) => Ok(c.resume()?),
        (status, true) => bail!("container not running: {status}"),
        (status, false) => bail!("container not paused: {status}"),
    }
}

const DELETE: Spec = Spec { bools: &[&["force", "f"]], values: &[] };

/// `delete ID`: a stopped or created container; a running one with --force.
pub fn delete(g: &mut Global, args: &[String]) -> Result<()> {
    let a = parse(args, &DELETE)?;
    let id = one_id("delete", &a.positional)?;
    let force = a.has("force");
    // Locked before the state is read: of two deletes, the second reads
    // after the first is done, and finds nothing.
    // runc: deleting what is not there with --force is no error.
    let _lock = match lock(g, id) {
        Err(_) if force => return Ok(()),
        other => other?,
    };
    let c = match g.load(id) {
        Err(_) if force => return Ok(()),
        other => other?,
    };
    match c.status() {
        "running" | "paused" if !force => bail!("cannot delete container {id} that is not stopped: {}", c.status()),
        _ => {}
    }
    for w in c.delete()? {
        g.log.warn(&w);
    }
    Ok(())
}

const UPDATE: Spec = Spec {
    bools: &[],
    values: &[
        &["resources", "r"],
        &["memory"],
        &["memory-swap"],
        &["memory-reservation"],
        &["cpu-shares"],
        &["cpu-quota"],
        &["cpu-period"],
        &["cpuset-cpus"],
        &["cpuset-mems"],
        &["pids-limit"],
    ],
};

/// `update ID`: new resources, from `--resources FILE` (`-`: stdin, as
/// go-runc sends them) and runc's flags on top.
pub fn update(g: &mut Global, args: &[String]) -> Result<()> {
    use oci_spec::runtime::LinuxResources;
    let a = parse(args, &UPDATE)?;
    let id = one_id("update", &a.positional)?;
    let mut r: serde_json::Value = match a.value("resources") {
        Some("-") => serde_json::from_reader(std::io::stdin()).context("decode resources from stdin")?,
        Some(file) => serde_json::from_reader(File::open(file).with_context(|| format!("open {file}"))?)
            .with_context(|| format!("decode resources from {file}"))?,
        None => serde_json::json!({}),
    };
    let number = |flag: &str| -> Result<Option<i64>> {
        a.value(flag).map(|v| v.parse::<i64>().with_context(|| format!("invalid value for --{flag}: {v:?}"))).transpose()
    };
    for (flag, section, field) in [
        ("memory", "memory", "limit"),
        ("memory-swap", "memory", "swap"),
        ("memory-reservation", "memory", "reservation"),
        ("cpu-shares", "cpu", "shares"),
        ("cpu-quota", "cpu", "quota"),
        ("cpu-period", "cpu", "period"),
        ("pids-limit", "pids", "limit"),
    ] {
        if let Some(v) = number(flag)? {
            r[section][field] = v.into();
        }
    }
    for (flag, field) in [("cpuset-cpus", "cpus"), ("cpuset-mems", "mems")] {
        if let Some(v) = a.value(flag) {
            r["cpu"][field] = v.into();
        }
    }
    let resources: LinuxResources = serde_json::from_value(r).context("resources")?;
    let _lock = lock(g, id)?;
    let c = g.load(id)?;
    for w in c.update(&resources)? {
        g.log.warn(&w);
    }
    Ok(())
}

/// One command at a time on a container: an exclusive lock on its state dir.
pub fn lock(g: &Global, id: &str) -> Result<Flock<File>> {
    let dir = g.root.join(id);
    let file = File::open(&dir).map_err(|_| anyhow::anyhow!("container does not exist"))?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| anyhow::anyhow!("lock {}: {e}", dir.display()))
}

/// The container's stdio is ours (the caller's pipes, FIFOs or terminal).
pub fn own_stdio() -> Result<Stdio> {
    let dup = |fd: i32| -> Result<Option<OwnedFd>> {
        // SAFETY: 0, 1 and 2 stay open for this process's life.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        Ok(borrowed.try_clone_to_owned().ok())
    };
    Ok(Stdio { stdin: dup(0)?, stdout: dup(1)?, stderr: dup(2)?, extra: Vec::new() })
}

/// The pid, written whole (no newline, as runc) and renamed into place.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let tmp = path.with_file_name(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("pid")));
    std::fs::write(&tmp, pid.to_string()).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("write pid file {}", path.display()))
}

/// Wait for our child `pid`; its exit status as a shell reports it.
pub fn wait_exit(pid: i32) -> Result<i32> {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => bail!("wait for {pid}: {e}"),
        }
    }
}

/// `KILL`, `SIGKILL`, `9`.
pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).map(|s| s as i32).map_err(|_| anyhow::anyhow!("invalid signal: {s}"));
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    name.parse::<nix::sys::signal::Signal>().map(|s| s as i32).map_err(|_| anyhow::anyhow!("unknown signal {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("9").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("KILL").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), libc::SIGTERM);
        assert!(parse_signal("NOPE").unwrap_err().to_string().contains("NOPE"));
        assert!(parse_signal("999").is_err());
    }
}
