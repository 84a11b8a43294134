//! The processes' stdio, from the paths containerd passes in Create and Exec.
//!
//! Without a terminal, stdout and stderr FIFOs are handed to the process
//! directly: no copy loop, no buffer in the shim, and nothing can be lost when
//! a process prints and exits at once. They are opened read-write, which never
//! blocks and keeps a reader on the FIFO, so a restarting containerd does not
//! make the container's writes fail with EPIPE (containerd's own shim keeps a
//! reader open for the same reason). A process's exit is reported only once
//! what it wrote to them has been read, or nobody is left to read it: a client
//! may give up on a FIFO it has not finished opening once it learns of the
//! exit (containerd's `fifo` package closes a reader whose open(2) has
//! returned but is not yet noted when Task.Delete cancels its IO, as `ctr run
//! --rm` does), and a process that prints and exits at once lost its output
//! to that race under load. stdin is copied from its FIFO into a pipe,
//! because the process must see EOF when the client's input ends or CloseIO is
//! called, which a shared FIFO cannot give.
//!
//! `file://PATH` appends both outputs to a file, handed over directly too.
//! `binary://PATH?k=v` runs a logging binary as containerd's runc shim does:
//! the process's stdout and stderr are pipes whose read ends the binary gets as
//! fds 3 and 4; it closes fd 5 once it is ready, and learns whose output it is
//! from CONTAINER_ID and CONTAINER_NAMESPACE.
//!
//! With a terminal, the process's stdio is the pty slave made inside the
//! container; the shim copies between the master and the FIFOs.

use anyhow::{bail, Context, Result};
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

/// The shim's side of a process's stdio.
#[derive(Default)]
pub struct ProcessIo {
    /// Copies the stdin FIFO into the process; aborting it closes the process's stdin.
    pub stdin_copy: Option<JoinHandle<()>>,
    /// Copies the console's output to the stdout FIFO; ends when the pty hangs up.
    pub output_copy: Option<JoinHandle<()>>,
    /// The console's master, for ResizePty.
    pub console: Option<Arc<OwnedFd>>,
    /// O_PATH handles on the output FIFOs, for [`wait_until_read`] at the exit.
    pub output_fifos: Vec<OwnedFd>,
}

/// Who a process's output belongs to: its container (for a logging binary),
/// and the uid/gid its pipes and FIFOs are given (runtime options IoUid/IoGid),
/// so that a process running as that user can reopen them (/proc/self/fd/N).
pub struct Owner<'a> {
    pub id: &'a str,
    pub namespace: &'a str,
    pub io_owner: Option<(u32, u32)>,
}

/// How long a logging binary may take to say it is ready.
const LOGGER_READY_TIMEOUT: Duration = Duration::from_secs(10);

fn check_scheme(path: &str) -> Result<()> {
    if let Some((scheme, _)) = path.split_once("://") {
        bail!("stdio {path:?}: the {scheme}:// scheme is not supported here");
    }
    Ok(())
}

/// `binary:///path/to/logger?key=value&flag` -> the program and its arguments
/// (each key, then its value when it has one), percent-decoded.
fn parse_binary_uri(uri: &str) -> Result<(String, Vec<String>)> {
    let rest = uri.strip_prefix("binary://").context("not a binary:// URI")?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !path.starts_with('/') {
        bail!("logging binary {uri:?}: the path must be absolute");
    }
    let mut args = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        args.push(percent_decode(key));
        if !value.is_empty() {
            args.push(percent_decode(value));
        }
    }
    Ok((percent_decode(path), args))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Start the logging binary; returns the write ends for the process's stdout
/// and stderr once the binary said it is ready.
async fn spawn_logger(uri: &str, owner: &Owner<'_>) -> Result<(OwnedFd, OwnedFd)> {
    let (program, args) = parse_binary_uri(uri)?;
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("logging pipe");
    let ((out_r, out_w), (err_r, err_w), (ready_r, ready_w)) = (pipe()?, pipe()?, pipe()?);
    // Sources above 5, so that no dup2 in the child overwrites one still to copy.
    let high = |fd: &OwnedFd| -> Result<OwnedFd> {
        // SAFETY: F_DUPFD_CLOEXEC returns a new fd that we own.
        let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
        if new < 0 {
            return Err(std::io::Error::last_os_error()).context("logging pipe");
        }
        Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(new) })
    };
    let sources = [high(&out_r)?, high(&err_r)?, high(&ready_w)?];
    let raw: Vec<i32> = sources.iter().map(|f| f.as_raw_fd()).collect();
    drop((out_r, err_r, ready_w));
    let mut cmd = std::process::Command::new(&program);
    cmd.args(&args)
        .env("CONTAINER_ID", owner.id)
        .env("CONTAINER_NAMESPACE", owner.namespace)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: the closure only calls dup2 (async-signal-safe) on fds prepared above.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            for (target, src) in raw.iter().enumerate() {
                if libc::dup2(*src, target as i32 + 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    // The reaper collects its exit; nothing waits on it here.
    cmd.spawn().with_context(|| format!("start logging binary {program}"))?;
    drop(sources);
    let mut ready = pipe::Receiver::from_owned_fd(ready_r).context("logging ready pipe")?;
    let mut byte = [0u8; 1];
    tokio::time::timeout(LOGGER_READY_TIMEOUT, ready.read(&mut byte))
        .await
        .map_err(|_| anyhow::anyhow!("logging binary {program} did not get ready in {LOGGER_READY_TIMEOUT:?}"))?
        .with_context(|| format!("wait for logging binary {program}"))?;
    Ok((out_w, err_w))
}

fn open_file(path: &str) -> Result<OwnedFd> {
    let file = OpenOptions::new().append(true).create(true).mode(0o640).open(path);
    Ok(file.with_context(|| format!("open {path}"))?.into())
}

async fn open_output(path: &str, fifos: &mut Vec<OwnedFd>) -> Result<Option<OwnedFd>> {
    if path.is_empty() {
        return Ok(None);
    }
    if let Some(file) = path.strip_prefix("file://") {
        return open_file(file).map(Some);
    }
    check_scheme(path)?;
    let is_fifo = std::fs::metadata(path).map(|m| m.file_type().is_fifo()).unwrap_or(false);
    let reader_seen = if is_fifo { wait_for_reader(path).await } else { None };
    let mut opts = OpenOptions::new();
    if is_fifo {
        opts.read(true).write(true);
    } else {
        opts.append(true).create(true).mode(0o640);
    }
    let file = opts.open(path).with_context(|| format!("open {path}"))?;
    if is_fifo {
        fifos.push(watch_fifo(&file).with_context(|| format!("open {path}"))?);
    }
    // Only now: closing a FIFO's last writer would hand the reader EOF.
    drop(reader_seen);
    Ok(Some(file.into()))
}

/// An O_PATH handle on the FIFO `fifo` is open on, for [`wait_until_read`]:
/// the same FIFO whatever its path names later. Neither a reader nor a
/// writer, so the client still sees EOF as soon as the process closes its
/// output.
fn watch_fifo(fifo: &std::fs::File) -> std::io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fifo.as_raw_fd());
    Ok(OpenOptions::new().read(true).custom_flags(libc::O_PATH).open(path)?.into())
}

/// Waits, at most `timeout`, until each FIFO (an O_PATH handle from
/// `watch_fifo`) holds no unread output or has no reader left to read it.
/// Called after the process's exit and before it is reported: a client that
/// cancels its FIFOs once it learns of the exit (ctr run --rm, via
/// Task.Delete) has by then taken all there is. A write end is held while
/// waiting (for FIONREAD and POLLERR), so the reader's EOF comes when the
/// wait ends; data unread at the timeout stays for as long as a reader keeps
/// the FIFO open.
pub async fn wait_until_read(fifos: Vec<OwnedFd>, timeout: Duration) {
    // O_WRONLY|O_NONBLOCK fails (ENXIO) when nobody reads: nothing to wait for.
    let writers: Vec<OwnedFd> = fifos
        .iter()
        .filter_map(|f| {
            let path = format!("/proc/self/fd/{}", f.as_raw_fd());
            OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(path).ok().map(OwnedFd::from)
        })
        .collect();
    drop(fifos);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    while !writers.iter().all(read_or_unreadable) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(16));
    }
}

/// The FIFO whose write end `fifo` is holds nothing unread, or nobody reads it.
fn read_or_unreadable(fifo: &OwnedFd) -> bool {
    let mut unread: libc::c_int = 0;
    // SAFETY: FIONREAD stores an int through the pointer we pass.
    if unsafe { libc::ioctl(fifo.as_raw_fd(), libc::FIONREAD, &mut unread) } < 0 || unread == 0 {
        return true;
    }
    // A pipe's write end polls POLLERR once it has no reader at all.
    let mut poll = libc::pollfd { fd: fifo.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
    // SAFETY: poll of one pollfd we own, without waiting.
    let n = unsafe { libc::poll(&mut poll, 1, 0) };
    n > 0 && poll.revents & libc::POLLERR != 0
}

/// How long Create and Exec wait for the client to open an output FIFO.
const READER_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits until someone besides us reads the FIFO; returns a write handle
/// proving it. A process handed a read-write FIFO runs at once: if it prints
/// and exits before containerd has opened its end (the CRI opens exec FIFOs
/// concurrently with Exec), the pipe's last handle closes with the output in
/// it, and containerd's open then blocks for ever waiting for a writer, so
/// ExecSync never returns. runc's shim is safe by opening its writer blocking.
/// After the timeout we go on as before: a client may never read.
async fn wait_for_reader(path: &str) -> Option<std::fs::File> {
    let deadline = tokio::time::Instant::now() + READER_TIMEOUT;
    loop {
        // O_WRONLY|O_NONBLOCK on a FIFO fails with ENXIO while it has no reader.
        match OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(path) {
            Ok(writer) => return Some(writer),
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(_) => return None,
        }
    }
}

/// The stdin FIFO, read asynchronously. Readiness is edge-triggered: a FIFO
/// whose writer has not connected yet reports nothing (not EOF) until the
/// writer comes and goes.
fn open_input(path: &str) -> Result<Option<pipe::Receiver>> {
    if path.is_empty() {
        return Ok(None);
    }
    check_scheme(path)?;
    let source = pipe::OpenOptions::new().open_receiver(path).with_context(|| format!("open {path}"))?;
    Ok(Some(source))
}

/// Stdio for a process without a terminal.
pub async fn open(stdin: &str, stdout: &str, stderr: &str, owner: &Owner<'_>) -> Result<(runtime_core::Stdio, ProcessIo)> {
    let mut fifos = Vec::new();
    let (stdout, stderr) = if stdout.starts_with("binary://") {
        // containerd names the same binary for both outputs: one logger gets both.
        if !stderr.is_empty() && stderr != stdout {
            bail!("stdout {stdout:?} and stderr {stderr:?} name different logging binaries");
        }
        let (out, err) = spawn_logger(stdout, owner).await?;
        (Some(out), Some(err))
    } else {
        let out = open_output(stdout, &mut fifos).await?;
        (out, open_output(stderr, &mut fifos).await?)
    };
    let mut io = ProcessIo { output_fifos: fifos, ..Default::default() };
    let stdin = match open_input(stdin)? {
        None => None,
        Some(mut source) => {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("stdin pipe")?;
            let mut sink = pipe::Sender::from_owned_fd(write).context("stdin pipe")?;
            io.stdin_copy = Some(tokio::spawn(async move {
                // Ends on EOF or when the process closed its stdin; dropping
                // `sink` gives the process EOF.
                let _ = tokio::io::copy(&mut source, &mut sink).await;
            }));
            Some(read)
        }
    };
    let stdio = runtime_core::Stdio { stdin, stdout, stderr, extra: Vec::new() };
    if let Some((uid, gid)) = owner.io_owner {
        for fd in [&stdio.stdin, &stdio.stdout, &stdio.stderr].into_iter().flatten() {
            chown_pipe(fd, uid, gid)?;
        }
    }
    Ok((stdio, io))
}

/// Give a pipe or FIFO to `uid:gid`; a regular file (file://) keeps its owner.
fn chown_pipe(fd: &OwnedFd, uid: u32, gid: u32) -> Result<()> {
    let st = nix::sys::stat::fstat(fd).context("stat stdio")?;
    if st.st_mode & libc::S_IFMT == libc::S_IFIFO {
        nix::unistd::fchown(fd, Some(uid.into()), Some(gid.into())).with_context(|| format!("chown stdio to {uid}:{gid}"))?;
    }
    Ok(())
}

/// Check a terminal process's stdio paths before the process is made.
pub fn check_console_paths(stdin: &str, stdout: &str) -> Result<()> {
    check_scheme(stdin)?;
    check_scheme(stdout)
}

/// Copy between a console's master and the FIFOs (a terminal has one output).
pub fn attach_console(master: OwnedFd, stdin: &str, stdout: &str) -> Result<ProcessIo> {
    let master = Arc::new(master);
    set_nonblocking(&master)?;
    let mut io = ProcessIo { console: Some(master.clone()), ..Default::default() };
    if !stdout.is_empty() {
        let mut sink = pipe::OpenOptions::new().read_write(true).open_sender(stdout).with_context(|| format!("open {stdout}"))?;
        let reader = watch(master.try_clone()?)?;
        io.output_copy = Some(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let Ok(mut ready) = reader.readable().await else { return };
                match ready.try_io(|fd| read(fd.get_ref(), &mut buf)) {
                    Ok(Ok(0)) | Ok(Err(_)) => return, // EIO: every slave fd closed
                    Ok(Ok(n)) => {
                        if sink.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                    Err(_would_block) => continue,
                }
            }
        }));
    }
    if let Some(mut source) = open_input(stdin)? {
        let writer = watch(master.try_clone()?)?;
        io.stdin_copy = Some(tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = source.read(&mut buf).await {
                if n == 0 {
                    return;
                }
                let mut data = &buf[..n];
                while !data.is_empty() {
                    let Ok(mut ready) = writer.writable().await else { return };
                    match ready.try_io(|fd| write(fd.get_ref(), data)) {
                        Ok(Ok(written)) => data = &data[written..],
                        Ok(Err(_)) => return,
                        Err(_would_block) => continue,
                    }
                }
            }
        }));
    }
    Ok(io)
}

fn watch(fd: OwnedFd) -> Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the fd, so it stays open and the same for its lifetime.
    unsafe { AsyncFd::register(fd) }.map_err(|e| anyhow::anyhow!("watch console: {e}"))
}

pub fn resize(console: &OwnedFd, width: u32, height: u32) -> std::io::Result<()> {
    let ws = libc::winsize { ws_row: height as u16, ws_col: width as u16, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ with a valid winsize on a pty master we hold.
    if unsafe { libc::ioctl(console.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn read(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: read into a buffer we own.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn write(fd: &OwnedFd, buf: &[u8]) -> std::io::Result<usize> {
    // SAFETY: write from a buffer we own.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_uris_become_program_and_arguments() {
        let (program, args) = parse_binary_uri("binary:///usr/bin/log%20ger?id=c1&path=%2Fvar%2Flog&flag").unwrap();
        assert_eq!(program, "/usr/bin/log ger");
        assert_eq!(args, ["id", "c1", "path", "/var/log", "flag"]);
        assert!(parse_binary_uri("binary://relative/logger").unwrap_err().to_string().contains("absolute"));
    }
}
