//! The container's stdio, from the paths containerd passes in Create.
//!
//! stdout and stderr FIFOs are handed to the container directly: no copy loop,
//! no thread, no buffer in the shim, and nothing can be lost when a process
//! prints and exits at once. They are opened read-write, which never blocks and
//! keeps a reader on the FIFO, so a restarting containerd does not make the
//! container's writes fail with EPIPE (containerd's own shim keeps a reader open
//! for the same reason).
//!
//! stdin is copied from its FIFO into a pipe, because the container must see
//! EOF when the client's input ends or CloseIO is called, which a shared FIFO
//! cannot give.

use anyhow::{bail, Context, Result};
use std::fs::OpenOptions;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use tokio::task::JoinHandle;

pub struct Opened {
    pub stdio: runtime_core::Stdio,
    /// The stdin copy; aborting it closes the container's stdin.
    pub stdin_copy: Option<JoinHandle<()>>,
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

fn open_input(path: &str) -> Result<(Option<OwnedFd>, Option<JoinHandle<()>>)> {
    if path.is_empty() {
        return Ok((None, None));
    }
    check_scheme(path)?;
    // Edge-triggered readiness: a FIFO whose writer has not connected yet
    // reports nothing (not EOF) until the writer comes and goes.
    let mut source = tokio::net::unix::pipe::OpenOptions::new()
        .open_receiver(path)
        .with_context(|| format!("open {path}"))?;
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("stdin pipe")?;
    let mut sink = tokio::net::unix::pipe::Sender::from_owned_fd(write).context("stdin pipe")?;
    let copy = tokio::spawn(async move {
        // Ends on EOF or when the container closed its stdin; dropping `sink`
        // gives the container EOF.
        let _ = tokio::io::copy(&mut source, &mut sink).await;
    });
    Ok((Some(read), Some(copy)))
}

pub fn open(stdin: &str, stdout: &str, stderr: &str) -> Result<Opened> {
    let stdout = open_output(stdout)?;
    let stderr = open_output(stderr)?;
    let (stdin, stdin_copy) = open_input(stdin)?;
    Ok(Opened { stdio: runtime_core::Stdio { stdin, stdout, stderr }, stdin_copy })
}
