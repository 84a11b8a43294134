//! linux.seccomp.listenerPath: when a profile hands syscalls to a listener
//! (SCMP_ACT_NOTIFY), the runtime passes the filter's fd to the Unix socket
//! at listenerPath, with the runtime-spec's ContainerProcessState as JSON in
//! the same message, as runc does.

use crate::hooks::HookState;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use oci_spec::runtime::Spec;
use serde::Serialize;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContainerProcessState<'a> {
    oci_version: &'a str,
    fds: [&'static str; 1],
    pid: i32,
    metadata: &'a str,
    state: &'a HookState<'a>,
}

/// Send `fd` (the filter's listener fd of process `pid`) to the spec's listener.
pub(crate) fn send(spec: &Spec, pid: i32, state: &HookState, fd: OwnedFd) -> Result<(), String> {
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
    let path = seccomp.and_then(|s| s.listener_path().clone()).ok_or("no linux.seccomp.listenerPath")?;
    let metadata = seccomp.and_then(|s| s.listener_metadata().clone()).unwrap_or_default();
    let message = ContainerProcessState { oci_version: spec.version(), fds: ["seccompFd"], pid, metadata: &metadata, state };
    let json = serde_json::to_vec(&message).map_err(|e| format!("seccomp listener: encode state: {e}"))?;
    let what = |e: &dyn std::fmt::Display| format!("seccomp listener {}: {e}", path.display());
    let socket = UnixStream::connect(&path).map_err(|e| what(&e))?;
    let fds = [fd.as_raw_fd()];
    sendmsg::<()>(socket.as_raw_fd(), &[IoSlice::new(&json)], &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None)
        .map_err(|e| what(&e))?;
    Ok(())
}
