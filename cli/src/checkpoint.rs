//! `checkpoint` and `restore`: runc's commands over runtime-core's CRIU
//! driver, as containerd's runc shim calls them (go-runc: `checkpoint
//! --image-path … --work-path … [--leave-running] ID`, `restore --detach
//! --pid-file … --image-path … --work-path … --bundle … ID`).

use crate::args::{parse, Parsed, Spec};
use crate::lifecycle::{lock, own_stdio, wait_exit, write_pid_file};
use crate::{console, one_id, Global};
use anyhow::{bail, Context, Result};
use runtime_core::{CheckpointOptions, Container, CreateOptions, RestoreOptions, SetupOptions};
use std::path::{Path, PathBuf};

const CHECKPOINT: Spec = Spec {
    bools: &[
        &["leave-running"],
        &["tcp-established"],
        &["ext-unix-sk"],
        &["shell-job"],
        &["file-locks"],
        &["pre-dump"],
        &["lazy-pages"],
        &["auto-dedup"],
    ],
    values: &[
        &["image-path"],
        &["work-path"],
        &["parent-path"],
        &["page-server"],
        &["status-fd"],
        &["manage-cgroups-mode"],
        &["empty-ns"],
    ],
};

/// What runc does that ferrum does not: refused by name. No pre-dump: CRIU
/// cannot track dirty memory on the kernels this was written on, and ferrum
/// never ran it. `--shell-job` needs no refusal: a terminal's master is
/// restored by CRIU itself (orphan-pts-master), job or not.
fn refuse(a: &Parsed, bools: &[&str], values: &[&str]) -> Result<()> {
    if let Some(flag) = bools.iter().find(|f| a.has(f)) {
        bail!("--{flag} is not supported by ferrum");
    }
    if let Some(flag) = values.iter().find(|f| a.value(f).is_some()) {
        bail!("--{flag} is not supported by ferrum");
    }
    // ferrum makes the restored container's cgroup itself: CRIU's "ignore".
    match a.value("manage-cgroups-mode") {
        None | Some("ignore") => Ok(()),
        Some(mode) => bail!("--manage-cgroups-mode {mode}: ferrum restores into the cgroup it makes (only \"ignore\")"),
    }
}

/// `--empty-ns network` (the only namespace runc leaves empty).
fn empty_network(a: &Parsed) -> Result<bool> {
    match a.value("empty-ns") {
        None => Ok(false),
        Some("network") => Ok(true),
        Some(other) => bail!("--empty-ns {other}: only \"network\" can be checkpointed empty"),
    }
}

/// runc's default image path: `checkpoint` in the working directory.
fn image_path(a: &Parsed) -> Result<PathBuf> {
    let path = PathBuf::from(a.value("image-path").unwrap_or("checkpoint"));
    std::path::absolute(&path).with_context(|| format!("image path {}", path.display()))
}

/// `checkpoint ID`: the container dumped into the image path. Unless
/// `--leave-running` (a paused one then stays paused), CRIU ends it and it
/// is deleted, as runc destroys it: what remains is the images.
pub fn checkpoint(g: &mut Global, args: &[String]) -> Result<()> {
    let a = parse(args, &CHECKPOINT)?;
    let id = one_id("checkpoint", &a.positional)?;
    refuse(&a, &["pre-dump", "lazy-pages", "auto-dedup"], &["parent-path", "page-server", "status-fd"])?;
    let options = CheckpointOptions {
        criu: g.criu.clone(),
        image_dir: image_path(&a)?,
        work_dir: a.value("work-path").map(PathBuf::from),
        leave_running: a.has("leave-running"),
        tcp_established: a.has("tcp-established"),
        ext_unix_sockets: a.has("ext-unix-sk"),
        file_locks: a.has("file-locks"),
        empty_network: empty_network(&a)?,
    };
    let _lock = lock(g, id)?;
    let c = g.load(id)?;
    match c.status() {
        "running" | "paused" => c.checkpoint(&options)?,
        status => bail!("container {id} is {status}: only a running or paused container can be checkpointed"),
    }
    if !options.leave_running {
        for w in c.delete()? {
            g.log.warn(&w);
        }
    }
    Ok(())
}

const RESTORE: Spec = Spec {
    bools: &[
        &["tcp-established"],
        &["ext-unix-sk"],
        &["shell-job"],
        &["file-locks"],
        &["detach", "d"],
        &["no-subreaper"],
        &["no-pivot"],
        &["auto-dedup"],
        &["lazy-pages"],
    ],
    values: &[
        &["image-path"],
        &["work-path"],
        &["bundle", "b"],
        &["console-socket"],
        &["pid-file"],
        &["manage-cgroups-mode"],
        &["empty-ns"],
        &["lsm-profile"],
        &["lsm-mount-context"],
    ],
};

/// `restore ID`: a new container from the images, running when this
/// returns (`--detach`), or waited for and deleted, its exit status ours.
/// The CRIU flags a dump was made with (TCP, unix sockets, locks, an empty
/// network) are recorded with its images and apply again whatever is given.
pub fn restore(g: &mut Global, args: &[String]) -> Result<i32> {
    let a = parse(args, &RESTORE)?;
    let id = one_id("restore", &a.positional)?;
    refuse(&a, &["auto-dedup", "lazy-pages"], &["lsm-profile", "lsm-mount-context"])?;
    empty_network(&a)?;
    let bundle = match a.value("bundle") {
        Some(b) => PathBuf::from(b),
        None => std::env::current_dir().context("bundle (the working directory)")?,
    };
    let bundle = std::path::absolute(&bundle).with_context(|| format!("bundle {}", bundle.display()))?;
    let detach = a.has("detach");
    if !detach && !a.has("no-subreaper") {
        // The restored init is born the runner's child: ours once it exits.
        // SAFETY: prctl(2) on this process.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let setup = SetupOptions { no_pivot_root: a.has("no-pivot"), no_new_keyring: false };
    let create = CreateOptions { state_root: g.root.clone(), stdio: own_stdio()?, setup, cgroup_driver: g.cgroup_driver, ..Default::default() };
    let restore = RestoreOptions { criu: g.criu.clone(), image_dir: image_path(&a)?, work_dir: a.value("work-path").map(PathBuf::from) };
    let mut c = Container::restore(id, &bundle, create, &restore)?;
    let pid = c.pid();
    let handed = match (c.take_console(), a.value("console-socket")) {
        (Some(master), Some(socket)) => console::send_master(socket, &master),
        (Some(master), None) if !detach => console::attach(master, || Ok(())),
        (Some(_), None) => Err(anyhow::anyhow!("cannot allocate tty if runc will detach without setting console socket")),
        (None, _) => Ok(()),
    };
    let handed = handed.and_then(|()| a.value("pid-file").map_or(Ok(()), |f| write_pid_file(Path::new(f), pid)));
    if let Err(e) = handed {
        let _ = c.delete();
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let code = wait_exit(pid)?;
    for w in g.load(id)?.delete()? {
        g.log.warn(&w);
    }
    Ok(code)
}
