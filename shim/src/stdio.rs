//! The processes' stdio, from the paths containerd passes in Create and Exec.
//!
//! Without a terminal, stdout and stderr FIFOs are handed to the process
//! directly: no copy loop, no buffer in the shim, and nothing can be lost when
//! a process prints and exits at once. They are opened read-write, which never
//! blocks and keeps a reader on the FIFO, so a restarting containerd does not
//! make the container's writes fail with EPIPE (containerd's own shim keeps a
//! reader open for the same reason). stdin is copied from its FIFO into a pipe,
//! because the process must see EOF when the client's input ends or CloseIO is
//! called, which a shared FIFO cannot give.
//!
//! With a terminal, the process's stdio is the pty slave made inside the
//! container; the shim copies between the master and the FIFOs.

use anyhow::{bail, Context, Result};
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::sync::Arc;
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
}

fn check_scheme(path: &str) -> Result<()> {
    if let Some((scheme, _)) = path.split_once("://") {
        bail!("stdio {path:?}: the {scheme}:// scheme is not supported yet");
    }
    Ok(())
}

fn open_output(path: &str) -> Result<Option<OwnedFd>> {
    if path.is_empty() {
        return Ok(None);
    }
    check_scheme(path)?;
    let is_fifo = std::fs::metadata(path).map(|m| m.file_type().is_fifo()).unwrap_or(false);
    let mut opts = OpenOptions::new();
    if is_fifo {
        opts.read(true).write(true);
    } else {
        opts.append(true).create(true).mode(0o640);
    }
    let file = opts.open(path).with_context(|| format!("open {path}"))?;
    Ok(Some(file.into()))
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
pub fn open(stdin: &str, stdout: &str, stderr: &str) -> Result<(runtime_core::Stdio, ProcessIo)> {
    let stdout = open_output(stdout)?;
    let stderr = open_output(stderr)?;
    let mut io = ProcessIo::default();
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
    Ok((runtime_core::Stdio { stdin, stdout, stderr }, io))
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
