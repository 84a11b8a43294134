//! runc's `--log` and `--log-format`: where callers read our errors. go-runc
//! (containerd's runc shims) passes `--log <bundle>/log.json --log-format
//! json` and reports the last `"level":"error"` line's `msg`; conmon and
//! Docker read stderr too. An error goes to both, as runc's does.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

pub struct Logger {
    file: Option<File>,
    format: Format,
}

impl Logger {
    pub fn stderr() -> Logger {
        Logger { file: None, format: Format::Text }
    }

    pub fn open(path: Option<&str>, format: Format) -> std::io::Result<Logger> {
        let file = match path {
            Some(p) if !p.is_empty() => Some(OpenOptions::new().create(true).append(true).open(p)?),
            _ => None,
        };
        Ok(Logger { file, format })
    }

    /// Into the log file if there is one, and plainly on stderr, where
    /// conmon reads it and Podman shows it (runc writes a logrus line there
    /// when it has no log file; Podman gives runc a log file, but not us).
    pub fn error(&mut self, msg: &str) {
        if self.file.is_some() {
            self.write("error", msg);
        }
        eprintln!("{msg}");
    }

    /// Only into a log file: during create and exec our stderr is the
    /// container's, and a warning there would land in its logs.
    pub fn warn(&mut self, msg: &str) {
        if self.file.is_some() {
            self.write("warning", msg);
        }
    }

    fn write(&mut self, level: &str, msg: &str) {
        let line = match self.format {
            Format::Json => serde_json::json!({ "level": level, "msg": msg, "time": now_rfc3339() }).to_string(),
            Format::Text => format!("time=\"{}\" level={level} msg={msg:?}", now_rfc3339()),
        };
        match &mut self.file {
            Some(f) => {
                let _ = writeln!(f, "{line}");
            }
            None => eprintln!("{line}"),
        }
    }
}

/// Now, as runc's logrus writes it (RFC 3339, whole seconds, UTC).
fn now_rfc3339() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    crate::time::rfc3339(secs, None)
}

