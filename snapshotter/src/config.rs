//! The snapshotter's settings: a TOML file (`--config`), overridden by
//! `--root` and `--address` on the command line.
//!
//! ```toml
//! root = "/var/lib/ferrum-snapshotter"
//! address = "/run/ferrum-snapshotter/ferrum-snapshotter.sock"
//!
//! [socket]
//! mode = 0o660          # permissions of the socket file
//! group = "containerd"  # group (name or number) that may connect
//!
//! [mount]
//! options = ["volatile"]  # added to every overlay mount
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// containerd's CRI and ctr connect as root; 0660 lets a chosen group in too.
const DEFAULT_SOCKET_MODE: u32 = 0o660;

/// Overlay options the snapshotter sets itself: a configured one would fight
/// with them or point the mount elsewhere.
const RESERVED_OPTIONS: [&str; 5] = ["lowerdir", "upperdir", "workdir", "index", "userxattr"];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{path}: socket.mode {mode:#o} is not a permission mode (at most 0o777)")]
    Mode { path: PathBuf, mode: u32 },
    #[error("{path}: mount option {option:?}: {reason}")]
    MountOption {
        path: PathBuf,
        option: String,
        reason: &'static str,
    },
}

#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub root: Option<PathBuf>,
    pub address: Option<PathBuf>,
    #[serde(default)]
    pub socket: Socket,
    #[serde(default)]
    pub mount: MountSection,
}

#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Socket {
    pub mode: Option<u32>,
    pub group: Option<Group>,
}

/// A group by name (looked up when the socket is created) or by id.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Group {
    Id(u32),
    Name(String),
}

#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountSection {
    #[serde(default)]
    pub options: Vec<String>,
}

impl File {
    pub fn load(path: &Path) -> Result<File, Error> {
        let text = fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        File::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<File, Error> {
        let file: File = toml::from_str(text).map_err(|source| Error::Parse {
            path: path.to_owned(),
            source,
        })?;
        if let Some(mode) = file.socket.mode.filter(|m| *m > 0o777) {
            return Err(Error::Mode {
                path: path.to_owned(),
                mode,
            });
        }
        for option in &file.mount.options {
            check_mount_option(option).map_err(|reason| Error::MountOption {
                path: path.to_owned(),
                option: option.clone(),
                reason,
            })?;
        }
        Ok(file)
    }

    pub fn socket_mode(&self) -> u32 {
        self.socket.mode.unwrap_or(DEFAULT_SOCKET_MODE)
    }
}

fn check_mount_option(option: &str) -> Result<(), &'static str> {
    if option.is_empty() {
        return Err("is empty");
    }
    if option.contains(',') {
        return Err("holds a comma: give each option as its own string");
    }
    let name = option.split('=').next().unwrap_or(option);
    if RESERVED_OPTIONS.contains(&name) {
        return Err("is set by the snapshotter itself");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<File, Error> {
        File::parse(Path::new("/etc/s.toml"), text)
    }

    #[test]
    fn reads_every_setting() {
        let file = parse(
            r#"
            root = "/var/lib/s"
            address = "/run/s.sock"
            [socket]
            mode = 0o640
            group = "containerd"
            [mount]
            options = ["volatile", "redirect_dir=on"]
            "#,
        )
        .unwrap();
        assert_eq!(file.root.as_deref(), Some(Path::new("/var/lib/s")));
        assert_eq!(file.address.as_deref(), Some(Path::new("/run/s.sock")));
        assert_eq!(file.socket_mode(), 0o640);
        assert_eq!(file.socket.group, Some(Group::Name("containerd".into())));
        assert_eq!(file.mount.options, ["volatile", "redirect_dir=on"]);

        let numeric = parse("[socket]\ngroup = 998").unwrap();
        assert_eq!(numeric.socket.group, Some(Group::Id(998)));
        assert_eq!(parse("").unwrap().socket_mode(), 0o660);
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../../examples/ferrum-snapshotter.toml");
        let file = parse(text).unwrap();
        assert_eq!(
            file.address.as_deref(),
            Some(Path::new("/run/ferrum-snapshotter/ferrum-snapshotter.sock"))
        );
        assert_eq!(file.socket_mode(), 0o660);
    }

    #[test]
    fn names_what_is_wrong() {
        let err = |text: &str| parse(text).unwrap_err().to_string();
        assert!(err("rot = \"/x\"").contains("unknown field `rot`"));
        assert!(err("[socket]\nmode = 0o1777").contains("socket.mode 0o1777"));
        let e = err("[mount]\noptions = [\"upperdir=/x\"]");
        assert!(
            e.contains("\"upperdir=/x\"") && e.contains("set by the snapshotter"),
            "{e}"
        );
        assert!(err("[mount]\noptions = [\"a,b\"]").contains("comma"));
        assert!(err("root = 3").starts_with("/etc/s.toml: "));
    }
}
