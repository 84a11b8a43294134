//! The commands that only look: state, list, ps, features, spec. Their
//! output is what callers parse (go-runc, Podman), in runc's shapes.

use crate::args::{parse, Spec};
use crate::{one_id, Global};
use anyhow::{bail, Context, Result};
use runtime_core::Container;
use serde::Serialize;
use std::collections::HashMap;

/// The runtime-spec's state, with runc's field order and extras.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OciState {
    oci_version: String,
    id: String,
    pid: i32,
    status: &'static str,
    bundle: String,
    rootfs: String,
    created: String,
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    annotations: HashMap<String, String>,
    owner: String,
}

fn oci_state(c: &Container, owner: &str) -> OciState {
    let s = c.state();
    let status = c.status();
    let spec = runtime_core::load_spec(&s.bundle).ok();
    OciState {
        oci_version: spec.as_ref().map(|s| s.version().clone()).unwrap_or_default(),
        id: s.id.clone(),
        // runc: a stopped container has no pid.
        pid: if status == "stopped" { 0 } else { s.pid },
        status,
        bundle: s.bundle.display().to_string(),
        rootfs: s.rootfs.display().to_string(),
        created: crate::time::started_at(s.pid_start).unwrap_or_default(),
        annotations: spec.and_then(|s| s.annotations().clone()).unwrap_or_default(),
        owner: owner.into(),
    }
}

/// `state ID`: indented JSON, no trailing newline (as runc).
pub fn state(g: &mut Global, args: &[String]) -> Result<()> {
    let a = parse(args, &Spec { bools: &[], values: &[] })?;
    let c = g.load(one_id("state", &a.positional)?)?;
    print!("{}", serde_json::to_string_pretty(&oci_state(&c, ""))?);
    Ok(())
}

const LIST: Spec = Spec { bools: &[&["quiet", "q"]], values: &[&["format", "f"]] };

/// `list`: every container under --root, as a table or JSON (`null` when none).
pub fn list(g: &mut Global, args: &[String]) -> Result<()> {
    let a = parse(args, &LIST)?;
    let mut ids: Vec<String> = std::fs::read_dir(&g.root)
        .map(|d| d.flatten().filter(|e| e.path().join("state.json").exists()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    ids.sort();
    let states: Vec<OciState> =
        ids.iter().filter_map(|id| Container::load(&g.root, id).ok()).map(|c| oci_state(&c, "root")).collect();
    if a.has("quiet") {
        states.iter().for_each(|s| println!("{}", s.id));
        return Ok(());
    }
    match a.value("format").unwrap_or("table") {
        "json" if states.is_empty() => println!("null"),
        "json" => println!("{}", serde_json::to_string(&states)?),
        "table" => {
            println!("{:<12}{:<12}{:<12}{:<24}{:<33}OWNER", "ID", "PID", "STATUS", "BUNDLE", "CREATED");
            for s in &states {
                println!("{:<12}{:<12}{:<12}{:<24}{:<33}{}", s.id, s.pid, s.status, s.bundle, s.created, s.owner);
            }
        }
        other => bail!("invalid format option: {other}"),
    }
    Ok(())
}

const PS: Spec = Spec { bools: &[], values: &[&["format", "f"]] };

/// `ps ID`: the container's pids as JSON (`null` when none), or `ps -ef`'s
/// lines for them.
pub fn ps(g: &mut Global, args: &[String]) -> Result<()> {
    let a = parse(args, &PS)?;
    let Some((id, ps_args)) = a.positional.split_first() else { bail!("ps: \"ps\" requires a minimum of 1 argument(s)") };
    let c = g.load(id)?;
    let pids = c.pids();
    match a.value("format").unwrap_or("table") {
        "json" if pids.is_empty() => println!("null"),
        "json" => println!("{}", serde_json::to_string(&pids)?),
        "table" => {
            let args: Vec<&str> = if ps_args.is_empty() { vec!["-ef"] } else { ps_args.iter().map(String::as_str).collect() };
            let out = std::process::Command::new("ps").args(&args).output().context("run ps")?;
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or_default();
            let pid_column = header.split_whitespace().position(|h| h == "PID").context("ps printed no PID column")?;
            println!("{header}");
            for line in lines {
                let pid = line.split_whitespace().nth(pid_column).and_then(|p| p.parse::<i32>().ok());
                if pid.is_some_and(|p| pids.contains(&p)) {
                    println!("{line}");
                }
            }
        }
        other => bail!("invalid format option: {other}"),
    }
    Ok(())
}

/// `features`: what this runtime supports (runtime-spec's features document).
pub fn features(args: &[String]) -> Result<()> {
    parse(args, &Spec { bools: &[], values: &[] })?;
    println!("{}", serde_json::to_string_pretty(&runtime_core::features())?);
    Ok(())
}

const SPEC: Spec = Spec { bools: &[&["rootless"]], values: &[&["bundle", "b"]] };

/// `spec`: write a starting config.json into the bundle (never over one).
pub fn spec(args: &[String]) -> Result<()> {
    let a = parse(args, &SPEC)?;
    let dir = std::path::PathBuf::from(a.value("bundle").unwrap_or("."));
    let file = dir.join("config.json");
    if file.exists() {
        bail!("File {} exists. Remove it first", file.display());
    }
    let spec = if a.has("rootless") {
        oci_spec::runtime::Spec::rootless(nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw())
    } else {
        oci_spec::runtime::Spec::default()
    };
    let text = serde_json::to_string_pretty(&spec)?;
    std::fs::write(&file, text).with_context(|| format!("write {}", file.display()))
}
