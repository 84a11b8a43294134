//! runc's command line (urfave/cli's syntax): global flags, a command, its
//! flags, then positional arguments. Flags are `--name value`, `--name=value`
//! or a one-letter alias (`-d`); booleans take no value (or `=true`/`=false`).
//! Flags end at the first positional argument or `--`: `exec ID sh -c …`
//! passes `-c` on to the program.

use anyhow::{bail, Result};

/// One command's flags, declared so that a value is never taken for a flag.
pub struct Spec {
    /// Flags without a value, each with its aliases (`&["detach", "d"]`).
    pub bools: &'static [&'static [&'static str]],
    /// Flags with a value; repeatable ones collect every value.
    pub values: &'static [&'static [&'static str]],
}

#[derive(Debug, Default)]
pub struct Parsed {
    flags: Vec<(String, Option<String>)>,
    pub positional: Vec<String>,
}

impl Parsed {
    /// Whether a boolean flag (by its first name) was given and not `=false`.
    pub fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(n, v)| n == name && v.as_deref().is_none_or(|v| v != "false"))
    }

    /// The last value of a value flag (by its first name).
    pub fn value(&self, name: &str) -> Option<&str> {
        self.flags.iter().rev().find(|(n, _)| n == name).and_then(|(_, v)| v.as_deref())
    }

    /// Every value of a repeatable flag, in order.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.flags.iter().filter(|(n, _)| n == name).filter_map(|(_, v)| v.as_deref()).collect()
    }
}

/// Parse `args` by `spec`; flags are stored under their first name.
pub fn parse(args: &[String], spec: &Spec) -> Result<Parsed> {
    let mut out = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg == "--" {
            out.positional.extend(args[i + 1..].iter().cloned());
            break;
        }
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')).filter(|f| !f.is_empty()) else {
            out.positional.extend(args[i..].iter().cloned());
            break;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        if let Some(names) = spec.bools.iter().find(|names| names.contains(&name)) {
            out.flags.push((names[0].to_string(), inline));
        } else if let Some(names) = spec.values.iter().find(|names| names.contains(&name)) {
            let value = match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    match args.get(i) {
                        Some(v) => v.clone(),
                        None => bail!("flag needs an argument: -{}{name}", if name.len() > 1 { "-" } else { "" }),
                    }
                }
            };
            out.flags.push((names[0].to_string(), Some(value)));
        } else {
            bail!("flag provided but not defined: -{}{name}", if name.len() > 1 { "-" } else { "" });
        }
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: Spec = Spec { bools: &[&["detach", "d"], &["tty", "t"]], values: &[&["pid-file"], &["env", "e"]] };

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn flags_stop_at_the_first_positional() {
        let p = parse(&args(&["-d", "--pid-file=/p", "-e", "A=1", "--env", "B=2", "c1", "sh", "-c", "x"]), &SPEC).unwrap();
        assert!(p.has("detach") && !p.has("tty"));
        assert_eq!(p.value("pid-file"), Some("/p"));
        assert_eq!(p.values("env"), ["A=1", "B=2"]);
        assert_eq!(p.positional, ["c1", "sh", "-c", "x"]);
        let p = parse(&args(&["--tty=false", "--", "-x"]), &SPEC).unwrap();
        assert!(!p.has("tty"));
        assert_eq!(p.positional, ["-x"]);
    }

    #[test]
    fn unknown_and_valueless_flags_are_named_as_runc_names_them() {
        let e = parse(&args(&["--bogus", "c1"]), &SPEC).unwrap_err().to_string();
        assert_eq!(e, "flag provided but not defined: --bogus");
        let e = parse(&args(&["--pid-file"]), &SPEC).unwrap_err().to_string();
        assert_eq!(e, "flag needs an argument: --pid-file");
    }
}
