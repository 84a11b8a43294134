//! The process half of init: limits, credentials, capabilities, working
//! directory, environment and finally the exec.

use super::capabilities::Sets;
use super::{console, lsm, scheduling, seccomp};
use super::paths::{create_in_root, open_in_root, open_process_root, Leaf};
use super::{Describe, Result};
use oci_spec::runtime::{LinuxSeccomp, PosixRlimitType, Process};
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything the exec needs, checked before init reports ready, so that
/// `create` (not `start`) fails for a missing binary, as with runc.
pub(super) struct Prepared {
    console: Option<OwnedFd>,
    /// A filter to load right before the exec (with no_new_privs set).
    seccomp: Option<seccomp::Filter>,
    path: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    no_new_privs: bool,
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Role {
    /// A container's init: creates a missing cwd and owns /dev/console (as runc).
    Init,
    /// A process joining a running container.
    Exec,
}

pub(super) fn prepare(
    id: &str,
    p: &Process,
    seccomp: Option<&LinuxSeccomp>,
    role: Role,
    host: &lsm::Host,
    warnings: &mut Vec<String>,
    listener: &mut dyn FnMut(RawFd) -> Result<()>,
) -> Result<Prepared> {
    let filter = seccomp.map(seccomp::build).transpose()?;
    let no_new_privs = p.no_new_privileges().unwrap_or(false);
    for rl in p.rlimits().iter().flatten() {
        let resource = rlimit_resource(rl.typ());
        let lim = libc::rlimit { rlim_cur: rl.soft(), rlim_max: rl.hard() };
        // SAFETY: setrlimit with a valid struct.
        if unsafe { libc::setrlimit(resource, &lim) } < 0 {
            return Err(format!("set {:?} to {}/{}: {}", rl.typ(), rl.soft(), rl.hard(), std::io::Error::last_os_error()));
        }
    }
    // Before the user switch: a real-time class or policy needs privilege.
    if let Some(s) = p.scheduler() {
        scheduling::set_scheduler(s)?;
    }
    if let Some(io) = p.io_priority() {
        scheduling::set_io_priority(io)?;
    }
    if role == Role::Exec {
        // The exec is in the container's cgroup by now (the parent set the
        // `initial` affinity before moving it there).
        if let Some(list) = p.exec_cpu_affinity().as_ref().and_then(|a| a.cpu_affinity_final().as_deref()) {
            let cpus = crate::affinity::parse_cpu_list(list).map_err(|e| format!("process.execCPUAffinity.final: {e}"))?;
            crate::affinity::set(0, &cpus).describe(|| format!("set process.execCPUAffinity.final {list:?}"))?;
        }
    }
    if let Some(adj) = p.oom_score_adj() {
        // Lowering the score needs CAP_SYS_RESOURCE, which root may lack (as on
        // this project's CI hosts): runc fails there; a container should not.
        if let Err(e) = crate::procfs::write(crate::procfs::Base::OwnProcess, "oom_score_adj", adj.to_string().as_bytes()) {
            warnings.push(format!("container {id}: set oom_score_adj {adj}: {e} (ignored)"));
        }
    }
    // The cwd is resolved inside the container's root, never through a magic
    // link: /proc/self/fd/N would otherwise be whatever fd N of ours is — a
    // procfs of our own, say — and the process would keep it as its cwd (the
    // CVE-2024-21626 class).
    let cwd = p.cwd();
    let root = open_process_root().describe(|| "open the container's root".into())?;
    if role == Role::Init {
        let created = create_in_root(root.as_fd(), cwd, Leaf::Dir, 0o755);
        let is_dir = |fd: &OwnedFd| nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
        match created {
            Ok(fd) if !is_dir(&fd) => return Err(format!("process.cwd {:?} is not a directory", cwd.display().to_string())),
            other => other.describe(|| format!("create cwd {}", cwd.display()))?,
        };
    }
    // A session of its own, terminal or not, as runc's init: the runtime's
    // session is none of the container's business, and CRIU refuses a tree
    // whose session leader is outside its pid namespace.
    if role == Role::Init {
        // SAFETY: setsid(2); a cloned child is no process group leader.
        if unsafe { libc::setsid() } < 0 {
            return Err(format!("make a session: {}", std::io::Error::last_os_error()));
        }
    }
    let console = if p.terminal().unwrap_or(false) {
        let c = console::create(p.console_size(), p.user().uid())?;
        if role == Role::Init {
            console::bind_dev_console(&c)?;
        }
        Some(c.into_master())
    } else {
        None
    };

    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it while
    // we still have it (the profile must then allow what follows, as with
    // runc). With no_new_privs, as late as possible, right before the exec.
    let filter = match filter {
        Some(f) if !no_new_privs => {
            if let Some(fd) = seccomp::load(&f)? {
                listener(fd)?;
            }
            None
        }
        other => other,
    };
    let caps = p.capabilities().as_ref().map(|c| Sets::from_spec(c, warnings));
    if let Some(caps) = &caps {
        caps.apply_bounding()?;
    }
    // Before the user switch, as runc: changing one's own exec label may need privilege.
    host.set_exec_labels(p)?;
    switch_user(p)?;
    // Opened as the user, so that a cwd the user may not reach fails (as runc).
    let dir = open_in_root(root.as_fd(), cwd).describe(|| format!("chdir to cwd {}", cwd.display()))?;
    nix::unistd::fchdir(&dir).describe(|| format!("chdir to cwd {}", cwd.display()))?;
    if let Some(caps) = &caps {
        caps.apply()?;
    }
    // SAFETY: umask has no memory effects.
    unsafe { libc::umask(p.user().umask().unwrap_or(0o022) as libc::mode_t) };

    let env = environment(p);
    let args = p.args().clone().unwrap_or_default();
    let path = lookup(&args[0], &env)?;
    let cstr = |s: &str| CString::new(s).describe(|| format!("{s:?} contains a NUL byte"));
    Ok(Prepared {
        console,
        path: CString::new(path.as_os_str().as_bytes()).describe(|| "executable path".into())?,
        argv: args.iter().map(|a| cstr(a)).collect::<Result<_>>()?,
        envp: env.iter().map(|e| cstr(e)).collect::<Result<_>>()?,
        no_new_privs,
        seccomp: filter,
    })
}

fn rlimit_resource(typ: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType as T;
    match typ {
        T::RlimitCpu => libc::RLIMIT_CPU,
        T::RlimitFsize => libc::RLIMIT_FSIZE,
        T::RlimitData => libc::RLIMIT_DATA,
        T::RlimitStack => libc::RLIMIT_STACK,
        T::RlimitCore => libc::RLIMIT_CORE,
        T::RlimitRss => libc::RLIMIT_RSS,
        T::RlimitNproc => libc::RLIMIT_NPROC,
        T::RlimitNofile => libc::RLIMIT_NOFILE,
        T::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        T::RlimitAs => libc::RLIMIT_AS,
        T::RlimitLocks => libc::RLIMIT_LOCKS,
        T::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        T::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        T::RlimitNice => libc::RLIMIT_NICE,
        T::RlimitRtprio => libc::RLIMIT_RTPRIO,
        T::RlimitRttime => libc::RLIMIT_RTTIME,
    }
}

fn switch_user(p: &Process) -> Result<()> {
    let user = p.user();
    let (uid, gid) = (user.uid(), user.gid());
    let groups: Vec<libc::gid_t> = user.additional_gids().clone().unwrap_or_default();
    // Keep the permitted set across setuid; the spec's sets are applied after.
    // SAFETY: prctl/setgroups/setgid/setuid with plain values.
    unsafe {
        libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0);
        if libc::setgroups(groups.len(), groups.as_ptr()) < 0 {
            return Err(format!("setgroups {groups:?}: {}", std::io::Error::last_os_error()));
        }
    }
    nix::unistd::setresgid(gid.into(), gid.into(), gid.into()).describe(|| format!("setgid {gid}"))?;
    nix::unistd::setresuid(uid.into(), uid.into(), uid.into()).describe(|| format!("setuid {uid}"))?;
    Ok(())
}

/// The spec's environment, plus HOME from /etc/passwd when missing (as runc).
fn environment(p: &Process) -> Vec<String> {
    let mut env = p.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let home = home_of(p.user().uid()).unwrap_or_else(|| "/".into());
        env.push(format!("HOME={home}"));
    }
    env
}

fn home_of(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[2].parse() == Ok(uid)).then(|| f[5].to_string())
    })
}

/// An exec failure in the words runc's (Go's) messages use: "no such file or
/// directory", "permission denied". Clients read them: the docker CLI makes
/// `docker run` exit 127 or 126, not 125, on exactly those words.
fn errno_words(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(errno) => {
            let desc = nix::errno::Errno::from_raw(errno).desc();
            let mut chars = desc.chars();
            chars.next().map(|c| c.to_lowercase().chain(chars).collect()).unwrap_or_default()
        }
        None => e.to_string(),
    }
}

/// Resolve the program like execvp would, inside the container, and say
/// exactly what is wrong when it cannot run.
fn lookup(program: &str, env: &[String]) -> Result<PathBuf> {
    let check = |p: &Path| -> std::io::Result<()> {
        let meta = std::fs::metadata(p)?;
        if !meta.is_file() {
            return Err(std::io::Error::from_raw_os_error(libc::EACCES));
        }
        nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).map_err(std::io::Error::from)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return check(&p).map(|_| p).map_err(|e| format!("exec {program:?}: {}", errno_words(&e)));
    }
    let path = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH);
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(program);
        if check(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    Err(format!("exec {program:?}: executable file not found in $PATH ({path})"))
}

impl Prepared {
    pub(super) fn take_console(&mut self) -> Option<OwnedFd> {
        self.console.take()
    }

    /// The last confinement before the exec: no_new_privs and, with it, the
    /// seccomp filter. The startContainer hooks run after it, as confined as
    /// the user's program (as runc). `listener` passes a seccomp listener fd on.
    pub(super) fn confine(&self, listener: &mut dyn FnMut(RawFd) -> Result<()>) -> Result<()> {
        if self.no_new_privs {
            // SAFETY: prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
                return Err(format!("set no_new_privs: {}", std::io::Error::last_os_error()));
            }
        }
        if let Some(filter) = &self.seccomp {
            if let Some(fd) = seccomp::load(filter)? {
                listener(fd)?;
            }
        }
        Ok(())
    }

    /// Replace init with the user's process (after `confine`). Returns only on failure.
    pub(super) fn exec(&self, channel_fd: std::os::fd::RawFd) -> String {
        reset_signals();
        let argv: Vec<*const libc::c_char> =
            self.argv.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
        let envp: Vec<*const libc::c_char> =
            self.envp.iter().map(|e| e.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
        // SAFETY: the channel must close on exec (its EOF tells the parent the
        // exec worked); execve gets NUL-terminated arrays of live CStrings.
        unsafe {
            libc::fcntl(channel_fd, libc::F_SETFD, libc::FD_CLOEXEC);
            libc::execve(self.path.as_ptr(), argv.as_ptr(), envp.as_ptr());
        }
        format!("exec {:?}: {}", self.path, errno_words(&std::io::Error::last_os_error()))
    }
}

/// The user's process starts with default dispositions and nothing blocked,
/// whatever the runtime inherited.
fn reset_signals() {
    // SAFETY: signal/sigprocmask with valid arguments; SIGKILL/SIGSTOP fail harmlessly.
    unsafe {
        for sig in 1..libc::SIGRTMAX() {
            libc::signal(sig, libc::SIG_DFL);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_failures_are_said_in_runcs_words() {
        let words = |errno| errno_words(&std::io::Error::from_raw_os_error(errno));
        assert_eq!(words(libc::ENOENT), "no such file or directory");
        assert_eq!(words(libc::EACCES), "permission denied");
        let err = lookup("/no/such/program", &[]).unwrap_err();
        assert_eq!(err, "exec \"/no/such/program\": no such file or directory");
    }
}
