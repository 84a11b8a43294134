//! The container's state on disk: `<root>/<id>/state.json`, written atomically,
//! so that a restarted shim or `shim delete` finds the container again.

use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Init is set up and waits for start.
    Created,
    /// The user process runs (or ran: exits are observed by the reaper, not here).
    Running,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Running => "running",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub pid: i32,
    /// Start time of `pid` (see proc_stat), guarding against pid reuse.
    pub pid_start: u64,
    pub status: Status,
    /// The container's cgroup directories, one per hierarchy.
    pub cgroups: Vec<PathBuf>,
    /// The systemd unit holding them, with the systemd cgroup driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systemd_unit: Option<String>,
}

pub(crate) fn state_file(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

impl State {
    pub(crate) fn save(&self, dir: &Path) -> io::Result<()> {
        let tmp = dir.join(".state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self)?)?;
        std::fs::rename(&tmp, state_file(dir))
    }

    pub(crate) fn load(dir: &Path) -> io::Result<State> {
        let bytes = std::fs::read(state_file(dir))?;
        serde_json::from_slice(&bytes).map_err(io::Error::from)
    }
}
