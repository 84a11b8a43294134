//! runtime-core's cgroup figures as containerd's own metrics types
//! (`io.containerd.cgroups.v1.Metrics` / `.v2.Metrics`), which `ctr task
//! metrics` and the CRI's ContainerStats decode.

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageField;
use runtime_core::cgroup::CgroupStats;

/// The metrics' proto names (containerd's typeurl resolves them).
const V1_METRICS: &str = "io.containerd.cgroups.v1.Metrics";
const V2_METRICS: &str = "io.containerd.cgroups.v2.Metrics";

pub fn to_any(s: &CgroupStats) -> Any {
    if s.unified {
        crate::events::to_any(V2_METRICS, &to_v2(s))
    } else {
        crate::events::to_any(V1_METRICS, &to_v1(s))
    }
}

fn to_v1(s: &CgroupStats) -> v1::Metrics {
    let m = |k: &str| s.memory_stat.get(k).copied().unwrap_or(0);
    let blkio = |field: &str| -> Vec<v1::BlkIOEntry> {
        s.blkio
            .get(field)
            .into_iter()
            .flatten()
            .map(|e| v1::BlkIOEntry {
                op: e.op.clone(),
                device: e.device.clone(),
                major: e.major,
                minor: e.minor,
                value: e.value,
                ..Default::default()
            })
            .collect()
    };
    let event = |k: &str| s.memory_events.get(k).copied().unwrap_or(0);
    v1::Metrics {
        memory_oom_control: MessageField::some(v1::MemoryOomControl {
            oom_kill_disable: event("oom_kill_disable"),
            under_oom: event("under_oom"),
            oom_kill: event("oom_kill"),
            ..Default::default()
        }),
        hugetlb: s
            .hugetlb
            .iter()
            .map(|h| v1::HugetlbStat {
                usage: h.usage,
                max: h.max_usage,
                failcnt: h.failcnt,
                pagesize: h.page_size.clone(),
                ..Default::default()
            })
            .collect(),
        blkio: MessageField::some(v1::BlkIOStat {
            io_service_bytes_recursive: blkio("io_service_bytes_recursive"),
            io_serviced_recursive: blkio("io_serviced_recursive"),
            io_queued_recursive: blkio("io_queued_recursive"),
            io_service_time_recursive: blkio("io_service_time_recursive"),
            io_wait_time_recursive: blkio("io_wait_time_recursive"),
            io_merged_recursive: blkio("io_merged_recursive"),
            io_time_recursive: blkio("io_time_recursive"),
            sectors_recursive: blkio("sectors_recursive"),
            ..Default::default()
        }),
        pids: MessageField::some(v1::PidsStat { current: s.pids_current, limit: s.pids_limit, ..Default::default() }),
        cpu: MessageField::some(v1::CPUStat {
            usage: MessageField::some(v1::CPUUsage {
                total: s.cpu_usage_ns,
                kernel: s.cpu_system_ns,
                user: s.cpu_user_ns,
                per_cpu: s.cpu_per_cpu_ns.clone(),
                ..Default::default()
            }),
            throttling: MessageField::some(v1::Throttle {
                periods: s.cpu_periods,
                throttled_periods: s.cpu_throttled_periods,
                throttled_time: s.cpu_throttled_ns,
                ..Default::default()
            }),
            ..Default::default()
        }),
        memory: MessageField::some(v1::MemoryStat {
            cache: m("cache"),
            rss: m("rss"),
            rss_huge: m("rss_huge"),
            mapped_file: m("mapped_file"),
            dirty: m("dirty"),
            writeback: m("writeback"),
            pg_pg_in: m("pgpgin"),
            pg_pg_out: m("pgpgout"),
            pg_fault: m("pgfault"),
            pg_maj_fault: m("pgmajfault"),
            inactive_anon: m("inactive_anon"),
            active_anon: m("active_anon"),
            inactive_file: m("inactive_file"),
            active_file: m("active_file"),
            unevictable: m("unevictable"),
            hierarchical_memory_limit: m("hierarchical_memory_limit"),
            hierarchical_swap_limit: m("hierarchical_memsw_limit"),
            total_cache: m("total_cache"),
            total_rss: m("total_rss"),
            total_rss_huge: m("total_rss_huge"),
            total_mapped_file: m("total_mapped_file"),
            total_dirty: m("total_dirty"),
            total_writeback: m("total_writeback"),
            total_pg_pg_in: m("total_pgpgin"),
            total_pg_pg_out: m("total_pgpgout"),
            total_pg_fault: m("total_pgfault"),
            total_pg_maj_fault: m("total_pgmajfault"),
            total_inactive_anon: m("total_inactive_anon"),
            total_active_anon: m("total_active_anon"),
            total_inactive_file: m("total_inactive_file"),
            total_active_file: m("total_active_file"),
            total_unevictable: m("total_unevictable"),
            usage: MessageField::some(v1::MemoryEntry {
                limit: s.memory_limit,
                usage: s.memory_usage,
                max: s.memory_max_usage,
                failcnt: s.memory_failcnt,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn to_v2(s: &CgroupStats) -> v2::Metrics {
    let m = |k: &str| s.memory_stat.get(k).copied().unwrap_or(0);
    let event = |k: &str| s.memory_events.get(k).copied().unwrap_or(0);
    v2::Metrics {
        memory_events: MessageField::some(v2::MemoryEvents {
            low: event("low"),
            high: event("high"),
            max: event("max"),
            oom: event("oom"),
            oom_kill: event("oom_kill"),
            ..Default::default()
        }),
        io: MessageField::some(v2::IOStat {
            usage: s
                .io
                .iter()
                .map(|e| v2::IOEntry {
                    major: e.major,
                    minor: e.minor,
                    rbytes: e.rbytes,
                    wbytes: e.wbytes,
                    rios: e.rios,
                    wios: e.wios,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        hugetlb: s
            .hugetlb
            .iter()
            .map(|h| v2::HugeTlbStat {
                current: h.usage,
                max: h.max_usage,
                failcnt: h.failcnt,
                pagesize: h.page_size.clone(),
                ..Default::default()
            })
            .collect(),
        pids: MessageField::some(v2::PidsStat { current: s.pids_current, limit: s.pids_limit, ..Default::default() }),
        cpu: MessageField::some(v2::CPUStat {
            usage_usec: s.cpu_usage_ns / 1000,
            user_usec: s.cpu_user_ns / 1000,
            system_usec: s.cpu_system_ns / 1000,
            nr_periods: s.cpu_periods,
            nr_throttled: s.cpu_throttled_periods,
            throttled_usec: s.cpu_throttled_ns / 1000,
            ..Default::default()
        }),
        memory: MessageField::some(v2::MemoryStat {
            anon: m("anon"),
            file: m("file"),
            kernel_stack: m("kernel_stack"),
            slab: m("slab"),
            sock: m("sock"),
            shmem: m("shmem"),
            file_mapped: m("file_mapped"),
            file_dirty: m("file_dirty"),
            file_writeback: m("file_writeback"),
            anon_thp: m("anon_thp"),
            inactive_anon: m("inactive_anon"),
            active_anon: m("active_anon"),
            inactive_file: m("inactive_file"),
            active_file: m("active_file"),
            unevictable: m("unevictable"),
            slab_reclaimable: m("slab_reclaimable"),
            slab_unreclaimable: m("slab_unreclaimable"),
            pgfault: m("pgfault"),
            pgmajfault: m("pgmajfault"),
            usage: s.memory_usage,
            usage_limit: s.memory_limit,
            max_usage: s.memory_max_usage,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_figures_land_in_containerds_types() {
        let mut s = CgroupStats { memory_usage: 4096, cpu_usage_ns: 2_000_000, pids_current: 3, ..Default::default() };
        s.memory_stat.insert("rss".into(), 1024);
        s.memory_events.insert("oom_kill".into(), 2);
        let any = to_any(&s);
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let m = to_v1(&s);
        assert_eq!((m.memory.usage.usage, m.memory.rss, m.pids.current), (4096, 1024, 3));
        assert_eq!(m.memory_oom_control.oom_kill, 2);
        s.unified = true;
        assert_eq!(to_any(&s).type_url, "io.containerd.cgroups.v2.Metrics");
        assert_eq!(to_v2(&s).cpu.usage_usec, 2000);
        assert_eq!(to_v2(&s).memory_events.oom_kill, 2);
    }

    #[test]
    fn the_names_are_the_proto_names() {
        use containerd_shim_protos::protobuf::MessageFull;
        assert_eq!(V1_METRICS, v1::Metrics::descriptor().full_name());
        assert_eq!(V2_METRICS, v2::Metrics::descriptor().full_name());
    }
}
