//! The command line containerd gives shims, in Go's flag syntax
//! (`-namespace ns`, `--id=x`, boolean `-debug`), then an action.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Start,
    Delete,
    Serve,
    Version,
    /// `-info`: RuntimeInfo for containerd 2.x's introspection.
    Info,
}

#[derive(Debug, Clone)]
pub struct Flags {
    pub namespace: String,
    pub id: String,
    /// containerd's gRPC address.
    pub address: String,
    pub publish_binary: String,
    pub bundle: Option<PathBuf>,
    pub debug: bool,
    pub action: Action,
}

impl Flags {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Flags> {
        let mut f = Flags {
            namespace: String::new(),
            id: String::new(),
            address: String::new(),
            publish_binary: String::new(),
            bundle: None,
            debug: false,
            action: Action::Serve,
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                f.action = match arg.as_str() {
                    "start" => Action::Start,
                    "delete" => Action::Delete,
                    other => bail!("unknown action {other:?} (want start or delete)"),
                };
                continue;
            };
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            match name {
                "debug" => f.debug = inline.is_none_or(|v| v != "false"),
                "v" | "version" => f.action = Action::Version,
                "info" => f.action = Action::Info,
                "namespace" | "id" | "address" | "publish-binary" | "bundle" | "socket" => {
                    let value = match inline {
                        Some(v) => v,
                        None => args.next().with_context(|| format!("flag -{name} needs a value"))?,
                    };
                    match name {
                        "namespace" => f.namespace = value,
                        "id" => f.id = value,
                        "address" => f.address = value,
                        "publish-binary" => f.publish_binary = value,
                        "bundle" => f.bundle = Some(value.into()),
                        // Older containerds pass -socket; the address file is what counts.
                        _ => {}
                    }
                }
                other => bail!("unknown flag -{other}"),
            }
        }
        if !matches!(f.action, Action::Version | Action::Info) {
            if f.namespace.is_empty() {
                bail!("-namespace is required");
            }
            if f.id.is_empty() {
                bail!("-id is required");
            }
        }
        Ok(f)
    }

    /// The flags the daemon is started with: the same, minus the action.
    pub fn daemon_args(&self) -> Vec<String> {
        let mut a = vec![
            "-namespace".into(),
            self.namespace.clone(),
            "-id".into(),
            self.id.clone(),
            "-address".into(),
            self.address.clone(),
            "-publish-binary".into(),
            self.publish_binary.clone(),
        ];
        if self.debug {
            a.push("-debug".into());
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Flags> {
        Flags::parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn containerd_16_start_line() {
        let f = parse("-namespace default -address /run/c.sock -publish-binary /usr/bin/containerd -id c1 start")
            .unwrap();
        assert_eq!((f.namespace.as_str(), f.id.as_str(), f.action), ("default", "c1", Action::Start));
        assert_eq!(f.address, "/run/c.sock");
    }

    #[test]
    fn delete_with_bundle_and_go_style_flags() {
        let f = parse("--namespace=k8s.io -id=c2 -bundle /b -debug delete").unwrap();
        assert_eq!(f.bundle.as_deref(), Some(std::path::Path::new("/b")));
        assert!(f.debug);
        assert_eq!(f.action, Action::Delete);
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        assert!(parse("-id x").unwrap_err().to_string().contains("-namespace"));
        assert!(parse("-namespace n -id x frobnicate").unwrap_err().to_string().contains("frobnicate"));
        assert!(parse("-namespace n -id").unwrap_err().to_string().contains("needs a value"));
        assert_eq!(parse("-v").unwrap().action, Action::Version);
        assert_eq!(parse("-info").unwrap().action, Action::Info);
    }
}
