//! linux.resources written to the container's cgroup, v1 or v2, at create and
//! on update. Only fields the spec sets are written; a value the kernel refuses
//! fails with the file and the value named.
//!
//! Every field of the spec is handled; where the host's cgroup version has no
//! equivalent (v1-only knobs on v2, kernel memory limits the kernel dropped)
//! it is a warning, as runc, and never silently a different limit. blockIO,
//! hugepageLimits and `unified` have files of their own, so does the v2 device
//! filter (device_filter.rs).

use super::{cg_err, Cgroup};
use crate::error::{Error, Result};
use oci_spec::runtime::{LinuxMemory, LinuxNetwork, LinuxRdma, LinuxResources};
use std::collections::HashMap;
use std::io;
use std::path::Path;

/// What runc allows every container besides the spec's rules: mknod of any
/// node, the standard devices, ptys and the tun device.
pub(super) const RUNC_ALLOWED_DEVICES: [&str; 11] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:8 rwm",
    "c 1:7 rwm",
    "c 5:0 rwm",
    "c 1:5 rwm",
    "c 1:9 rwm",
    "c 136:* rwm",
    "c 5:2 rwm",
    "c 10:200 rwm",
];

pub(super) fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let fail = cg_err(dir, format!("set {file} to {value:?}"));
    // File names are partly built from the spec (unified keys, page sizes):
    // whatever slipped through their checks must still not leave the cgroup.
    if file.contains('/') || file == ".." {
        return Err(fail(io::Error::new(io::ErrorKind::InvalidInput, "not a file name of the cgroup")));
    }
    std::fs::write(dir.join(file), value).map_err(fail)
}

/// v1 refuses (EBUSY) a memory limit below what the cgroup's processes use
/// already (at create, init's own pages; limits follow init in): say how much.
fn below_usage(e: Error, dir: &Path) -> Error {
    match e {
        Error::Cgroup { path, what, source } if source.raw_os_error() == Some(libc::EBUSY) => {
            let usage = std::fs::read_to_string(dir.join("memory.usage_in_bytes")).unwrap_or_default();
            let usage = usage.trim();
            let source = io::Error::new(source.kind(), format!("{source}: below the {usage} bytes its processes use"));
            Error::Cgroup { path, what, source }
        }
        other => other,
    }
}

/// runc's (and crun's) conversion of cgroup v1 cpu.shares [2, 262144] to v2
/// cpu.weight [1, 10000].
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

impl Cgroup {
    pub fn apply(&self, r: &LinuxResources) -> Result<Vec<String>> {
        if let Some(m) = r.memory() {
            self.check_before_update(m)?;
        }
        let mut warnings = if super::is_pure_v2() { self.apply_v2(r)? } else { self.apply_v1(r)? };
        if let Some(n) = r.network() {
            self.apply_network(n, &mut warnings)?;
        }
        if let Some(rdma) = r.rdma() {
            self.apply_rdma(rdma)?;
        }
        self.apply_hugepages(r.hugepage_limits().as_deref().unwrap_or_default())?;
        self.apply_unified(r.unified().as_ref().unwrap_or(&Default::default()))?;
        Ok(warnings)
    }

    /// checkBeforeUpdate: refuse a memory limit below the current usage
    /// instead of letting the kernel reclaim or OOM-kill to reach it.
    fn check_before_update(&self, m: &LinuxMemory) -> Result<()> {
        let (Some(true), Some(limit)) = (m.check_before_update(), m.limit().filter(|l| *l > 0)) else {
            return Ok(());
        };
        let usage = ["memory.usage_in_bytes", "memory.current"].iter().find_map(|f| {
            let d = self.dir_with(f)?;
            std::fs::read_to_string(d.join(f)).ok()?.trim().parse::<i64>().ok().map(|u| (d, u))
        });
        match usage {
            Some((d, usage)) if usage > limit => Err(cg_err(d, format!("linux.resources.memory.limit {limit}"))(
                io::Error::new(io::ErrorKind::InvalidInput, format!("below the current usage {usage} (checkBeforeUpdate)")),
            )),
            _ => Ok(()),
        }
    }

    /// net_cls/net_prio exist on v1 only, and only where mounted.
    fn apply_network(&self, n: &LinuxNetwork, warnings: &mut Vec<String>) -> Result<()> {
        if let Some(id) = n.class_id() {
            match self.dir_with("net_cls.classid") {
                Some(d) => write(d, "net_cls.classid", &id.to_string())?,
                None => warnings.push(format!("linux.resources.network.classID {id}: no net_cls controller here, ignored")),
            }
        }
        for p in n.priorities().iter().flatten() {
            match self.dir_with("net_prio.ifpriomap") {
                Some(d) => write(d, "net_prio.ifpriomap", &format!("{} {}", p.name(), p.priority()))?,
                None => warnings.push(format!(
                    "linux.resources.network.priorities {}: no net_prio controller here, ignored",
                    p.name()
                )),
            }
        }
        Ok(())
    }

    fn apply_rdma(&self, rdma: &HashMap<String, LinuxRdma>) -> Result<()> {
        if rdma.is_empty() {
            return Ok(());
        }
        let Some(d) = self.dir_with("rdma.max") else { return Err(self.missing_controller("rdma", "rdma")) };
        for (device, limit) in rdma {
            let mut value = device.clone();
            if let Some(h) = limit.hca_handles() {
                value.push_str(&format!(" hca_handle={h}"));
            }
            if let Some(o) = limit.hca_objects() {
                value.push_str(&format!(" hca_object={o}"));
            }
            write(d, "rdma.max", &value)?;
        }
        Ok(())
    }

    fn apply_v1(&self, r: &LinuxResources) -> Result<Vec<String>> {
        let mut warnings = Vec::new();
        if let (Some(m), Some(d)) = (r.memory(), self.dir_with("memory.limit_in_bytes")) {
            if let Some(v) = m.use_hierarchy() {
                write(d, "memory.use_hierarchy", if v { "1" } else { "0" })?;
            }
            if let Some(limit) = m.limit() {
                write(d, "memory.limit_in_bytes", &limit.to_string()).map_err(|e| below_usage(e, d))?;
            }
            if let Some(swap) = m.swap() {
                if d.join("memory.memsw.limit_in_bytes").exists() {
                    write(d, "memory.memsw.limit_in_bytes", &swap.to_string())?;
                }
            }
            if let Some(v) = m.reservation() {
                write(d, "memory.soft_limit_in_bytes", &v.to_string())?;
            }
            if let Some(v) = m.swappiness() {
                write(d, "memory.swappiness", &v.to_string())?;
            }
            if m.disable_oom_killer() == Some(true) {
                write(d, "memory.oom_control", "1")?;
            }
            if let Some(v) = m.kernel_tcp() {
                write(d, "memory.kmem.tcp.limit_in_bytes", &v.to_string())?;
            }
            if let Some(v) = m.kernel() {
                warnings.push(kernel_memory_ignored(v));
            }
        }
        if let Some(c) = r.cpu() {
            if let Some(d) = self.dir_with("cpu.shares") {
                if let Some(v) = c.shares() {
                    write(d, "cpu.shares", &v.to_string())?;
                }
                // The period first: a quota is checked against the current period.
                if let Some(v) = c.period() {
                    write(d, "cpu.cfs_period_us", &v.to_string())?;
                }
                if let Some(v) = c.quota() {
                    write(d, "cpu.cfs_quota_us", &v.to_string())?;
                }
                if let Some(v) = c.burst() {
                    write(d, "cpu.cfs_burst_us", &v.to_string())?;
                }
                if let Some(v) = c.idle() {
                    write(d, "cpu.idle", &v.to_string())?;
                }
                if let Some(v) = c.realtime_period() {
                    write(d, "cpu.rt_period_us", &v.to_string())?;
                }
                if let Some(v) = c.realtime_runtime() {
                    write(d, "cpu.rt_runtime_us", &v.to_string())?;
                }
            }
            self.apply_cpuset(c.cpus().as_deref(), c.mems().as_deref())?;
        }
        self.apply_pids(r)?;
        if let (Some(rules), Some(d)) = (r.devices(), self.dir_with("devices.allow")) {
            // In order, as runc: containerd's default spec denies all, then allows a few.
            for rule in rules {
                let file = if rule.allow() { "devices.allow" } else { "devices.deny" };
                write(d, file, &rule.to_string())?;
            }
            // runc appends the devices every container may use to the spec's rules.
            for rule in RUNC_ALLOWED_DEVICES {
                write(d, "devices.allow", rule)?;
            }
        }
        if let Some(b) = r.block_io() {
            self.apply_block_io_v1(b)?;
        }
        Ok(warnings)
    }

    fn apply_v2(&self, r: &LinuxResources) -> Result<Vec<String>> {
        let mut warnings = Vec::new();
        let Some(d) = self.dirs.first() else { return Ok(warnings) };
        if let Some(m) = r.memory() {
            let limit = m.limit();
            if let Some(limit) = limit {
                write(d, "memory.max", &max_or(limit))?;
            }
            if let Some(v) = m.reservation() {
                write(d, "memory.low", &max_or(v))?;
            }
            // OCI's swap is memory+swap; v2 limits the swap alone.
            if let Some(swap) = m.swap() {
                let value = match (swap, limit) {
                    (s, _) if s < 0 => "max".to_string(),
                    (s, Some(l)) if l >= 0 => s.saturating_sub(l).max(0).to_string(),
                    (s, _) => s.to_string(),
                };
                write(d, "memory.swap.max", &value)?;
            }
            // v1-only knobs: runc ignores them on v2.
            if let Some(v) = m.kernel() {
                warnings.push(kernel_memory_ignored(v));
            }
            let v1_only = [
                ("kernelTCP", m.kernel_tcp().map(|v| v.to_string())),
                ("swappiness", m.swappiness().map(|v| v.to_string())),
                ("disableOOMKiller", m.disable_oom_killer().filter(|d| *d).map(|d| d.to_string())),
            ];
            for (field, value) in v1_only {
                if let Some(v) = value {
                    warnings.push(format!("linux.resources.memory.{field} {v}: cgroup v1 only, ignored on v2"));
                }
            }
        }
        if let Some(c) = r.cpu() {
            if let Some(shares) = c.shares() {
                write(d, "cpu.weight", &shares_to_weight(shares).to_string())?;
            }
            if c.quota().is_some() || c.period().is_some() {
                let quota = c.quota().filter(|q| *q > 0).map_or("max".to_string(), |q| q.to_string());
                let period = c.period().unwrap_or(100_000);
                write(d, "cpu.max", &format!("{quota} {period}"))?;
            }
            if let Some(v) = c.burst() {
                write(d, "cpu.max.burst", &v.to_string())?;
            }
            if let Some(v) = c.idle() {
                write(d, "cpu.idle", &v.to_string())?;
            }
            // v2 has no per-cgroup realtime budget: a limit we cannot enforce.
            if let Some(v) = c.realtime_runtime().map(|v| v.to_string()).or(c.realtime_period().map(|v| v.to_string())) {
                return Err(self.missing_controller(&format!("cpu.realtimeRuntime/realtimePeriod {v}"), "cgroup v1 cpu"));
            }
            self.apply_cpuset(c.cpus().as_deref(), c.mems().as_deref())?;
        }
        self.apply_pids(r)?;
        if let Some(b) = r.block_io() {
            self.apply_block_io_v2(d, b, &mut warnings)?;
        }
        if let Some(rules) = r.devices() {
            self.apply_device_filter(d, rules)?;
        }
        Ok(warnings)
    }

    fn apply_cpuset(&self, cpus: Option<&str>, mems: Option<&str>) -> Result<()> {
        let Some(d) = self.dir_with("cpuset.cpus") else { return Ok(()) };
        if let Some(v) = cpus.filter(|v| !v.is_empty()) {
            write(d, "cpuset.cpus", v)?;
        }
        if let Some(v) = mems.filter(|v| !v.is_empty()) {
            write(d, "cpuset.mems", v)?;
        }
        Ok(())
    }

    fn apply_pids(&self, r: &LinuxResources) -> Result<()> {
        if let (Some(p), Some(d)) = (r.pids(), self.dir_with("pids.max")) {
            let limit = p.limit();
            write(d, "pids.max", &if limit > 0 { limit.to_string() } else { "max".into() })?;
        }
        Ok(())
    }

    /// On v2 a controller's files exist in a cgroup only when every ancestor
    /// enables it for its children.
    /// On a hybrid host, the v2 hierarchy's controllers (hugetlb here) too.
    pub(super) fn enable_v2_controllers(&self) {
        let Some(leaf) = self.dirs.iter().find(|d| super::is_v2_dir(d)) else { return };
        let mut ancestors: Vec<&Path> = leaf.ancestors().skip(1).take_while(|a| a.join("cgroup.subtree_control").exists()).collect();
        ancestors.reverse();
        for dir in ancestors {
            let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
            for c in ["cpu", "cpuset", "memory", "pids", "io", "hugetlb", "rdma"] {
                if available.split_whitespace().any(|a| a == c) {
                    // Refused where the cgroup has processes of its own (v2's
                    // "no internal processes"): then the files stay absent and
                    // the write of the value itself names the problem.
                    let _ = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
                }
            }
        }
    }
}

/// runc ignores kernel memory limits: the kernel deprecated and then dropped them.
fn kernel_memory_ignored(v: i64) -> String {
    format!("linux.resources.memory.kernel {v}: kernel memory limits are no longer supported by Linux, ignored")
}

fn max_or(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_convert_to_weights_as_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 0);
    }
}
