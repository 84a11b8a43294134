//! `events`: the container's usage in runc's `events.Stats` JSON (what
//! go-runc's Stats and Events decode) — once with `--stats`, else every
//! `--interval` — and `{"type":"oom","id":…}` as each OOM kill happens, until
//! the container is gone.

use crate::args::{parse, Spec};
use crate::{one_id, Global};
use anyhow::{bail, Context, Result};
use runtime_core::cgroup::{CgroupStats, OomWatcher};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::time::{Duration, Instant};

const EVENTS: Spec = Spec { bools: &[&["stats"]], values: &[&["interval"]] };

/// How often an OOM kill and the container's end are looked for.
const TICK: Duration = Duration::from_millis(100);

pub fn events(g: &mut Global, args: &[String]) -> Result<()> {
    let a = parse(args, &EVENTS)?;
    let id = one_id("events", &a.positional)?;
    let c = g.load(id)?;
    let stats = |c: &runtime_core::Container| json!({ "type": "stats", "id": id, "data": stats_json(&c.stats()) });
    let mut out = std::io::stdout().lock();
    if a.has("stats") {
        writeln!(out, "{}", stats(&c))?;
        return Ok(());
    }
    let interval = parse_interval(a.value("interval").unwrap_or("5s"))?;
    let oom = OomWatcher::new(&c.cgroup())?;
    let mut next = Instant::now() + interval;
    let report_ooms = |out: &mut std::io::StdoutLock| -> std::io::Result<()> {
        for _ in 0..oom.as_ref().map_or(0, OomWatcher::new_kills) {
            writeln!(out, "{}", json!({ "type": "oom", "id": id }))?;
        }
        out.flush()
    };
    loop {
        // Looked at before the kills: the kill that ended it is reported.
        let stopped = c.status() == "stopped";
        report_ooms(&mut out)?;
        if stopped {
            // v1's eventfd fires before the kill is counted: one more look.
            if oom.as_ref().is_some_and(OomWatcher::settles) {
                std::thread::sleep(TICK);
                report_ooms(&mut out)?;
            }
            return Ok(());
        }
        if Instant::now() >= next {
            writeln!(out, "{}", stats(&c))?;
            next += interval;
        }
        out.flush()?;
        std::thread::sleep(TICK);
    }
}

/// Go's durations as runc takes them: `5s`, `500ms`, `1m`.
fn parse_interval(s: &str) -> Result<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number.parse().with_context(|| format!("invalid interval {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("invalid interval {s:?}"),
    };
    if secs <= 0.0 {
        bail!("duration interval must be greater than 0");
    }
    Ok(Duration::from_secs_f64(secs))
}

/// runc's types.Stats from ours.
fn stats_json(s: &CgroupStats) -> Value {
    let mut blkio = Map::new();
    for (field, entries) in &s.blkio {
        let list: Vec<Value> =
            entries.iter().map(|e| json!({ "major": e.major, "minor": e.minor, "op": e.op, "value": e.value })).collect();
        blkio.insert(camel(field), Value::Array(list));
    }
    if s.unified {
        // v2's io.stat as runc reports it: bytes and operations by Read/Write.
        let by = |read: fn(&runtime_core::cgroup::IoEntry) -> u64, write: fn(&runtime_core::cgroup::IoEntry) -> u64| -> Value {
            s.io.iter()
                .flat_map(|e| {
                    [("Read", read(e)), ("Write", write(e))]
                        .map(|(op, value)| json!({ "major": e.major, "minor": e.minor, "op": op, "value": value }))
                })
                .collect()
        };
        blkio.insert("ioServiceBytesRecursive".into(), by(|e| e.rbytes, |e| e.wbytes));
        blkio.insert("ioServicedRecursive".into(), by(|e| e.rios, |e| e.wios));
    }
    let hugetlb: Map<String, Value> = s
        .hugetlb
        .iter()
        .map(|h| (h.page_size.clone(), json!({ "usage": h.usage, "max": h.max_usage, "failcnt": h.failcnt })))
        .collect();
    let cache = s.memory_stat.get("cache").or(s.memory_stat.get("file")).copied().unwrap_or(0);
    json!({
        "cpu": {
            "usage": { "total": s.cpu_usage_ns, "percpu": s.cpu_per_cpu_ns, "kernel": s.cpu_system_ns, "user": s.cpu_user_ns },
            "throttling": { "periods": s.cpu_periods, "throttledPeriods": s.cpu_throttled_periods, "throttledTime": s.cpu_throttled_ns },
        },
        "memory": {
            "cache": cache,
            "usage": { "limit": s.memory_limit, "usage": s.memory_usage, "max": s.memory_max_usage, "failcnt": s.memory_failcnt },
            "raw": s.memory_stat,
        },
        "pids": { "current": s.pids_current, "limit": s.pids_limit },
        "blkio": blkio,
        "hugetlb": hugetlb,
    })
}

/// containerd's snake_case field names as runc's JSON spells them.
fn camel(snake: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in snake.chars() {
        match (c, upper) {
            ('_', _) => upper = true,
            (c, true) => {
                out.push(c.to_ascii_uppercase());
                upper = false;
            }
            (c, false) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_and_names() {
        assert_eq!(parse_interval("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_interval("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_interval("0s").is_err() && parse_interval("5x").is_err());
        assert_eq!(camel("io_service_bytes_recursive"), "ioServiceBytesRecursive");
    }

    #[test]
    fn stats_have_the_fields_go_runc_decodes() {
        let mut s = CgroupStats { memory_usage: 7, pids_current: 2, cpu_usage_ns: 9, ..Default::default() };
        s.memory_stat.insert("cache".into(), 3);
        let v = stats_json(&s);
        assert_eq!(v["memory"]["usage"]["usage"], 7);
        assert_eq!(v["memory"]["cache"], 3);
        assert_eq!(v["pids"]["current"], 2);
        assert_eq!(v["cpu"]["usage"]["total"], 9);
    }
}
