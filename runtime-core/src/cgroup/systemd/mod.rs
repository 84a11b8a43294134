//! The systemd cgroup driver (runc's `SystemdCgroup`): the container's cgroup
//! is a transient unit systemd makes, so systemd — which owns the cgroup tree
//! on a systemd host — knows of it and never moves or trims it.
//!
//! `cgroupsPath` is `slice:prefix:name`, as runc reads it: the container runs
//! in the scope `prefix-name.scope` (`name.scope` without a prefix) inside
//! `slice` (`system.slice` when empty), or in the slice `name` itself when
//! that ends in `.slice`. The scope starts with the container's init in it,
//! `Delegate=yes` and the limits systemd manages as properties; its cgroup is
//! then whatever systemd says it is (systemd may itself run below the root),
//! and from there on it is a cgroupfs cgroup like any other: the directories of
//! hierarchies systemd does not manage (cpuset, freezer, hugetlb... on v1)
//! are made next to systemd's, and every resource is written to the files.
//!
//! systemd is reached on its private socket, which serves root without a
//! D-Bus daemon; each operation is one short connection, so the shim holds
//! nothing open between calls and outlives a restart of systemd.

mod client;
mod dbus;
mod properties;

use super::Cgroup;
use crate::error::{Error, Result};
use client::Systemd;
use dbus::Value;
use oci_spec::runtime::LinuxResources;
use properties::prop;
use std::path::Path;
use std::sync::OnceLock;

/// systemd's private socket (root only, no D-Bus daemon needed).
const SOCKET: &str = "/run/systemd/private";

/// The unit a container's `cgroupsPath` names.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UnitPath {
    /// The slice the scope goes in.
    pub slice: String,
    /// `prefix-name.scope`, or a slice's own name.
    pub unit: String,
}

impl UnitPath {
    /// Parse `slice:prefix:name`; no path at all means `system.slice:ferrum:<id>`
    /// (runc's own default, with our name).
    pub fn parse(cgroups_path: Option<&Path>, id: &str) -> std::result::Result<UnitPath, String> {
        let path = cgroups_path
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (slice, prefix, name) = match path.split(':').collect::<Vec<_>>()[..] {
            [""] => ("", "ferrum", id),
            [slice, prefix, name] => (slice, prefix, name),
            _ => {
                return Err(format!(
                    "linux.cgroupsPath {path:?}: the systemd cgroup driver expects \"slice:prefix:name\" \
                     (e.g. \"system.slice:ferrum:{id}\")"
                ))
            }
        };
        let slice = if slice.is_empty() {
            "system.slice"
        } else {
            slice
        };
        if !slice.ends_with(".slice") || slice.contains('/') {
            return Err(format!("linux.cgroupsPath {path:?}: {slice:?} is not a systemd slice name (like \"system.slice\")"));
        }
        if name.is_empty() || name.contains('/') {
            return Err(format!(
                "linux.cgroupsPath {path:?}: the unit name {name:?} is empty or has a '/'"
            ));
        }
        let unit = match (name.ends_with(".slice"), prefix) {
            (true, _) => name.to_string(),
            (false, "") => format!("{name}.scope"),
            (false, prefix) => format!("{prefix}-{name}.scope"),
        };
        Ok(UnitPath {
            slice: slice.to_string(),
            unit,
        })
    }

    fn is_slice(&self) -> bool {
        self.unit.ends_with(".slice")
    }
}

fn connect(unit: &str) -> Result<Systemd> {
    Systemd::connect(Path::new(SOCKET)).map_err(|e| Error::Systemd {
        unit: unit.into(),
        message: format!("cannot reach systemd (is it the init of this host?): {e}"),
    })
}

fn failed(unit: &str) -> impl FnOnce(client::Error) -> Error + '_ {
    move |e| {
        // The client's message names the unit too: once is enough.
        let text = e.to_string();
        let message = text
            .strip_prefix(&format!("systemd unit {unit}: "))
            .unwrap_or(&text)
            .to_string();
        Error::Systemd {
            unit: unit.into(),
            message,
        }
    }
}

/// Start the container's unit with `pid` in it; its cgroup, and what systemd
/// could not be told about `resources`.
pub(crate) fn start(
    path: &UnitPath,
    pid: i32,
    resources: Option<&LinuxResources>,
    id: &str,
) -> Result<(Cgroup, Vec<String>)> {
    let unit = path.unit.as_str();
    let mut systemd = connect(unit)?;
    let version = version(&mut systemd);
    let mut props = vec![
        prop("Description", Value::Str(format!("ferrum container {id}"))),
        // Not ordered after (or stopped with) anything: a container is not a service.
        prop("DefaultDependencies", Value::Bool(false)),
        // A unit that failed to start goes too, or its name stays taken.
        prop("CollectMode", Value::Str("inactive-or-failed".into())),
        prop("MemoryAccounting", Value::Bool(true)),
        prop("CPUAccounting", Value::Bool(true)),
        prop("TasksAccounting", Value::Bool(true)),
        prop(io_accounting(), Value::Bool(true)),
    ];
    if !path.is_slice() {
        // A slice takes its parent from its name and cannot hold processes
        // itself: the init joins its cgroup through cgroupfs below.
        props.push(prop("Slice", Value::Str(path.slice.clone())));
        props.push(prop("Delegate", Value::Bool(true)));
        props.push(prop(
            "PIDs",
            Value::Array("u".into(), vec![Value::U32(pid as u32)]),
        ));
    }
    let (limits, mut warnings) = limits(resources);
    props.extend(limits);
    properties::for_version(&mut props, version, &mut warnings);
    systemd
        .start_transient_unit(unit, props)
        .map_err(failed(unit))?;
    let cgroup = systemd
        .control_group(unit)
        .map_err(failed(unit))
        .and_then(|group| {
            if group.is_empty() {
                return Err(Error::Systemd {
                    unit: unit.into(),
                    message: "systemd gave the unit no cgroup".into(),
                });
            }
            Cgroup::resolve(Some(Path::new(&group)), id)
        });
    match cgroup {
        Ok(cgroup) => Ok((cgroup, warnings)),
        Err(e) => {
            let _ = systemd.stop_unit(unit);
            Err(e)
        }
    }
}

/// Tell systemd the new limits (Task.Update); the caller writes the files.
pub(crate) fn update(unit: &str, resources: &LinuxResources) -> Result<Vec<String>> {
    let mut systemd = connect(unit)?;
    let (mut props, mut warnings) = limits(Some(resources));
    properties::for_version(&mut props, version(&mut systemd), &mut warnings);
    if let Some(i) = props.iter().position(|(name, _)| name == "DeviceAllow") {
        // systemd adds DeviceAllow entries to the unit's list; an empty list
        // first clears it, so the new rules replace the old.
        props.insert(
            i,
            prop("DeviceAllow", Value::Array("(ss)".into(), Vec::new())),
        );
    }
    systemd
        .set_unit_properties(unit, true, props)
        .map_err(failed(unit))?;
    Ok(warnings)
}

/// Stop the unit (already gone is fine: systemd drops an empty scope itself).
pub(crate) fn stop(unit: &str) -> Result<()> {
    connect(unit)?.stop_unit(unit).map_err(failed(unit))
}

/// systemd's version, asked once per process (as runc does): it only
/// changes when systemd is upgraded and re-executed.
fn version(systemd: &mut Systemd) -> Option<u32> {
    static VERSION: OnceLock<Option<u32>> = OnceLock::new();
    *VERSION.get_or_init(|| systemd.version())
}

fn limits(resources: Option<&LinuxResources>) -> (Vec<properties::Property>, Vec<String>) {
    let Some(r) = resources else {
        return Default::default();
    };
    // Only the device rules need it; without it they fall back to "char-*".
    let proc_devices = crate::procfs::Global::open().and_then(|g| g.read("devices")).unwrap_or_default();
    properties::from_resources(r, super::is_pure_v2(), &proc_devices)
}

/// systemd's name for block I/O accounting on this host's cgroup version.
fn io_accounting() -> &'static str {
    if super::is_pure_v2() {
        "IOAccounting"
    } else {
        "BlockIOAccounting"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(path: &str) -> std::result::Result<UnitPath, String> {
        UnitPath::parse(Some(Path::new(path)), "c1")
    }

    fn unit(slice: &str, unit: &str) -> UnitPath {
        UnitPath {
            slice: slice.into(),
            unit: unit.into(),
        }
    }

    #[test]
    fn cgroups_paths_as_runc_reads_them() {
        assert_eq!(
            parse("system.slice:docker:abc"),
            Ok(unit("system.slice", "docker-abc.scope"))
        );
        assert_eq!(
            parse("kubepods-besteffort-pod1.slice:cri-containerd:abc"),
            Ok(unit(
                "kubepods-besteffort-pod1.slice",
                "cri-containerd-abc.scope"
            ))
        );
        assert_eq!(
            parse(":ferrum:abc"),
            Ok(unit("system.slice", "ferrum-abc.scope"))
        );
        assert_eq!(
            parse("system.slice::abc"),
            Ok(unit("system.slice", "abc.scope"))
        );
        assert_eq!(
            parse("system.slice:x:my-app.slice"),
            Ok(unit("system.slice", "my-app.slice"))
        );
        assert_eq!(
            UnitPath::parse(None, "c1"),
            Ok(unit("system.slice", "ferrum-c1.scope"))
        );
    }

    #[test]
    fn bad_paths_are_named() {
        for (path, says) in [
            ("/default/c1", "slice:prefix:name"),
            ("a:b", "slice:prefix:name"),
            ("system:ferrum:c1", "not a systemd slice name"),
            ("a/b.slice:ferrum:c1", "not a systemd slice name"),
            ("system.slice:ferrum:", "empty"),
        ] {
            let e = parse(path).unwrap_err();
            assert!(e.contains(says) && e.contains(path), "{path}: {e}");
        }
    }
}
