//! The CRIU runner's own setup, before it runs CRIU (see crate::criu): into
//! the container's cgroup, and the fds CRIU inherits at their numbers.

use super::{Describe, Result};
use crate::channel::Channel;
use crate::criu::swrk::Outcome;
use crate::criu::FIRST_INHERITED_FD;
use crate::hooks::HookKind;
use crate::protocol::InitReply;
use oci_spec::runtime::Hook;
use std::io::Write;
use crate::clone3::dup_above;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// Fds are moved at least this high before they are placed, so that none is
/// overwritten by the placing of another.
const PARKED_FDS: i32 = 1000;

/// Join the cgroups (`cgroup.procs` files open for writing) and place
/// `inherit` at FIRST_INHERITED_FD, FIRST_INHERITED_FD + 1, … without
/// close-on-exec, for CRIU to find them there.
pub(super) fn prepare(cgroups: Vec<OwnedFd>, inherit: Vec<OwnedFd>) -> Result<()> {
    for procs in cgroups {
        // "0" is the writer itself; CRIU and its restored tree are born here.
        std::fs::File::from(procs).write_all(b"0").describe(|| "join the container's cgroup".into())?;
    }
    let parked = inherit
        .iter()
        .map(|fd| dup_above(fd.as_fd(), PARKED_FDS).describe(|| "move an inherited fd".into()))
        .collect::<Result<Vec<_>>>()?;
    for (i, fd) in parked.iter().enumerate() {
        let target = FIRST_INHERITED_FD + i as i32;
        // SAFETY: dup2 onto a number this single-threaded process reserves
        // for CRIU; dup2's copy has no close-on-exec.
        if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
            return Err(std::io::Error::last_os_error()).describe(|| format!("place an inherited fd at {target}"));
        }
    }
    Ok(())
}

/// The runtime's hooks at a restore, with the restored init's `pid` in the
/// state they read (this runner is their only reaper, as for any hook).
pub(super) fn run_hooks(hooks: &[(HookKind, Vec<Hook>)], state: &[u8], pid: i32) -> Result<()> {
    if hooks.is_empty() {
        return Ok(());
    }
    let mut state: serde_json::Value = serde_json::from_slice(state).describe(|| "the hooks' state".into())?;
    state["pid"] = pid.into();
    let state = serde_json::to_vec(&state).describe(|| "the hooks' state".into())?;
    for (kind, list) in hooks {
        crate::hooks::run_encoded(*kind, list, &state, false)?;
    }
    Ok(())
}

/// Tell the runtime what CRIU did: a restore's pid and terminal, or a dump done.
pub(super) fn answer(channel: &mut Channel, outcome: Outcome) -> std::io::Result<()> {
    let Some(pid) = outcome.pid else {
        return channel.send(&InitReply::Ready { warnings: Vec::new(), console: false });
    };
    channel.send(&InitReply::Restored { pid, console: outcome.console.is_some() })?;
    match outcome.console {
        Some(master) => channel.send_fd(master.as_raw_fd()),
        None => Ok(()),
    }
}
