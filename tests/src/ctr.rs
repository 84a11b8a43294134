//! Running `ctr` with a deadline and keeping everything it printed for assertions.

use std::fmt;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// What one `ctr` (or `docker`) invocation did. `status` is `None` when ctr was killed: by the
/// harness on timeout (`timed_out`) or by a signal.
#[derive(Debug, Clone)]
pub struct CtrOutput {
    /// The program's file name (`ctr`, `docker`), for the report.
    pub program: String,
    pub args: Vec<String>,
    pub status: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CtrOutput {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// Panics with the command line and everything ctr printed unless it exited 0.
    #[track_caller]
    pub fn assert_ok(&self) -> &CtrOutput {
        assert!(self.success(), "ctr failed\n{self}");
        self
    }

    /// `ctr run` exits with the task's exit status (128+N when signal N killed it).
    #[track_caller]
    pub fn assert_exit(&self, code: i32) -> &CtrOutput {
        assert_eq!(
            self.status,
            Some(code),
            "unexpected ctr exit status\n{self}"
        );
        self
    }
}

impl fmt::Display for CtrOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match (self.timed_out, self.status) {
            (true, _) => "timed out, killed".to_string(),
            (false, Some(code)) => format!("exit {code}"),
            (false, None) => "killed by a signal".to_string(),
        };
        writeln!(f, "$ {} {}\n[{status}]", self.program, self.args.join(" "))?;
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

/// Whether ctr runs with a terminal as its stdin/stdout (`ctr run -t` needs one).
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Terminal {
    No,
    /// Under util-linux's `script`, which gives it a pty; the output is the pty's.
    Yes,
}

fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Runs `ctr -a ADDRESS -n NAMESPACE ARGS…`, killing it after `timeout`. Never
/// fails: a ctr that cannot even be spawned is reported as a failed output.
pub(crate) fn run_ctr(
    terminal: Terminal,
    ctr: &Path,
    address: &Path,
    namespace: &str,
    fifo_dir: &Path,
    args: &[&str],
    timeout: Duration,
) -> CtrOutput {
    let args = with_fifo_dir(args, fifo_dir);
    let mut out = run_program(terminal, plain_command(ctr, address, namespace, &args), None, timeout);
    // Shown as `ctr ARGS…`: the address and namespace are the Env's, always.
    out.args = args;
    out
}

/// Runs `command` (under util-linux's `script` for a terminal), writes
/// `stdin` to it (else its stdin is /dev/null), and kills it after `timeout`.
/// Never fails: a program that cannot be spawned is a failed output.
pub(crate) fn run_program(terminal: Terminal, command: Command, stdin: Option<&[u8]>, timeout: Duration) -> CtrOutput {
    let program = Path::new(command.get_program()).file_name().unwrap_or_default().to_string_lossy().into_owned();
    let args: Vec<String> = command.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut output = CtrOutput {
        program,
        args,
        status: None,
        timed_out: false,
        stdout: String::new(),
        stderr: String::new(),
    };
    let mut command = match terminal {
        Terminal::No => command,
        Terminal::Yes => {
            let line: Vec<String> = std::iter::once(command.get_program())
                .chain(command.get_args())
                .map(|a| shell_quote(&a.to_string_lossy()))
                .collect();
            let mut c = Command::new("script");
            // -e: exit with the command's status; -q: no banner; log to /dev/null.
            c.args(["-q", "-e", "-c", &line.join(" "), "/dev/null"]);
            c.envs(command.get_envs().filter_map(|(k, v)| Some((k, v?))));
            c
        }
    };
    let child = command
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            output.stderr = format!("harness: cannot spawn {}: {e}", output.program);
            return output;
        }
    };
    // Drain both pipes while waiting, or a chatty program blocks on a full pipe.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // From a thread of its own, so a program that does not read cannot
        // block the timeout. EPIPE is for the test to judge from the output;
        // dropping the pipe is the end of input.
        let input = input.to_vec();
        thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    match wait_until(&mut child, Instant::now() + timeout) {
        Some(status) => output.status = status.code(),
        None => {
            output.timed_out = true;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
    output.stdout = stdout.join().unwrap_or_default();
    if terminal == Terminal::Yes {
        // `script` echoes the program's end of input (its stdin is /dev/null)
        // as a literal `^@`, anywhere in the output depending on timing.
        output.stdout = output.stdout.replace("^@", "");
    }
    output.stderr = stderr.join().unwrap_or_default();
    output
}

fn plain_command(ctr: &Path, address: &Path, namespace: &str, args: &[String]) -> Command {
    let mut c = Command::new(ctr);
    c.arg("--address").arg(address).args(["--namespace", namespace]).args(args);
    c
}

/// `ctr --address A --namespace N ARGS…` as a Command (with `--fifo-dir` as in
/// `run_ctr`), for a test that drives ctr's stdio and lifetime itself.
/// `command` with a terminal as its stdio (`script`), and `input`, if any,
/// typed into it; the output is the terminal's. Killed after 60 s.
pub fn in_terminal(command: Command, input: Option<&[u8]>) -> CtrOutput {
    run_program(Terminal::Yes, command, input, Duration::from_secs(60))
}

pub(crate) fn command(ctr: &Path, address: &Path, namespace: &str, fifo_dir: &Path, args: &[&str]) -> Command {
    plain_command(ctr, address, namespace, &with_fifo_dir(args, fifo_dir))
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits for `child` to exit until `deadline` passes (`None`). The wait wakes
/// on the exit itself (a pidfd polled for readability), not on a polling
/// tick: the benchmarks time `ctr run` with this, and a sleep-and-retry loop
/// rounded every duration up to its schedule (114, 164, 214 ms…).
pub(crate) fn wait_until(child: &mut Child, deadline: Instant) -> Option<std::process::ExitStatus> {
    // SAFETY: pidfd_open(2) with a pid and no flags; a child not yet reaped
    // cannot have its pid reused.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) } as i32;
    // SAFETY: a fresh fd that nothing else owns (when the call succeeded).
    let pidfd = (raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) });
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        match &pidfd {
            Some(fd) => {
                let mut poll = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
                // SAFETY: one valid pollfd. EINTR or a timeout only loops.
                unsafe { libc::poll(&mut poll, 1, ms) };
            }
            // No pidfd (a kernel before 5.3): poll the child every few ms.
            None => thread::sleep(left.min(Duration::from_millis(5))),
        }
    }
}

/// ctr puts the stdio FIFOs of `run`, `tasks start` and `tasks exec` in
/// /run/containerd/fifo and leaves them there for detached tasks or when it is
/// killed; pointing `--fifo-dir` into the Env's temp dir keeps the host clean.
fn with_fifo_dir(args: &[&str], fifo_dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let subcommand_len = match args {
        ["run", ..] => 1,
        ["tasks" | "task" | "t", "start" | "exec", ..] => 2,
        _ => return out,
    };
    if !args.iter().any(|a| a.starts_with("--fifo-dir")) {
        let flag = format!("--fifo-dir={}", fifo_dir.display());
        out.insert(subcommand_len, flag);
    }
    out
}

/// `ctr events` lines of one task (Env::events_of): exactly `kills` TaskOOM
/// before its TaskExit, none after (one event per OOM kill, in order).
pub fn assert_ooms_before_exit(events: &[String], kills: usize) {
    let exit = events
        .iter()
        .position(|l| l.contains("/tasks/exit"))
        .unwrap_or_else(|| panic!("no /tasks/exit:\n{events:#?}"));
    let before = events[..exit].iter().filter(|l| l.contains("/tasks/oom")).count();
    assert_eq!(before, kills, "not one /tasks/oom per OOM kill before the exit:\n{events:#?}");
    assert!(!events[exit..].iter().any(|l| l.contains("/tasks/oom")), "a /tasks/oom after the exit:\n{events:#?}");
}

/// The fd numbers in `ls -l /proc/self/fd` output, with their link targets
/// (none for ls's own directory fd, closed by the time ls reads the links).
pub fn listed_fds(out: &CtrOutput) -> Vec<(u32, String)> {
    out.stdout
        .lines()
        .filter(|l| l.starts_with('l'))
        .filter_map(|l| {
            let l = l.trim_end_matches('\r');
            let (name, target) = l.split_once(" -> ").unwrap_or((l, ""));
            let fd = name.split_whitespace().last()?.parse().ok()?;
            Some((fd, target.to_string()))
        })
        .collect()
}

/// Only stdio and the listing's own directory fd: every fd of the runtime was
/// closed or close-on-exec by the time the user's program ran.
#[track_caller]
pub fn assert_only_stdio(out: &CtrOutput) {
    out.assert_ok();
    let fds = listed_fds(out);
    let numbers: Vec<u32> = fds.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        numbers,
        [0, 1, 2, 3],
        "fds in the container: {fds:?}\n{out}"
    );
    // A terminal carries stderr with stdout.
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains("/proc/self/fd/3: cannot read link"),
        "fd 3 was ls's own, gone when listed: {out}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_dir_goes_after_the_subcommand() {
        let dir = Path::new("/t/fifo");
        assert_eq!(
            with_fifo_dir(&["run", "--rm", "img", "c1"], dir),
            ["run", "--fifo-dir=/t/fifo", "--rm", "img", "c1"]
        );
        assert_eq!(
            with_fifo_dir(&["t", "exec", "--exec-id", "e", "c1", "sh"], dir)[..3],
            ["t", "exec", "--fifo-dir=/t/fifo"]
        );
        assert_eq!(with_fifo_dir(&["images", "ls"], dir), ["images", "ls"]);
        assert_eq!(
            with_fifo_dir(&["run", "--fifo-dir", "/x", "i", "c"], dir),
            ["run", "--fifo-dir", "/x", "i", "c"]
        );
    }

    /// A stand-in for ctr: a script that ignores the flags it is given.
    fn fake_ctr(name: &str, body: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path =
            std::env::temp_dir().join(format!("ferrum-fake-ctr-{}-{name}", std::process::id()));
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn run_fake(name: &str, body: &str, timeout: Duration) -> CtrOutput {
        let ctr = fake_ctr(name, body);
        let run = || {
            run_ctr(Terminal::No, &ctr, Path::new("/sock"), "ns", Path::new("/fifo"), &["version"], timeout)
        };
        // Another test thread forking while the script was open for writing
        // holds it open until that child execs: exec then fails with ETXTBSY.
        let mut out = run();
        for _ in 0..20 {
            if !out.stderr.contains("Text file busy") {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            out = run();
        }
        std::fs::remove_file(ctr).unwrap();
        out
    }

    #[test]
    fn output_and_status_are_captured() {
        let out = run_fake(
            "status",
            "echo out; echo \"$*\" >&2; exit 3",
            Duration::from_secs(10),
        );
        assert_eq!((out.status, out.timed_out), (Some(3), false));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "--address /sock --namespace ns version\n");
    }

    #[test]
    fn timeout_kills_and_reports() {
        let started = Instant::now();
        let out = run_fake("timeout", "exec sleep 10", Duration::from_millis(200));
        assert!(out.timed_out && out.status.is_none(), "{out}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
