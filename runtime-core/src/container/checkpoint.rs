//! A container's checkpoint (its processes dumped by CRIU, left running or
//! not) and its restore into a new container (see crate::criu).

use super::{in_runner, make_state_dir, valid_id, Container, CreateGuard, CreateOptions, RunnerAnswer};
use crate::cgroup::{Cgroup, CgroupDriver};
use crate::criu::{self, CheckpointOptions, ExternalMount, OpenFile, Recorded, RestoreOptions};
use crate::error::{Context, Error, Result};
use crate::hooks::{self, HookKind, HookState};
use crate::namespaces::Namespaces;
use crate::procfs::{self, Base};
use crate::criu::rpc::ReqType;
use crate::protocol::{CriuRequest, InitRequest};
use crate::state::{State, Status};
use crate::{proc_stat, spec};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use pathrs::flags::OpenFlags;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

impl Container {
    /// Dump the container's processes into `opts.image_dir`. Left running,
    /// it goes on as it was (a paused one stays paused); otherwise CRIU
    /// kills it once dumped. A failed dump leaves it as it was.
    pub fn checkpoint(&self, opts: &CheckpointOptions) -> Result<()> {
        let id = &self.state.id;
        let spec = spec::load_spec(&self.state.bundle)?;
        refuse_unsupported(id, &spec, self.state.systemd_unit.is_some())?;
        let pid = self.state.pid;
        if !proc_stat::is_running(pid, self.state.pid_start) {
            let status = "stopped".into();
            return Err(Error::WrongState { id: id.clone(), status, action: "checkpoint", needed: "running or paused" });
        }
        std::fs::create_dir_all(&opts.image_dir).ctx(id, || format!("create {}", opts.image_dir.display()))?;
        let work_dir = opts.work_dir.clone().unwrap_or_else(|| self.dir.clone());
        std::fs::create_dir_all(&work_dir).ctx(id, || format!("create {}", work_dir.display()))?;

        let mut recorded = Recorded {
            tcp_established: opts.tcp_established,
            ext_unix_sockets: opts.ext_unix_sockets,
            file_locks: opts.file_locks,
            empty_network: opts.empty_network,
            ..Default::default()
        };
        let mountinfo = procfs::read(Base::Pid(pid), "mountinfo").ctx(id, || format!("read {pid}'s mountinfo"))?;
        let inside = criu::mount_ids(&mountinfo);
        let mut external_files = Vec::new();
        for file in stdio_of(pid).ctx(id, || format!("read the stdio of {pid}"))? {
            if let Some((key, external)) = criu::stdio_key(&file, &inside) {
                if external && !external_files.contains(&key) {
                    external_files.push(key.clone());
                }
                recorded.stdio.push((file.fd, key));
            }
        }
        let netns = Namespaces::from_spec(&spec).joins.into_iter().find(|(t, _)| *t == LinuxNamespaceType::Network);
        let external_netns = match netns {
            Some((_, path)) => Some(std::fs::metadata(&path).ctx(id, || format!("stat {}", path.display()))?.ino()),
            None => None,
        };
        recorded.external_netns = external_netns.is_some();
        let mut mounts = criu::bind_mounts(&spec);
        mounts.extend(cgroup_binds(&spec, &self.cgroup())?);
        // Before CRIU runs: a dump that kills the container must not leave
        // images a restore cannot use.
        recorded.save(&opts.image_dir).ctx(id, || format!("write {}", opts.image_dir.display()))?;
        let cgroup = self.cgroup();
        let dump = criu::Dump {
            pid,
            root: &self.state.rootfs,
            leave_running: opts.leave_running,
            freezer: cgroup.freezer_dir(),
            mounts: &mounts,
            external_files: &external_files,
            external_netns,
            recorded: &recorded,
        };
        let criu_error = |message| Error::Criu { id: id.clone(), message };
        let (criu, path) = program(&opts.criu).map_err(criu_error)?;
        let request = InitRequest::Criu(CriuRequest {
            criu,
            path,
            typ: ReqType::Dump,
            opts: dump.opts(),
            image_dir: opts.image_dir.clone(),
            work_dir,
            cgroups: 0,
            inherited: 0,
            hooks: Vec::new(),
            hook_state: Vec::new(),
        });
        in_runner("CRIU runner", &request, &[]).map(drop).map_err(criu_error)
    }

    /// A new container `id` from a checkpoint's images: its cgroup made with
    /// the spec's limits, CRIU run from inside it, the stdio of `opts` handed
    /// to the restored init in place of the checkpointed one's. The container
    /// runs when this returns (its init is the caller's child, or its
    /// subreaper's). A failed restore leaves nothing behind.
    pub fn restore(id: &str, bundle: &Path, opts: CreateOptions, restore: &RestoreOptions) -> Result<Container> {
        valid_id(id)?;
        let spec = spec::load_spec(bundle)?;
        refuse_unsupported(id, &spec, opts.cgroup_driver == CgroupDriver::Systemd)?;
        let criu_error = |message: String| Error::Criu { id: id.into(), message };
        if crate::rootless::is_rootless() {
            return Err(criu_error("restore needs root: CRIU cannot restore a container rootless here".into()));
        }
        let (criu, path) = program(&restore.criu).map_err(criu_error)?;
        let recorded = Recorded::load(&restore.image_dir).map_err(criu_error)?;
        let ns = Namespaces::from_spec(&spec);
        let cgroups_path = spec.linux().as_ref().and_then(|l| l.cgroups_path().clone());
        let cgroup = Cgroup::resolve(cgroups_path.as_deref(), id)?;
        let dir = make_state_dir(&opts.state_root, id)?;
        let mut guard = CreateGuard { pid: None, cgroup: Some(cgroup.clone()), unit: None, dir: Some(dir.clone()), layers: None };
        cgroup.create()?;
        let warnings = super::limit(&cgroup, spec.linux().as_ref().and_then(|l| l.resources().as_ref()))?;
        let mut fds: Vec<OwnedFd> = Vec::new();
        for d in cgroup.dirs() {
            let procs = d.join("cgroup.procs");
            fds.push(File::options().write(true).open(&procs).ctx(id, || format!("open {}", procs.display()))?.into());
        }
        let (keys, inherited) = inherited_fds(id, &recorded, opts.stdio, &ns)?;
        fds.extend(inherited);
        let joins: Vec<(&'static str, PathBuf)> = ns
            .joins
            .iter()
            .filter_map(|(t, path)| match t {
                LinuxNamespaceType::Ipc => Some(("ipc", path.clone())),
                LinuxNamespaceType::Uts => Some(("uts", path.clone())),
                _ => None,
            })
            .collect();
        let mut mounts = criu::bind_mounts(&spec);
        mounts.extend(cgroup_binds(&spec, &cgroup)?);
        let work_dir = restore.work_dir.clone().unwrap_or_else(|| dir.clone());
        std::fs::create_dir_all(&work_dir).ctx(id, || format!("create {}", work_dir.display()))?;
        let rootfs = spec::rootfs_path(bundle, &spec);
        // As runc: the prestart and createRuntime hooks run again once CRIU
        // has made the restored tree's namespaces, with its pid.
        let hooks: Vec<_> = [HookKind::Prestart, HookKind::CreateRuntime]
            .into_iter()
            .map(|kind| (kind, kind.of(&spec).to_vec()))
            .filter(|(_, list)| !list.is_empty())
            .collect();
        let hook_state = hooks::encode(HookKind::Prestart, &HookState::new(&spec, id, bundle, "creating", None))
            .map_err(|message| Error::Init { id: id.into(), message })?;
        // Last, with nothing that can fail between it and its undoing: the
        // bind is not under the state dir, which the guard removes recursively.
        let root = RootBind::new(&opts.state_root, id, &rootfs)?;
        let criu_opts = criu::Restore {
            root: &root.path,
            mounts: &mounts,
            inherited: &keys,
            joins: &joins,
            recorded: &recorded,
        }
        .opts();
        let request = InitRequest::Criu(CriuRequest {
            criu,
            path,
            typ: ReqType::Restore,
            opts: criu_opts,
            image_dir: restore.image_dir.clone(),
            work_dir,
            cgroups: cgroup.dirs().len(),
            inherited: keys.len(),
            hooks,
            hook_state,
        });
        let ran = in_runner("CRIU runner", &request, &fds);
        drop(fds);
        drop(root);
        let (pid, console) = match ran.map_err(criu_error)? {
            RunnerAnswer::Restored { pid, console } => (pid, console),
            RunnerAnswer::Ready(_) => return Err(criu_error("CRIU restored nothing".into())),
        };
        guard.pid = Some(pid);
        let state = State {
            id: id.into(),
            bundle: bundle.to_path_buf(),
            rootfs,
            pid,
            pid_start: proc_stat::start_time(pid).ctx(id, || format!("read start time of {pid}"))?,
            status: Status::Running,
            cgroups: cgroup.dirs().to_vec(),
            systemd_unit: None,
        };
        state.save(&dir).ctx(id, || format!("save state in {}", dir.display()))?;
        guard.disarm();
        let own_pid_namespace = Some(ns.creates(LinuxNamespaceType::Pid));
        Ok(Container { state, dir, channel: None, warnings, console, own_pid_namespace })
    }
}

/// What ferrum cannot checkpoint or restore (yet), refused by name before
/// anything is done.
fn refuse_unsupported(id: &str, spec: &Spec, systemd: bool) -> Result<()> {
    let ns = Namespaces::from_spec(spec);
    let refused = if ns.has(LinuxNamespaceType::User) {
        Some("a container in a user namespace cannot be checkpointed or restored by ferrum yet")
    } else if !ns.creates(LinuxNamespaceType::Pid) {
        Some("the container shares a pid namespace: CRIU dumps a whole pid namespace, so only a container with its own can be checkpointed")
    } else if systemd {
        Some("checkpoint/restore under the systemd cgroup driver is not supported by ferrum yet")
    } else {
        None
    };
    match refused {
        Some(message) => Err(Error::Criu { id: id.into(), message: message.into() }),
        None => Ok(()),
    }
}

/// CRIU's program, found on our PATH, and that PATH for the tools it runs.
fn program(criu: &Path) -> std::result::Result<(PathBuf, String), String> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    Ok((criu::resolve(criu, &path)?, path))
}

/// Init's stdio as CRIU will see it.
fn stdio_of(pid: i32) -> std::io::Result<Vec<OpenFile>> {
    let mut files = Vec::new();
    for fd in 0..3 {
        let link = format!("fd/{fd}");
        // A closed fd has no link: nothing to declare.
        let Ok(target) = procfs::readlink(Base::Pid(pid), &link) else { continue };
        let mnt_id = criu::fdinfo_mnt_id(&procfs::read(Base::Pid(pid), format!("fdinfo/{fd}"))?).unwrap_or(0);
        // O_PATH: opening a FIFO for real could block.
        let inode = procfs::open_link(Base::Pid(pid), &link, OpenFlags::O_PATH)?.metadata()?.ino();
        files.push(OpenFile { fd, link: target.to_string_lossy().into_owned(), mnt_id, inode });
    }
    Ok(files)
}

/// The fds CRIU inherits at a restore, with their keys: the new stdio in place
/// of the recorded one (/dev/null where there is none), then the network
/// namespace joined by path.
fn inherited_fds(id: &str, recorded: &Recorded, stdio: crate::Stdio, ns: &Namespaces) -> Result<(Vec<String>, Vec<OwnedFd>)> {
    let mut new = [stdio.stdin, stdio.stdout, stdio.stderr];
    let (mut keys, mut fds) = (Vec::new(), Vec::new());
    for (fd, key) in &recorded.stdio {
        if keys.contains(key) {
            continue;
        }
        let file = match new.get_mut(*fd as usize).and_then(Option::take) {
            Some(f) => f,
            None => File::options().read(true).write(true).open("/dev/null").ctx(id, || "open /dev/null".into())?.into(),
        };
        keys.push(key.clone());
        fds.push(file);
    }
    if recorded.external_netns {
        let Some((_, path)) = ns.joins.iter().find(|(t, _)| *t == LinuxNamespaceType::Network) else {
            let message = "the checkpoint joined a network namespace, this container's spec names none".into();
            return Err(Error::Criu { id: id.into(), message });
        };
        keys.push(criu::EXTERNAL_NETNS_KEY.into());
        fds.push(File::open(path).ctx(id, || format!("open network namespace {}", path.display()))?.into());
    }
    Ok((keys, fds))
}

/// The v1 cgroup directories bound under the spec's `cgroup` mount when the
/// container has no cgroup namespace (see init's rootfs): outside the
/// container, so external, each mapped to `cgroup`'s directory.
fn cgroup_binds(spec: &Spec, cgroup: &Cgroup) -> Result<Vec<ExternalMount>> {
    let ns = Namespaces::from_spec(spec);
    let dest = spec.mounts().iter().flatten().find(|m| m.typ().as_deref() == Some("cgroup"));
    let Some(dest) = dest.filter(|_| !crate::cgroup::is_pure_v2() && !ns.has(LinuxNamespaceType::Cgroup)) else {
        return Ok(Vec::new());
    };
    Ok(cgroup
        .v1_entries()?
        .into_iter()
        .map(|(name, dir)| ExternalMount { destination: dest.destination().join(name), source: dir })
        .collect())
}

/// The rootfs bound where CRIU wants its root: on a mount point of its own
/// whose parent is not mounted over. Outside the state dir, and removed
/// with rmdir only: a recursive removal could never go through it.
struct RootBind {
    path: PathBuf,
}

impl RootBind {
    fn new(state_root: &Path, id: &str, rootfs: &Path) -> Result<RootBind> {
        let path = state_root.join(format!(".criu-root-{id}"));
        // What a restore killed midway left: its bind, then the empty dir.
        let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&path);
        std::fs::create_dir(&path).ctx(id, || format!("create {}", path.display()))?;
        let bound = nix::mount::mount(Some(rootfs), &path, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>);
        if let Err(e) = bound {
            let _ = std::fs::remove_dir(&path);
            return Err(e).ctx(id, || format!("bind {} for CRIU", rootfs.display()));
        }
        Ok(RootBind { path })
    }
}

impl Drop for RootBind {
    fn drop(&mut self) {
        if nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH).is_ok() {
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}
