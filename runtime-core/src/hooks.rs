//! OCI hooks: programs the spec names for points of the container's life, each
//! given the container's state as JSON on stdin.
//!
//! Who runs what, as runc: prestart and createRuntime run here, in the runtime's
//! namespaces, once init has set up the mounts and before its pivot_root;
//! createContainer (before pivot_root) and startContainer (right before the
//! user's program) run in the init, inside the container; poststart runs here
//! after start, poststop after delete.
//!
//! Hooks run only from a single-threaded process that reaps nothing else: the
//! init, or for the runtime's own hooks a runner (our binary re-executed, see
//! `container::run_hooks`). The caller of runtime-core may be a subreaper
//! whose waitpid(-1) would otherwise take a hook's exit status (not even a
//! clone3 child without exit signal is safe from it on this kernel: tried).
//! A hook's pidfd gives its timeout.

use crate::clone3::{clone3, dup_high, CloneArgs};
use oci_spec::runtime::{Hook, Spec};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ffi::CString;
use std::io::{self, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Output of a hook kept for its error message; the rest is read and dropped.
const OUTPUT_KEPT: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum HookKind {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl HookKind {
    fn name(self) -> &'static str {
        match self {
            HookKind::Prestart => "prestart",
            HookKind::CreateRuntime => "createRuntime",
            HookKind::CreateContainer => "createContainer",
            HookKind::StartContainer => "startContainer",
            HookKind::Poststart => "poststart",
            HookKind::Poststop => "poststop",
        }
    }

    /// The spec's hooks of this kind, in order.
    pub(crate) fn of(self, spec: &Spec) -> &[Hook] {
        let Some(hooks) = spec.hooks() else {
            return &[];
        };
        #[allow(deprecated)] // prestart is deprecated in the spec, and still used.
        let list = match self {
            HookKind::Prestart => hooks.prestart(),
            HookKind::CreateRuntime => hooks.create_runtime(),
            HookKind::CreateContainer => hooks.create_container(),
            HookKind::StartContainer => hooks.start_container(),
            HookKind::Poststart => hooks.poststart(),
            HookKind::Poststop => hooks.poststop(),
        };
        list.as_deref().unwrap_or(&[])
    }
}

/// The runtime spec's State, as the hooks read it on stdin.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HookState<'a> {
    pub oci_version: &'a str,
    pub id: &'a str,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub bundle: &'a Path,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<&'a HashMap<String, String>>,
}

impl<'a> HookState<'a> {
    pub(crate) fn new(
        spec: &'a Spec,
        id: &'a str,
        bundle: &'a Path,
        status: &'static str,
        pid: Option<i32>,
    ) -> Self {
        HookState {
            oci_version: spec.version(),
            id,
            status,
            pid,
            bundle,
            annotations: spec.annotations().as_ref().filter(|a| !a.is_empty()),
        }
    }
}

/// Run the spec's hooks of `kind` in order; the first failure stops the rest
/// and is returned as text naming the hook, with what it printed.
pub(crate) fn run(kind: HookKind, spec: &Spec, state: &HookState) -> Result<(), String> {
    let hooks = kind.of(spec);
    if hooks.is_empty() {
        return Ok(());
    }
    run_encoded(kind, hooks, &encode(kind, state)?, false).map(drop)
}

pub(crate) fn encode(kind: HookKind, state: &HookState) -> Result<Vec<u8>, String> {
    serde_json::to_vec(state).map_err(|e| format!("{} hooks: encode state: {e}", kind.name()))
}

/// `hooks` with `state` (JSON) on stdin. With `all`, every hook runs and the
/// failures come back as warnings; without, the first failure is the error.
pub(crate) fn run_encoded(
    kind: HookKind,
    hooks: &[Hook],
    state: &[u8],
    all: bool,
) -> Result<Vec<String>, String> {
    let mut failures = Vec::new();
    for (i, hook) in hooks.iter().enumerate() {
        if let Err(e) = run_one(hook, state) {
            let message = format!("{} hook #{i} ({}): {e}", kind.name(), hook.path().display());
            if !all {
                return Err(message);
            }
            failures.push(message);
        }
    }
    Ok(failures)
}

fn run_one(hook: &Hook, state: &[u8]) -> Result<(), String> {
    let timeout = match hook.timeout() {
        Some(t) if t <= 0 => return Err(format!("timeout {t} must be greater than zero")),
        Some(t) => Some(Duration::from_secs(t as u64)),
        None => None,
    };
    let child = Child::spawn(hook, state).map_err(|e| format!("start: {e}"))?;
    child.wait(timeout).map_err(|e| e.to_string())
}

struct Child {
    pidfd: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

/// How a hook failed.
struct Failure {
    reason: String,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)?;
        for (name, out) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let text = String::from_utf8_lossy(out);
            let text = text.trim();
            if !text.is_empty() {
                write!(f, ", {name}: {text}")?;
            }
        }
        Ok(())
    }
}

impl Child {
    fn spawn(hook: &Hook, state: &[u8]) -> io::Result<Child> {
        let cstr = |b: &[u8]| CString::new(b).map_err(|_| io::Error::other("contains a NUL byte"));
        let path = cstr(hook.path().as_os_str().as_bytes())?;
        if !hook.path().is_absolute() {
            return Err(io::Error::other("path must be absolute"));
        }
        let argv: Vec<CString> = match hook.args() {
            Some(args) if !args.is_empty() => args
                .iter()
                .map(|a| cstr(a.as_bytes()))
                .collect::<io::Result<_>>()?,
            _ => vec![path.clone()],
        };
        let envp: Vec<CString> = hook
            .env()
            .iter()
            .flatten()
            .map(|e| cstr(e.as_bytes()))
            .collect::<io::Result<_>>()?;
        let argv_ptrs: Vec<*const libc::c_char> = argv
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let envp_ptrs: Vec<*const libc::c_char> = envp
            .iter()
            .map(|e| e.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();

        let stdin = state_file(state)?;
        let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // Above every target fd, so that no dup2 in the child overwrites a
        // source still to be copied, and dup2 clears close-on-exec.
        let sources = [
            dup_high(stdin.as_fd())?,
            dup_high(out_w.as_fd())?,
            dup_high(err_w.as_fd())?,
        ];
        let sources: [RawFd; 3] = sources.each_ref().map(|f| f.as_raw_fd());
        let exec = || {
            // SAFETY: only dup2, close_range, sigprocmask, signal and execve, on
            // memory prepared before the clone (raw calls, as in any forked child).
            unsafe {
                for (target, src) in sources.iter().enumerate() {
                    if libc::dup2(*src, target as RawFd) < 0 {
                        libc::_exit(126);
                    }
                }
                libc::syscall(libc::SYS_close_range, 3, u32::MAX, 0);
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                // Rust ignores SIGPIPE in the runtime; the hook gets the default.
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr());
            }
        };
        let pidfd = start(exec)?;
        drop((out_w, err_w));
        Ok(Child {
            pidfd,
            stdout: out_r,
            stderr: err_r,
        })
    }

    /// Collect output until the hook exits (or its timeout kills it), then its status.
    fn wait(self, timeout: Option<Duration>) -> Result<(), Failure> {
        // A timeout past what an Instant can hold (the spec allows any i64
        // of seconds) is no deadline; adding it would panic, and the init or
        // hook runner would die without a word.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut out = Output::default();
        let mut open = [true, true];
        let reason = loop {
            let wait_ms = match deadline {
                Some(d) => d
                    .saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(i32::MAX as u128) as i32,
                None => -1,
            };
            let mut fds = [
                poll_fd(self.pidfd.as_raw_fd(), true),
                poll_fd(self.stdout.as_raw_fd(), open[0]),
                poll_fd(self.stderr.as_raw_fd(), open[1]),
            ];
            // SAFETY: poll on an array of valid pollfds.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                self.kill();
                break format!("wait: {e}");
            }
            if n == 0 {
                self.kill();
                let secs = timeout.map_or(0, |t| t.as_secs());
                break format!("timed out after {secs}s");
            }
            for (i, fd) in [&self.stdout, &self.stderr].into_iter().enumerate() {
                if open[i] && fds[i + 1].revents != 0 {
                    open[i] = out.read(i, fd);
                }
            }
            if fds[0].revents != 0 {
                break match self.status() {
                    Ok(0) => String::new(),
                    Ok(code) => format!("exited with status {code}"),
                    Err(e) => e,
                };
            }
        };
        if reason.is_empty() {
            return Ok(());
        }
        // What is already in the pipes; a background child of the hook may
        // keep them open, so no waiting for EOF.
        for (i, fd) in [&self.stdout, &self.stderr].into_iter().enumerate() {
            let _ = nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            );
            while open[i] && out.read(i, fd) {}
        }
        Err(Failure {
            reason,
            stdout: out.kept[0].clone(),
            stderr: out.kept[1].clone(),
        })
    }

    fn kill(&self) {
        // SAFETY: pidfd_send_signal on our pidfd; then reap, so no zombie stays.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                0,
                0,
            );
        }
        let _ = self.status();
    }

    /// Reap the hook: its exit code, or how it died.
    fn status(&self) -> Result<i32, String> {
        // SAFETY: waitid on our own child's pidfd.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                self.pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED,
            )
        };
        if r < 0 {
            return Err(format!("wait: {}", io::Error::last_os_error()));
        }
        // SAFETY: waitid filled in a SIGCHLD siginfo.
        let (code, status) = unsafe { (info.si_code, info.si_status()) };
        match code {
            libc::CLD_EXITED if status == 127 => {
                Err("exited with status 127 (could it be executed?)".into())
            }
            libc::CLD_EXITED => Ok(status),
            _ => Err(format!("killed by signal {status}")),
        }
    }
}

/// Start `exec` in a child and return its pidfd. Where a seccomp profile
/// refuses clone3 (containerd's makes it ENOSYS), a fork and pidfd_open.
fn start(exec: impl Fn()) -> io::Result<OwnedFd> {
    // What the child runs when `exec` returns, i.e. its execve failed.
    let child = || -> io::Result<OwnedFd> {
        exec();
        // SAFETY: _exit of the child.
        unsafe { libc::_exit(127) }
    };
    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: see clone3; the child runs `exec` only.
    match unsafe { clone3(&mut args) } {
        Ok(0) => child(),
        // SAFETY: CLONE_PIDFD stored a new fd that we own.
        Ok(_) => Ok(unsafe { OwnedFd::from_raw_fd(pidfd) }),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EPERM)) => {
            // SAFETY: fork; the child runs `exec` only.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                return child();
            }
            if pid < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: pidfd_open of our unreaped child; we own the new fd.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
        }
        Err(e) => Err(e),
    }
}

fn poll_fd(fd: RawFd, wanted: bool) -> libc::pollfd {
    // A negative fd is ignored by poll.
    libc::pollfd {
        fd: if wanted { fd } else { -1 },
        events: libc::POLLIN,
        revents: 0,
    }
}

#[derive(Default)]
struct Output {
    kept: [Vec<u8>; 2],
}

impl Output {
    /// Read once from stream `i`; false at EOF (or when nothing more comes now).
    fn read(&mut self, i: usize, fd: &OwnedFd) -> bool {
        let mut buf = [0u8; 4096];
        // SAFETY: read into a local buffer.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return false;
        }
        let kept = &mut self.kept[i];
        let room = OUTPUT_KEPT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..(n as usize).min(room)]);
        true
    }
}

/// The state as a seekable, unlinked file: the hook may read it or not, and we
/// never block writing into a pipe nobody drains.
fn state_file(state: &[u8]) -> io::Result<std::fs::File> {
    let name = CString::new("ferrum-hook-state").expect("static");
    // SAFETY: memfd_create with a valid name; we own the fd.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(state)?;
    file.rewind()?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(hooks: &str) -> Spec {
        serde_json::from_str(&format!(r#"{{"ociVersion":"1.0.2","hooks":{hooks}}}"#)).unwrap()
    }

    fn state(spec: &Spec) -> HookState<'_> {
        HookState::new(spec, "c1", Path::new("/b"), "creating", Some(42))
    }

    #[test]
    fn hooks_get_state_args_and_env_and_run_in_order() {
        let dir = std::env::temp_dir().join(format!("ferrum-hooks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log");
        let script = format!("cat >> {0}; echo \" $0 $V\" >> {0}", log.display());
        let s = spec(&format!(
            r#"{{"prestart":[{{"path":"/bin/sh","args":["sh","-c",{script:?},"first"],"env":["V=x"]}},
                             {{"path":"/bin/sh","args":["sh","-c",{script:?},"second"]}}]}}"#
        ));
        run(HookKind::Prestart, &s, &state(&s)).unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let state =
            r#"{"ociVersion":"1.0.2","id":"c1","status":"creating","pid":42,"bundle":"/b"}"#;
        assert_eq!(text, format!("{state} first x\n{state} second \n"));
    }

    #[test]
    fn a_failure_names_the_hook_its_status_and_what_it_said() {
        let s = spec(
            r#"{"createRuntime":[{"path":"/bin/sh","args":["sh","-c","echo out; echo err >&2; exit 3"]}]}"#,
        );
        let err = run(HookKind::CreateRuntime, &s, &state(&s)).unwrap_err();
        assert_eq!(
            err,
            "createRuntime hook #0 (/bin/sh): exited with status 3, stdout: out, stderr: err"
        );
    }

    #[test]
    fn a_hook_past_its_timeout_is_killed() {
        let s = spec(r#"{"poststart":[{"path":"/bin/sleep","args":["sleep","30"],"timeout":1}]}"#);
        let started = Instant::now();
        let err = run(HookKind::Poststart, &s, &state(&s)).unwrap_err();
        assert!(err.ends_with("timed out after 1s"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    /// Found by the config.json fuzz suite: a createContainer hook with
    /// timeout i64::MAX killed the container's init (a panic adding it to
    /// the clock), and Create failed with "container init exited during setup".
    #[test]
    fn the_longest_timeout_is_no_deadline() {
        let s = spec(r#"{"poststart":[{"path":"/bin/true","timeout":9223372036854775807}]}"#);
        run(HookKind::Poststart, &s, &state(&s)).unwrap();
    }

    #[test]
    fn bad_hooks_are_refused_clearly() {
        let s = spec(
            r#"{"poststop":[{"path":"relative"},{"path":"/bin/true","timeout":0},{"path":"/no/such"}]}"#,
        );
        let json = encode(HookKind::Poststop, &state(&s)).unwrap();
        let errs = run_encoded(HookKind::Poststop, HookKind::Poststop.of(&s), &json, true).unwrap();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs[0].contains("path must be absolute"), "{errs:?}");
        assert!(
            errs[1].contains("timeout 0 must be greater than zero"),
            "{errs:?}"
        );
        assert!(
            errs[2].contains("hook #2 (/no/such): exited with status 127"),
            "{errs:?}"
        );
    }
}
