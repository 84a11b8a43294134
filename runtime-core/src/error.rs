use std::path::PathBuf;

/// Errors of the runtime. Each names what failed and on what, so the message
/// that reaches `ctr` or the CRI caller is enough to act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bundle {bundle}: invalid config.json: {reason}")]
    InvalidSpec { bundle: PathBuf, reason: String },

    #[error("container {id}: {what}: {source}")]
    Sys {
        id: String,
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// The container's init reported a failure while preparing the container
    /// (mounts, credentials, executable lookup...). The text is init's own.
    #[error("container {id}: {message}")]
    Init { id: String, message: String },

    /// Checkpoint or restore: refused, or CRIU failed (its own words).
    #[error("container {id}: {message}")]
    Criu { id: String, message: String },

    #[error("container {id} does not exist")]
    NotFound { id: String },

    #[error("container {id} already exists")]
    AlreadyExists { id: String },

    #[error("container {id} is {status}, {action} needs it {needed}")]
    WrongState {
        id: String,
        status: String,
        action: &'static str,
        needed: &'static str,
    },

    /// The systemd cgroup driver: systemd refused or could not be reached.
    #[error("systemd unit {unit}: {message}")]
    Systemd { unit: String, message: String },

    #[error("cgroup {path}: {what}: {source}")]
    Cgroup {
        path: PathBuf,
        what: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach the container id and a description to an I/O-ish error.
pub(crate) trait Context<T> {
    fn ctx(self, id: &str, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<std::io::Error>> Context<T> for std::result::Result<T, E> {
    fn ctx(self, id: &str, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Sys {
            id: id.to_string(),
            what: what(),
            source: e.into(),
        })
    }
}
