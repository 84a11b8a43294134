//! Usage figures of a container's cgroup, read from cgroupfs: v1 controllers
//! (on v1 and hybrid hosts) or the v2 hierarchy of a pure v2 host. Times are in
//! nanoseconds whatever the kernel's unit.

use super::block_io::{blkio_stats, io_stats, BlkioEntry, IoEntry};
use super::hugetlb::HugetlbUsage;
use super::Cgroup;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct CgroupStats {
    /// The figures come from cgroup v2 (a pure v2 host).
    pub unified: bool,
    pub memory_usage: u64,
    /// u64::MAX when unlimited.
    pub memory_limit: u64,
    pub memory_max_usage: u64,
    pub memory_failcnt: u64,
    /// memory.stat as the kernel lists it.
    pub memory_stat: BTreeMap<String, u64>,
    /// OOM counters: v1's memory.oom_control, v2's memory.events.
    pub memory_events: BTreeMap<String, u64>,
    pub cpu_usage_ns: u64,
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    pub cpu_per_cpu_ns: Vec<u64>,
    pub cpu_periods: u64,
    pub cpu_throttled_periods: u64,
    pub cpu_throttled_ns: u64,
    pub pids_current: u64,
    /// 0 when unlimited.
    pub pids_limit: u64,
    /// v1: blkio statistics by containerd's BlkIOStat field name.
    pub blkio: BTreeMap<&'static str, Vec<BlkioEntry>>,
    /// v2: io.stat.
    pub io: Vec<IoEntry>,
    pub hugetlb: Vec<HugetlbUsage>,
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

fn number(dir: &Path, file: &str) -> Option<u64> {
    read(dir, file)?.trim().parse().ok()
}

/// "key value" lines (memory.stat, cpu.stat).
fn keyed(dir: &Path, file: &str) -> BTreeMap<String, u64> {
    read(dir, file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

impl Cgroup {
    pub fn stats(&self) -> CgroupStats {
        if super::is_pure_v2() {
            self.stats_v2()
        } else {
            self.stats_v1()
        }
    }

    fn stats_v1(&self) -> CgroupStats {
        let mut s = CgroupStats::default();
        if let Some(d) = self.dir_with("memory.usage_in_bytes") {
            s.memory_usage = number(d, "memory.usage_in_bytes").unwrap_or(0);
            s.memory_limit = number(d, "memory.limit_in_bytes").unwrap_or(u64::MAX);
            s.memory_max_usage = number(d, "memory.max_usage_in_bytes").unwrap_or(0);
            s.memory_failcnt = number(d, "memory.failcnt").unwrap_or(0);
            s.memory_stat = keyed(d, "memory.stat");
            s.memory_events = keyed(d, "memory.oom_control");
        }
        if let Some(d) = self.dir_with("cpuacct.usage") {
            s.cpu_usage_ns = number(d, "cpuacct.usage").unwrap_or(0);
            s.cpu_user_ns = number(d, "cpuacct.usage_user").unwrap_or(0);
            s.cpu_system_ns = number(d, "cpuacct.usage_sys").unwrap_or(0);
            s.cpu_per_cpu_ns = read(d, "cpuacct.usage_percpu")
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
        }
        if let Some(d) = self.dir_with("cpu.cfs_period_us") {
            let stat = keyed(d, "cpu.stat");
            s.cpu_periods = stat.get("nr_periods").copied().unwrap_or(0);
            s.cpu_throttled_periods = stat.get("nr_throttled").copied().unwrap_or(0);
            s.cpu_throttled_ns = stat.get("throttled_time").copied().unwrap_or(0);
        }
        if let Some(d) = self.dir_with("blkio.throttle.io_serviced_recursive") {
            s.blkio = blkio_stats(d);
        }
        s.hugetlb = self.hugetlb_stats();
        self.pids_into(&mut s);
        s
    }

    fn stats_v2(&self) -> CgroupStats {
        let mut s = CgroupStats { unified: true, ..Default::default() };
        if let Some(d) = self.dir_with("memory.current") {
            s.memory_usage = number(d, "memory.current").unwrap_or(0);
            s.memory_limit = number(d, "memory.max").unwrap_or(u64::MAX);
            s.memory_max_usage = number(d, "memory.peak").unwrap_or(0);
            s.memory_failcnt = keyed(d, "memory.events").get("max").copied().unwrap_or(0);
            s.memory_stat = keyed(d, "memory.stat");
            s.memory_events = keyed(d, "memory.events");
        }
        if let Some(d) = self.dir_with("cpu.stat") {
            let stat = keyed(d, "cpu.stat");
            let ns = |k: &str| stat.get(k).copied().unwrap_or(0) * 1000;
            (s.cpu_usage_ns, s.cpu_user_ns, s.cpu_system_ns) = (ns("usage_usec"), ns("user_usec"), ns("system_usec"));
            s.cpu_periods = stat.get("nr_periods").copied().unwrap_or(0);
            s.cpu_throttled_periods = stat.get("nr_throttled").copied().unwrap_or(0);
            s.cpu_throttled_ns = ns("throttled_usec");
        }
        if let Some(d) = self.dir_with("io.stat") {
            s.io = io_stats(d);
        }
        s.hugetlb = self.hugetlb_stats();
        self.pids_into(&mut s);
        s
    }

    fn pids_into(&self, s: &mut CgroupStats) {
        if let Some(d) = self.dir_with("pids.current") {
            s.pids_current = number(d, "pids.current").unwrap_or(0);
            // "max" does not parse: unlimited, which containerd reports as 0.
            s.pids_limit = number(d, "pids.max").unwrap_or(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_files_parse_and_skip_junk() {
        let dir = std::env::temp_dir().join(format!("ferrum-stats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cpu.stat"), "usage_usec 1500\nnr_periods 3\nbroken\n").unwrap();
        let stat = keyed(&dir, "cpu.stat");
        assert_eq!(stat.get("usage_usec"), Some(&1500));
        assert_eq!(stat.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
