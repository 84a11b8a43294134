//! runc's console socket: the caller (containerd's shim, conmon) listens on a
//! Unix socket and gets the container's pty master from us as one
//! SCM_RIGHTS fd, with the master's name as the message, before `create` or
//! `exec --detach` returns.

use anyhow::{Context, Result};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

pub fn send_master(socket: &str, master: &OwnedFd) -> Result<()> {
    let stream = UnixStream::connect(socket).with_context(|| format!("connect to console socket {socket}"))?;
    let fds = [master.as_raw_fd()];
    let name = b"/dev/ptmx";
    sendmsg::<()>(stream.as_raw_fd(), &[IoSlice::new(name)], &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None)
        .with_context(|| format!("send the console to {socket}"))?;
    Ok(())
}
