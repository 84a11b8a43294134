//! Starting a container's init: `clone3` straight into the new namespaces, then
//! `execveat` of our own binary (see init_exe). The caller may be multi-threaded,
//! so between clone and exec the child makes raw, async-signal-safe syscalls only:
//! everything it touches is prepared before the clone.

use crate::cgroup::Birthplace;
use crate::channel::Channel;
use crate::clone3::{clone3, dup_above, CloneArgs};
use crate::protocol::init_argv;
use std::ffi::CString;
use std::mem::size_of;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// linux/sched.h (5.7); the libc crate lacks it.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The container's stdio; `None` is /dev/null.
#[derive(Default)]
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// More fds the process gets as its 3, 4, … (runc's `--preserve-fds`,
    /// systemd's socket activation).
    pub extra: Vec<OwnedFd>,
}

/// The init's fds: 0-2 stdio, then the extra fds (3, 4, …), then the
/// channel, whose number init reads from its argv, and (only with a gate)
/// the gate right after it.
fn channel_fd(stdio: &Stdio) -> RawFd {
    3 + stdio.extra.len() as RawFd
}

/// How an init is born.
#[derive(Clone, Copy, Default)]
pub(crate) struct Birth<'a> {
    /// The new namespaces clone3 puts it in.
    pub clone_flags: u64,
    /// They include a new user namespace, whose maps the parent writes before
    /// init runs (`Spawned::release`).
    pub gated: bool,
    /// An existing user namespace the new ones must belong to (a pod's): an
    /// intermediate process joins it and clones init, since a pid namespace's
    /// first process must be cloned into it. The caller must be a subreaper:
    /// init is reparented to it when the intermediate exits.
    pub in_user: Option<BorrowedFd<'a>>,
    /// A cgroup to be born in: no move into it afterwards, so no wait for the
    /// kernel's lock on moves (cgroup/birth.rs). Not with `in_user`, whose
    /// intermediate is born where the caller is.
    pub cgroup: Option<&'a Birthplace>,
}

pub(crate) struct Spawned {
    pub pid: i32,
    pub channel: Channel,
    /// Held closed by the child before its exec until released: lets the parent
    /// write user-namespace maps before init runs (an unmapped init would have no
    /// capabilities after exec).
    gate: Option<OwnedFd>,
}

impl Spawned {
    pub(crate) fn release(&mut self) -> io::Result<()> {
        if let Some(gate) = self.gate.take() {
            let byte = 1u8;
            // SAFETY: write of one byte from a valid buffer to an fd we own.
            if unsafe { libc::write(gate.as_raw_fd(), (&byte as *const u8).cast(), 1) } != 1 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// The init's fds from 0: the given stdio (/dev/null where there is none),
/// then the extra fds, each copied to `min` or above.
fn stdio_sources(stdio: &Stdio, null: &std::fs::File, min: RawFd) -> io::Result<Vec<OwnedFd>> {
    [&stdio.stdin, &stdio.stdout, &stdio.stderr]
        .map(|f| f.as_ref().map_or(null.as_fd(), |f| f.as_fd()))
        .into_iter()
        .chain(stdio.extra.iter().map(|f| f.as_fd()))
        .map(|f| dup_above(f, min))
        .collect()
}

fn spawn_init(birth: Birth, stdio: &Stdio) -> io::Result<Spawned> {
    let Birth { clone_flags, gated, in_user, cgroup } = birth;
    if in_user.is_some() && cgroup.is_some() {
        return Err(io::Error::other("an init cloned by an intermediate cannot be born in a cgroup"));
    }
    let channel_fd = channel_fd(stdio);
    // Every fd the child uses after its dup2s is numbered above their targets
    // (stdio, extra fds, channel, gate): a dup2 must not overwrite a source
    // still to be copied, nor the executable or a pipe end. dup2 also clears
    // close-on-exec on the targets.
    let above = channel_fd + 2;
    let pipe = || -> io::Result<(OwnedFd, OwnedFd)> {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        Ok((dup_above(r.as_fd(), above)?, dup_above(w.as_fd(), above)?))
    };
    let shared_exe = crate::init_exe::init_exe()?;
    // SAFETY: the init executable's fd stays open for the process's life.
    let exe_copy = dup_above(unsafe { BorrowedFd::borrow_raw(shared_exe) }, above)?;
    let (parent_end, child_end) = UnixStream::pair()?;
    let (gate_read, gate_write) = if gated {
        let (r, w) = pipe()?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };

    let null = std::fs::File::options().read(true).write(true).open("/dev/null")?;
    let mut sources = stdio_sources(stdio, &null, above)?;
    sources.push(dup_above(child_end.as_fd(), above)?);
    if let Some(r) = &gate_read {
        sources.push(dup_above(r.as_fd(), above)?);
    }
    let source_fds: Vec<RawFd> = sources.iter().map(|f| f.as_raw_fd()).collect();
    let gate_fd: RawFd = if gated { channel_fd + 1 } else { -1 };
    let gate_write_fd: RawFd = gate_write.as_ref().map_or(-1, |w| w.as_raw_fd());

    let argv_strings = init_argv(channel_fd).map(|a| CString::new(a).expect("no NUL in init's argv"));
    let argv = [argv_strings[0].as_ptr(), argv_strings[1].as_ptr(), argv_strings[2].as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    let empty = CString::new("").expect("static");
    // With a user namespace to join, the intermediate clones init with the
    // namespaces; the parent's clone makes none.
    let user_fd = in_user.map(|fd| dup_above(fd, above)).transpose()?;
    let user_fd_raw: RawFd = user_fd.as_ref().map_or(-1, |f| f.as_raw_fd());
    let (pid_read, pid_write) = match in_user {
        Some(_) => {
            let (r, w) = pipe()?;
            (Some(r), Some(w))
        }
        None => (None, None),
    };
    let exe = exe_copy.as_raw_fd();
    let pid_write_raw: RawFd = pid_write.as_ref().map_or(-1, |w| w.as_raw_fd());
    let first_flags = if in_user.is_some() { 0 } else { clone_flags };
    let mut args = CloneArgs { flags: first_flags, exit_signal: libc::SIGCHLD as u64, ..Default::default() };
    if let Some(dir) = cgroup.and_then(Birthplace::v2_dir) {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = dir.as_raw_fd() as u64;
    }
    let mut init_args = CloneArgs { flags: clone_flags, exit_signal: libc::SIGCHLD as u64, ..Default::default() };

    // SAFETY: clone3 without CLONE_VM behaves like fork. The child branch only
    // calls dup2/read/setns/clone3/write/execveat/_exit on data prepared above.
    let pid = unsafe { clone3(&mut args)? };
    if pid == 0 {
        unsafe {
            for (target, src) in source_fds.iter().enumerate() {
                if libc::dup2(*src, target as RawFd) < 0 {
                    libc::_exit(126);
                }
            }
            if user_fd_raw >= 0 {
                // Join it as its root (so that the exec keeps its capabilities,
                // as below), then clone init into the new namespaces, which it
                // now owns. Our only job after that is to say init's pid, or
                // (negated) the errno of what failed.
                let mut said: libc::pid_t = 0;
                if libc::syscall(libc::SYS_setns, user_fd_raw, libc::CLONE_NEWUSER) < 0 {
                    said = -*libc::__errno_location();
                } else {
                    libc::syscall(libc::SYS_setresgid, 0, 0, 0);
                    libc::syscall(libc::SYS_setresuid, 0, 0, 0);
                    let init = libc::syscall(libc::SYS_clone3, &mut init_args as *mut CloneArgs, size_of::<CloneArgs>());
                    match init {
                        0 => {} // init: on to the exec
                        n if n < 0 => said = -*libc::__errno_location(),
                        n => said = n as libc::pid_t,
                    }
                }
                if said != 0 {
                    libc::write(pid_write_raw, (&said as *const libc::pid_t).cast(), size_of::<libc::pid_t>());
                    libc::_exit(0);
                }
            }
            if gate_fd >= 0 {
                // Our copy of the write end would keep the read from ever seeing EOF.
                libc::close(gate_write_fd);
                let mut byte = 0u8;
                if libc::read(gate_fd, (&mut byte as *mut u8).cast(), 1) != 1 {
                    libc::_exit(126);
                }
                // The maps are written: become root of the new user namespace
                // before the exec, or the exec would drop every capability
                // (our host uid is not mapped there). Raw syscalls: glibc's
                // wrappers would signal threads this child does not have. A
                // map without uid/gid 0 makes these fail; init then reports
                // what it cannot do.
                libc::syscall(libc::SYS_setresgid, 0, 0, 0);
                libc::syscall(libc::SYS_setresuid, 0, 0, 0);
            }
            libc::syscall(
                libc::SYS_execveat,
                exe,
                empty.as_ptr(),
                argv.as_ptr(),
                envp.as_ptr(),
                libc::AT_EMPTY_PATH,
            );
            libc::_exit(127);
        }
    }
    let pid = match pid_read {
        Some(read) => {
            drop(pid_write);
            init_pid_from(pid, read)?
        }
        None => pid,
    };
    Ok(Spawned { pid, channel: Channel::new(parent_end), gate: gate_write })
}

/// The pid of the init `intermediate` cloned (it writes it on `read`'s pipe
/// and exits), once the intermediate is reaped.
fn init_pid_from(intermediate: libc::pid_t, read: OwnedFd) -> io::Result<libc::pid_t> {
    let mut said: libc::pid_t = 0;
    // SAFETY: read into a pid_t we own, of its size.
    let n = unsafe { libc::read(read.as_raw_fd(), (&mut said as *mut libc::pid_t).cast(), size_of::<libc::pid_t>()) };
    // A subreaping caller may reap it first: then this finds no child, fine.
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(intermediate), None);
    match said {
        pid if pid > 0 && n as usize == size_of::<libc::pid_t>() => Ok(pid),
        errno if errno < 0 => {
            let e = io::Error::from_raw_os_error(-errno);
            Err(io::Error::new(e.kind(), format!("join the user namespace and clone init into it: {e}")))
        }
        _ => Err(io::Error::other("the process joining the user namespace died")),
    }
}

/// Spawn an init, inside an existing pid namespace when `pidns` is given (a
/// pod's shared pid namespace, or an exec into a running container), and in
/// `birth.cgroup`. Two steps change what the calling *thread's* future
/// children get: setns(CLONE_NEWPID), and entering v1 cgroups (the thread
/// moves itself). A short-lived thread of its own takes them: no thread of
/// the caller is ever left pointing into a container.
pub(crate) fn spawn(pidns: Option<&std::fs::File>, birth: Birth, stdio: &Stdio) -> io::Result<Spawned> {
    let enters = birth.cgroup.is_some_and(Birthplace::moves_thread);
    if pidns.is_none() && !enters {
        return spawn_init(birth, stdio);
    }
    if pidns.is_some() && birth.in_user.is_some() {
        // The intermediate would see init's pid in that pid namespace, not ours.
        return Err(io::Error::other("an existing user namespace is joined by an intermediate only for a new pid namespace"));
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            if let Some(pidns) = pidns {
                nix::sched::setns(pidns, nix::sched::CloneFlags::CLONE_NEWPID)?;
            }
            if let Some(place) = birth.cgroup {
                place.enter().map_err(io::Error::other)?;
            }
            spawn_init(birth, stdio)
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("spawner thread panicked")))
    })
}
