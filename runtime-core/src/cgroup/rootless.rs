//! A rootless container's cgroup (see crate::rootless): made in the
//! hierarchies where the user may (a delegated v2 subtree, a chowned v1
//! directory), done without elsewhere, as runc's rootless mode — and every
//! limit the spec asks for checked against what was made, so that a limit
//! is applied or the container fails naming it, never silently dropped.

use super::{cg_err, is_v2_dir, Cgroup};
use crate::error::{Error, Result};
use oci_spec::runtime::LinuxResources;
use std::io;
use std::path::{Path, PathBuf};

/// cpu.shares of a fresh cgroup: asking for it asks for nothing.
const DEFAULT_SHARES: u64 = 1024;

/// A hierarchy the user may not make the container's cgroup in.
#[derive(Debug)]
pub struct Refused {
    pub dir: PathBuf,
    pub error: io::Error,
}

impl Cgroup {
    /// Create the directories the caller may create. Returns the cgroup made
    /// (possibly none at all: the container then stays in the caller's
    /// cgroups) and the hierarchies refused, with why.
    pub fn create_where_permitted(&self) -> Result<(Cgroup, Vec<Refused>)> {
        let (mut made, mut refused) = (Vec::new(), Vec::new());
        for dir in &self.dirs {
            match (Cgroup { dirs: vec![dir.clone()] }).create() {
                Ok(()) => made.push(dir.clone()),
                Err(Error::Cgroup { source, .. }) if is_denied(&source) => {
                    refused.push(Refused { dir: dir.clone(), error: source })
                }
                Err(e) => return Err(e),
            }
        }
        Ok((Cgroup { dirs: made }, refused))
    }

    /// What of `r` a rootless container is given: no device rules (a user
    /// namespace can neither write devices.* nor attach a device filter; its
    /// device nodes are bound from the host, see init::devices), and no
    /// cpu.shares of the default weight where there is no cpu cgroup to
    /// carry it. Fails naming the first limit whose controller the
    /// container's cgroup lacks.
    pub fn rootless_resources(&self, r: &LinuxResources, refused: &[Refused]) -> Result<LinuxResources> {
        let mut given = r.clone();
        given.set_devices(None);
        if let Some(mut cpu) = r.cpu().clone() {
            if cpu.shares().is_some_and(|s| s == 0 || s == DEFAULT_SHARES) && !self.has_controller("cpu") {
                cpu.set_shares(None);
                given.set_cpu(Some(cpu));
            }
        }
        for (field, controller) in asked(&given) {
            if !self.has_controller(controller) {
                return Err(self.cannot_limit(&field, controller, refused));
            }
        }
        Ok(given)
    }

    /// Whether one of the directories is in a hierarchy with `controller`:
    /// a v1 one named after it (cpu,cpuacct), or a v2 one that has it.
    fn has_controller(&self, controller: &str) -> bool {
        self.dirs.iter().any(|d| controllers_of(d).iter().any(|c| c == v1_name(controller) || c == controller))
    }

    fn cannot_limit(&self, field: &str, controller: &str, refused: &[Refused]) -> Error {
        let what = format!("linux.resources.{field}");
        let refused_here = refused.iter().find(|r| hierarchy_name(&r.dir).split(',').any(|c| c == v1_name(controller)));
        if let Some(r) = refused_here.or(refused.first()) {
            let why = format!("running rootless, the user may not create the container's cgroup here: {}", r.error);
            return cg_err(&r.dir, what)(io::Error::new(r.error.kind(), why));
        }
        let dir = self.dirs.first().cloned().unwrap_or_default();
        let why = format!("running rootless, and no {controller} controller is delegated to the container's cgroup");
        cg_err(&dir, what)(io::Error::new(io::ErrorKind::PermissionDenied, why))
    }
}

fn is_denied(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM | libc::EROFS))
}

/// v2's names for what v1 calls otherwise.
fn v1_name(controller: &str) -> &str {
    match controller {
        "io" => "blkio",
        c => c,
    }
}

/// The v1 hierarchy a directory is in, by its mount point under /sys/fs/cgroup.
fn hierarchy_name(dir: &Path) -> String {
    let under = dir.strip_prefix("/sys/fs/cgroup").unwrap_or(dir);
    under.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned()).unwrap_or_default()
}

fn controllers_of(dir: &Path) -> Vec<String> {
    if is_v2_dir(dir) {
        let list = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
        list.split_whitespace().map(String::from).collect()
    } else {
        hierarchy_name(dir).split(',').map(String::from).collect()
    }
}

/// The limits `r` sets, each with the (v2) controller it needs. Rules that
/// only warn where their controller is missing (network, rdma, unified)
/// keep that behaviour and are not listed.
fn asked(r: &LinuxResources) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    if let Some(m) = r.memory() {
        let fields = [
            ("limit", m.limit().is_some()),
            ("reservation", m.reservation().is_some()),
            ("swap", m.swap().is_some()),
            ("kernelTCP", m.kernel_tcp().is_some()),
            ("swappiness", m.swappiness().is_some()),
            ("disableOOMKiller", m.disable_oom_killer() == Some(true)),
        ];
        out.extend(fields.iter().filter(|(_, set)| *set).map(|(f, _)| (format!("memory.{f}"), "memory")));
    }
    if let Some(c) = r.cpu() {
        let fields = [
            ("shares", c.shares().is_some()),
            ("quota", c.quota().is_some_and(|q| q > 0)),
            ("period", c.period().is_some_and(|p| p > 0)),
            ("burst", c.burst().is_some()),
            ("idle", c.idle().is_some()),
            ("realtimeRuntime", c.realtime_runtime().is_some()),
            ("realtimePeriod", c.realtime_period().is_some()),
        ];
        out.extend(fields.iter().filter(|(_, set)| *set).map(|(f, _)| (format!("cpu.{f}"), "cpu")));
        for (f, v) in [("cpus", c.cpus()), ("mems", c.mems())] {
            if v.as_deref().is_some_and(|v| !v.is_empty()) {
                out.push((format!("cpu.{f}"), "cpuset"));
            }
        }
    }
    if r.pids().as_ref().is_some_and(|p| p.limit() > 0) {
        out.push(("pids.limit".into(), "pids"));
    }
    if let Some(b) = r.block_io() {
        // A weight of 0 is none (as runc reads it; Docker 20.10 sends it).
        let set = b.weight().is_some_and(|w| w != 0)
            || b.leaf_weight().is_some_and(|w| w != 0)
            || [b.weight_device().as_ref().map(Vec::len)].into_iter().flatten().any(|n| n > 0)
            || [b.throttle_read_bps_device(), b.throttle_write_bps_device(), b.throttle_read_iops_device(), b.throttle_write_iops_device()]
                .iter()
                .any(|l| l.as_ref().is_some_and(|l| !l.is_empty()));
        if set {
            out.push(("blockIO".into(), "io"));
        }
    }
    if r.hugepage_limits().as_ref().is_some_and(|l| !l.is_empty()) {
        out.push(("hugepageLimits".into(), "hugetlb"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder};

    fn refused(dir: &str) -> Refused {
        Refused { dir: dir.into(), error: io::Error::from_raw_os_error(libc::EACCES) }
    }

    #[test]
    fn without_a_cgroup_only_the_default_weight_and_device_rules_pass() {
        let none = Cgroup::from_dirs(Vec::new());
        let refused = [refused("/sys/fs/cgroup/cpu,cpuacct/default/t1"), refused("/sys/fs/cgroup/memory/default/t1")];
        // ctr's defaults: cpu.shares 1024 and containerd's device rules.
        let defaults = LinuxResourcesBuilder::default()
            .cpu(LinuxCpuBuilder::default().shares(1024u64).build().unwrap())
            .devices(vec![Default::default()])
            .build()
            .unwrap();
        let given = none.rootless_resources(&defaults, &refused).unwrap();
        assert!(given.devices().is_none() && given.cpu().as_ref().unwrap().shares().is_none());

        let memory = LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().limit(64i64 << 20).build().unwrap())
            .build()
            .unwrap();
        let err = none.rootless_resources(&memory, &refused).unwrap_err().to_string();
        assert!(
            err.contains("/sys/fs/cgroup/memory/default/t1")
                && err.contains("linux.resources.memory.limit")
                && err.contains("rootless"),
            "{err}"
        );
        let shares = LinuxResourcesBuilder::default()
            .cpu(LinuxCpuBuilder::default().shares(512u64).build().unwrap())
            .build()
            .unwrap();
        let err = none.rootless_resources(&shares, &refused).unwrap_err().to_string();
        assert!(err.contains("cpu,cpuacct") && err.contains("linux.resources.cpu.shares"), "{err}");
        let pids = LinuxResourcesBuilder::default().pids(LinuxPidsBuilder::default().limit(10).build().unwrap()).build().unwrap();
        let err = none.rootless_resources(&pids, &[]).unwrap_err().to_string();
        assert!(err.contains("linux.resources.pids.limit") && err.contains("no pids controller"), "{err}");
    }

    #[test]
    fn a_v1_directory_has_the_controllers_its_hierarchy_is_named_after() {
        let cg = Cgroup::from_dirs(vec!["/sys/fs/cgroup/cpu,cpuacct/u/t1".into(), "/sys/fs/cgroup/blkio/u/t1".into()]);
        assert!(cg.has_controller("cpu") && cg.has_controller("io"));
        assert!(!cg.has_controller("memory") && !cg.has_controller("cpuset"));
    }
}
