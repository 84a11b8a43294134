//! `exec`: a new process in a running container, described by `--process`
//! (a runtime-spec Process, as go-runc and conmon send it) or by the
//! arguments and runc's flags on top of the container's own process.

use crate::args::{parse, Parsed, Spec};
use crate::lifecycle::{own_stdio, wait_exit, write_pid_file};
use crate::{console, Global};
use anyhow::{bail, Context, Result};
use oci_spec::runtime::{Capability, Process, User};
use std::collections::HashSet;

const EXEC: Spec = Spec {
    bools: &[&["detach", "d"], &["tty", "t"], &["no-new-privs"]],
    values: &[
        &["process", "p"],
        &["console-socket"],
        &["pid-file"],
        &["cwd"],
        &["env", "e"],
        &["user", "u"],
        &["cap", "c"],
        &["apparmor"],
        &["process-label"],
        &["preserve-fds"],
    ],
};

/// runc's status for an exec that could not start (as opposed to the
/// process's own exit status in the foreground).
const EXEC_FAILED: i32 = 255;

pub fn exec(g: &mut Global, args: &[String]) -> Result<i32> {
    match exec_inner(g, args) {
        Ok(code) => Ok(code),
        Err(e) => {
            g.log.error(&format!("exec failed: {e:#}"));
            Ok(EXEC_FAILED)
        }
    }
}

fn exec_inner(g: &mut Global, args: &[String]) -> Result<i32> {
    let a = parse(args, &EXEC)?;
    let Some((id, argv)) = a.positional.split_first() else { bail!("exec: \"exec\" requires a minimum of 1 argument(s)") };
    let extra = crate::fds::extra(a.value("preserve-fds"), false)?;
    let c = g.load(id)?;
    if c.status() != "running" {
        bail!("cannot exec in a {} container", c.status());
    }
    let mut process: Process = match a.value("process") {
        Some(file) => {
            let text = std::fs::read(file).with_context(|| format!("read {file}"))?;
            serde_json::from_slice(&text).with_context(|| format!("decode process {file}"))?
        }
        None => {
            let spec = runtime_core::load_spec(&c.state().bundle)?;
            from_flags(spec.process().clone().unwrap_or_default(), argv, &a)?
        }
    };
    if process.cwd().as_os_str().is_empty() {
        bail!("Cwd property must not be empty");
    }
    let detach = a.has("detach");
    let terminal = process.terminal().unwrap_or(false);
    // In the foreground with a terminal and no console socket, ours is the
    // process's, as with runc: its pty is born with our size.
    let attach = terminal && !detach && a.value("console-socket").is_none();
    match (terminal, a.value("console-socket")) {
        (true, None) if detach => bail!("cannot allocate tty if runc will detach without setting console socket"),
        (false, Some(_)) => bail!("cannot use console socket if runc will not detach or allocate tty"),
        _ => {}
    }
    if let Some(size) = console::our_size().filter(|_| attach) {
        let b = oci_spec::runtime::BoxBuilder::default().height(size.ws_row).width(size.ws_col).build()?;
        process.set_console_size(Some(b));
    }
    let mut started = c.exec(&process, runtime_core::Stdio { extra: extra.fds, ..own_stdio()? })?;
    if let (Some(master), Some(socket)) = (&started.console, a.value("console-socket")) {
        console::send_master(socket, master)?;
    }
    if let Some(file) = a.value("pid-file") {
        write_pid_file(std::path::Path::new(file), started.pid)?;
    }
    if detach {
        return Ok(0);
    }
    if let Some(master) = started.console.take().filter(|_| attach) {
        console::attach(master, || Ok(()))?;
    }
    wait_exit(started.pid)
}

/// runc's `exec ID ARGS…`: the container's process with these arguments,
/// and --env, --cwd, --user, --cap, --tty, --no-new-privs, --apparmor,
/// --process-label on top.
fn from_flags(mut p: Process, argv: &[String], a: &Parsed) -> Result<Process> {
    if argv.is_empty() {
        bail!("exec: \"exec\" requires a minimum of 2 argument(s)");
    }
    p.set_args(Some(argv.to_vec()));
    p.set_terminal(Some(a.has("tty")));
    let mut env = p.env().clone().unwrap_or_default();
    for e in a.values("env") {
        let key = e.split('=').next().unwrap_or(e);
        env.retain(|old| old.split('=').next() != Some(key));
        env.push(e.to_string());
    }
    p.set_env(Some(env));
    if let Some(cwd) = a.value("cwd") {
        p.set_cwd(cwd.into());
    }
    if let Some(user) = a.value("user") {
        p.set_user(parse_user(user)?);
    }
    if a.has("no-new-privs") {
        p.set_no_new_privileges(Some(true));
    }
    if let Some(profile) = a.value("apparmor") {
        p.set_apparmor_profile(Some(profile.into()));
    }
    if let Some(label) = a.value("process-label") {
        p.set_selinux_label(Some(label.into()));
    }
    let added: Vec<Capability> = a
        .values("cap")
        .iter()
        .map(|c| serde_json::from_value::<Capability>(c.to_string().into()).map_err(|_| anyhow::anyhow!("unknown capability {c:?}")))
        .collect::<Result<_>>()?;
    if !added.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        let with = |set: Option<HashSet<Capability>>| Some(set.unwrap_or_default().into_iter().chain(added.iter().copied()).collect());
        caps.set_bounding(with(caps.bounding().clone()));
        caps.set_effective(with(caps.effective().clone()));
        caps.set_permitted(with(caps.permitted().clone()));
        caps.set_ambient(with(caps.ambient().clone()));
        p.set_capabilities(Some(caps));
    }
    Ok(p)
}

/// `UID[:GID]`, numeric as runc requires.
fn parse_user(s: &str) -> Result<User> {
    let (uid, gid) = s.split_once(':').unwrap_or((s, "0"));
    let number = |v: &str| v.parse::<u32>().with_context(|| format!("parsing {s:?} as uid:gid"));
    let mut user = User::default();
    user.set_uid(number(uid)?);
    user.set_gid(number(gid)?);
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_go_on_top_of_the_containers_process() {
        let args: Vec<String> = ["-e", "A=2", "--cwd", "/tmp", "-u", "7:8", "--cap", "CAP_NET_ADMIN", "c1", "sh", "-c", "x"]
            .iter()
            .map(|a| a.to_string())
            .collect();
        let a = parse(&args, &EXEC).unwrap();
        let mut base = Process::default();
        base.set_env(Some(vec!["A=1".into(), "B=1".into()]));
        let p = from_flags(base, &a.positional[1..], &a).unwrap();
        assert_eq!(p.args().as_deref().unwrap(), ["sh", "-c", "x"]);
        assert_eq!(p.env().as_deref().unwrap(), ["B=1", "A=2"]);
        assert_eq!(p.cwd().to_str(), Some("/tmp"));
        assert_eq!((p.user().uid(), p.user().gid()), (7, 8));
        assert!(p.capabilities().as_ref().unwrap().ambient().as_ref().unwrap().contains(&Capability::NetAdmin));
        assert!(parse_user("root").is_err());
    }
}
