//! linux.resources as systemd unit properties.
//!
//! The cgroupfs files are written after the unit starts, as with the cgroupfs
//! driver, so the container gets every field exactly. The properties are for
//! systemd: it rewrites a unit's cgroup attributes from the unit's properties
//! whenever it realizes the unit again (a daemon-reload, a sibling's start),
//! and a limit it does not know of would be reset — on v1 a device list it does
//! not know of becomes "allow everything". So, as runc, the limits systemd
//! manages are handed to it too.

use super::super::block_io::blkio_weight_to_io_weight;
use super::super::device_filter::{self, Rule};
use super::super::resources::shares_to_weight;
use super::dbus::Value;
use oci_spec::runtime::{LinuxCpu, LinuxDeviceCgroup, LinuxMemory, LinuxResources};
use std::collections::HashMap;

pub(crate) type Property = (String, Value);

pub(super) fn prop(name: &str, value: Value) -> Property {
    (name.to_string(), value)
}

/// systemd's "no limit" for the uint64 properties.
const INFINITY: u64 = u64::MAX;

/// A limit where -1 (or any negative) means none.
fn limit(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(INFINITY)
}

/// The properties for `r` on a host whose systemd runs cgroup v2 (`v2`) or
/// v1 controllers, and warnings for what systemd cannot be told.
pub(crate) fn from_resources(
    r: &LinuxResources,
    v2: bool,
    proc_devices: &str,
) -> (Vec<Property>, Vec<String>) {
    let mut props = Vec::new();
    let mut warnings = Vec::new();
    if let Some(m) = r.memory() {
        memory(m, v2, &mut props);
    }
    if let Some(c) = r.cpu() {
        cpu(c, v2, &mut props);
    }
    if let Some(p) = r.pids() {
        // 0 is "not set" for runc; -1 is "no limit".
        if p.limit() != 0 {
            props.push(prop("TasksMax", Value::U64(limit(p.limit()))));
        }
    }
    if let Some(w) = r.block_io().as_ref().and_then(|b| b.weight()) {
        props.push(match v2 {
            true => prop("IOWeight", Value::U64(blkio_weight_to_io_weight(w))),
            false => prop("BlockIOWeight", Value::U64(u64::from(w))),
        });
    }
    if let Some(rules) = r.devices() {
        devices(rules, proc_devices, &mut props, &mut warnings);
    }
    if let (true, Some(keys)) = (v2, r.unified()) {
        unified(keys, &mut props);
    }
    (props, warnings)
}

/// Properties older systemds do not know, with the version that added them:
/// such a property would fail the whole unit, so it is left to the files.
const INTRODUCED: [(&str, u32); 3] = [
    ("CPUQuotaPeriodUSec", 242),
    ("AllowedCPUs", 244),
    ("AllowedMemoryNodes", 244),
];

/// Drop what systemd `version` does not know (None: unknown, keep all), with
/// a warning for each: the files still get the value, a reload may reset it.
pub(crate) fn for_version(
    props: &mut Vec<Property>,
    version: Option<u32>,
    warnings: &mut Vec<String>,
) {
    let Some(version) = version else { return };
    props.retain(|(name, _)| {
        let Some((_, since)) = INTRODUCED.iter().find(|(n, since)| n == name && version < *since) else {
            return true;
        };
        warnings.push(format!(
            "systemd {version} has no {name} (since {since}): set in the cgroup files only, a systemd reload may \
             reset it"
        ));
        false
    });
}

fn memory(m: &LinuxMemory, v2: bool, props: &mut Vec<Property>) {
    let Some(l) = m.limit().filter(|l| *l != 0) else {
        if let (true, Some(r)) = (v2, m.reservation().filter(|r| *r != 0)) {
            props.push(prop("MemoryLow", Value::U64(limit(r))));
        }
        return;
    };
    if !v2 {
        props.push(prop("MemoryLimit", Value::U64(limit(l))));
        return;
    }
    props.push(prop("MemoryMax", Value::U64(limit(l))));
    if let Some(r) = m.reservation().filter(|r| *r != 0) {
        props.push(prop("MemoryLow", Value::U64(limit(r))));
    }
    // OCI's swap is memory+swap; systemd's MemorySwapMax is the swap alone.
    if let Some(s) = m.swap().filter(|s| *s != 0) {
        let swap = match (s, l) {
            (s, _) if s < 0 => INFINITY,
            (s, l) if l > 0 => limit(s.saturating_sub(l).max(0)),
            (s, _) => limit(s),
        };
        props.push(prop("MemorySwapMax", Value::U64(swap)));
    }
}

fn cpu(c: &LinuxCpu, v2: bool, props: &mut Vec<Property>) {
    if let Some(shares) = c.shares().filter(|s| *s != 0) {
        props.push(match v2 {
            true => prop("CPUWeight", Value::U64(shares_to_weight(shares))),
            false => prop("CPUShares", Value::U64(shares)),
        });
    }
    let (quota, period) = (c.quota().unwrap_or(0), c.period().unwrap_or(0));
    if period != 0 {
        props.push(prop("CPUQuotaPeriodUSec", Value::U64(period)));
    }
    if quota != 0 || period != 0 {
        props.push(prop(
            "CPUQuotaPerSecUSec",
            Value::U64(quota_per_sec(quota, period)),
        ));
    }
    if v2 {
        // systemd manages cpusets on v2 only.
        let sets = [("AllowedCPUs", c.cpus()), ("AllowedMemoryNodes", c.mems())];
        for (name, list) in sets {
            if let Some(set) = list.as_deref().filter(|s| !s.is_empty()).and_then(allowed) {
                props.push(prop(name, set));
            }
        }
    }
}

/// The `unified` keys systemd has properties for (runc's set), replacing what
/// the structured fields gave: the files get `unified` last, so systemd must
/// know the same values.
fn unified(keys: &HashMap<String, String>, props: &mut Vec<Property>) {
    let mut sorted: Vec<_> = keys.iter().collect();
    sorted.sort();
    for (key, value) in sorted {
        for (name, value) in unified_properties(key, value.trim()) {
            props.retain(|(n, _)| n != name);
            props.push(prop(name, value));
        }
    }
}

/// The properties of one `unified` key: none for a key systemd has no
/// property for, or for a value that does not parse (the file write then
/// refuses it, naming the key).
fn unified_properties(key: &str, value: &str) -> Vec<(&'static str, Value)> {
    let limit = || match value {
        "max" => Some(Value::U64(INFINITY)),
        v => v.parse().ok().map(Value::U64),
    };
    let one = |name, value: Option<Value>| value.map(|v| vec![(name, v)]).unwrap_or_default();
    match key {
        "memory.high" => one("MemoryHigh", limit()),
        "memory.low" => one("MemoryLow", limit()),
        "memory.max" => one("MemoryMax", limit()),
        "memory.swap.max" => one("MemorySwapMax", limit()),
        "pids.max" => one("TasksMax", limit()),
        "cpu.weight" => one("CPUWeight", value.parse().ok().map(Value::U64)),
        "cpuset.cpus" => one("AllowedCPUs", allowed(value)),
        "cpuset.mems" => one("AllowedMemoryNodes", allowed(value)),
        "cpu.max" => {
            let Some((quota, period)) = cpu_max(value) else {
                return Vec::new();
            };
            let per_sec = Value::U64(quota_per_sec(quota, period.unwrap_or(0)));
            let period = period.map(|p| ("CPUQuotaPeriodUSec", Value::U64(p)));
            period
                .into_iter()
                .chain([("CPUQuotaPerSecUSec", per_sec)])
                .collect()
        }
        _ => Vec::new(),
    }
}

/// cpu.max's "QUOTA [PERIOD]", QUOTA a number or "max" (-1 here).
fn cpu_max(value: &str) -> Option<(i64, Option<u64>)> {
    let mut fields = value.split_whitespace();
    let quota = match fields.next()? {
        "max" => -1,
        q => q.parse().ok()?,
    };
    let period = fields.next().map(str::parse).transpose().ok()?;
    fields.next().is_none().then_some((quota, period))
}

/// systemd takes the quota per second of wall time, at a 1% granularity: round
/// up to 10 ms, as runc does (the exact value is then written to cpu.max).
fn quota_per_sec(quota: i64, period: u64) -> u64 {
    let Ok(quota) = u64::try_from(quota) else {
        return INFINITY;
    };
    if quota == 0 {
        return INFINITY;
    }
    let period = if period == 0 { 100_000 } else { period };
    let per_sec = quota.saturating_mul(1_000_000) / period;
    per_sec.div_ceil(10_000) * 10_000
}

/// AllowedCPUs' or AllowedMemoryNodes' value for a list like "0-2,7".
fn allowed(list: &str) -> Option<Value> {
    bitmask(list).map(|mask| Value::Array("y".into(), mask))
}

/// "0-2,7" as the little-endian bit mask systemd's AllowedCPUs takes.
fn bitmask(list: &str) -> Option<Vec<Value>> {
    let cpus = crate::affinity::parse_cpu_list(list).ok()?;
    let mut bytes = vec![0u8; cpus.iter().max().map_or(0, |m| m / 8 + 1)];
    for cpu in cpus {
        bytes[cpu / 8] |= 1 << (cpu % 8);
    }
    Some(bytes.into_iter().map(Value::Byte).collect())
}

/// DevicePolicy and DeviceAllow from the same rules the cgroupfs driver
/// writes (the spec's and runc's always-allowed devices).
fn devices(
    rules: &[LinuxDeviceCgroup],
    proc_devices: &str,
    props: &mut Vec<Property>,
    warnings: &mut Vec<String>,
) {
    let (default_allow, exceptions) =
        device_filter::effective(&device_filter::with_runc_defaults(rules));
    if default_allow {
        // systemd cannot deny single devices: leave the policy to the cgroup files.
        props.push(prop("DevicePolicy", Value::Str("auto".into())));
        if !exceptions.is_empty() {
            warnings.push(format!(
                "linux.resources.devices: {} deny rule(s) after allowing all cannot be told to systemd; a systemd \
                 reload may lift them",
                exceptions.len()
            ));
        }
        return;
    }
    props.push(prop("DevicePolicy", Value::Str("strict".into())));
    let mut allow = Vec::new();
    for rule in &exceptions {
        match device_allow(rule, proc_devices) {
            Some(entries) => allow.extend(entries),
            None => warnings.push(format!(
                "linux.resources.devices: {} cannot be told to systemd; a systemd reload would deny it",
                rule_text(rule)
            )),
        }
    }
    let entries = allow
        .into_iter()
        .map(|(dev, access)| Value::Struct(vec![Value::Str(dev), Value::Str(access)]));
    props.push(prop(
        "DeviceAllow",
        Value::Array("(ss)".into(), entries.collect()),
    ));
}

/// systemd's names for the devices of one allow rule: a node path for one
/// device, "char-<group>" (from /proc/devices) for a major, "char-*" for all.
fn device_allow(rule: &Rule, proc_devices: &str) -> Option<Vec<(String, String)>> {
    let access = access_text(rule.access);
    let kinds: &[char] = match rule.kind {
        Some('b') => &['b'],
        Some(_) => &['c'],
        None => &['c', 'b'],
    };
    let mut out = Vec::new();
    for &kind in kinds {
        let class = if kind == 'b' { "block" } else { "char" };
        let name = match (rule.major, rule.minor) {
            (None, None) => format!("{class}-*"),
            (Some(major), None) => format!("{class}-{}", device_group(proc_devices, kind, major)?),
            (Some(major), Some(minor)) => format!("/dev/{class}/{major}:{minor}"),
            // Any major with one minor: no systemd name for that.
            (None, Some(_)) => return None,
        };
        out.push((name, access.clone()));
    }
    Some(out)
}

/// The group /proc/devices lists for `major` in the character or block section.
fn device_group(proc_devices: &str, kind: char, major: i64) -> Option<String> {
    let section = if kind == 'b' {
        "Block devices:"
    } else {
        "Character devices:"
    };
    let mut lines = proc_devices
        .lines()
        .skip_while(|l| l.trim() != section)
        .skip(1);
    lines
        .by_ref()
        .take_while(|l| !l.trim().is_empty())
        .find_map(|l| {
            let (number, name) = l.trim().split_once(' ')?;
            (number.parse::<i64>().ok()? == major).then(|| name.trim().to_string())
        })
}

fn access_text(access: u8) -> String {
    [
        (device_filter::ACC_READ, 'r'),
        (device_filter::ACC_WRITE, 'w'),
        (device_filter::ACC_MKNOD, 'm'),
    ]
    .iter()
    .filter(|(bit, _)| access & bit != 0)
    .map(|(_, c)| *c)
    .collect()
}

fn rule_text(rule: &Rule) -> String {
    let n = |v: Option<i64>| v.map_or("*".to_string(), |v| v.to_string());
    format!(
        "{} {}:{} {}",
        rule.kind.unwrap_or('a'),
        n(rule.major),
        n(rule.minor),
        access_text(rule.access)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder,
    };
    use oci_spec::runtime::{LinuxPidsBuilder, LinuxResourcesBuilder};

    const PROC_DEVICES: &str = "Character devices:\n  1 mem\n  5 /dev/tty\n136 pts\n\nBlock devices:\n  8 sd\n254 virtblk\n";

    fn find<'a>(props: &'a [Property], name: &str) -> Option<&'a Value> {
        props.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    #[test]
    fn quota_rounds_up_to_ten_milliseconds_as_runc() {
        assert_eq!(quota_per_sec(50_000, 100_000), 500_000);
        assert_eq!(quota_per_sec(12_345, 100_000), 130_000);
        assert_eq!(quota_per_sec(20_000, 0), 200_000);
        assert_eq!(quota_per_sec(-1, 100_000), INFINITY);
    }

    #[test]
    fn cpu_set_as_bitmask() {
        let bytes = |v: Option<Vec<Value>>| {
            v.map(|v| {
                v.into_iter()
                    .map(|b| match b {
                        Value::Byte(b) => b,
                        _ => 0,
                    })
                    .collect::<Vec<u8>>()
            })
        };
        assert_eq!(
            bytes(bitmask("0-2,9")),
            Some(vec![0b0000_0111, 0b0000_0010])
        );
        assert_eq!(bitmask("x"), None);
    }

    #[test]
    fn v1_and_v2_names() {
        let r = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64 << 20)
                    .swap(96 << 20)
                    .reservation(32 << 20)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(1024u64)
                    .quota(50_000)
                    .period(100_000u64)
                    .cpus("0")
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(-1).build().unwrap())
            .build()
            .unwrap();
        let (v1, _) = from_resources(&r, false, PROC_DEVICES);
        assert_eq!(find(&v1, "MemoryLimit"), Some(&Value::U64(64 << 20)));
        assert_eq!(find(&v1, "CPUShares"), Some(&Value::U64(1024)));
        assert_eq!(find(&v1, "CPUQuotaPerSecUSec"), Some(&Value::U64(500_000)));
        assert_eq!(find(&v1, "TasksMax"), Some(&Value::U64(INFINITY)));
        assert_eq!(find(&v1, "AllowedCPUs"), None);
        let (v2, _) = from_resources(&r, true, PROC_DEVICES);
        assert_eq!(find(&v2, "MemoryMax"), Some(&Value::U64(64 << 20)));
        assert_eq!(find(&v2, "MemorySwapMax"), Some(&Value::U64(32 << 20)));
        assert_eq!(find(&v2, "MemoryLow"), Some(&Value::U64(32 << 20)));
        assert_eq!(find(&v2, "CPUWeight"), Some(&Value::U64(39)));
        assert_eq!(
            find(&v2, "AllowedCPUs"),
            Some(&Value::Array("y".into(), vec![Value::Byte(1)]))
        );
    }

    #[test]
    fn unified_keys_systemd_knows_are_properties_on_v2() {
        let unified: HashMap<String, String> = [
            ("memory.high", "50331648"),
            ("memory.max", "max"),
            ("pids.max", "33"),
            ("cpu.max", "30000 50000"),
            ("cpuset.cpus", "0"),
            ("memory.low", "lots"),
            ("io.bfq.weight", "7"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let r = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64 << 20)
                    .build()
                    .unwrap(),
            )
            .pids(LinuxPidsBuilder::default().limit(10).build().unwrap())
            .unified(unified)
            .build()
            .unwrap();
        let (v2, _) = from_resources(&r, true, PROC_DEVICES);
        assert_eq!(find(&v2, "MemoryHigh"), Some(&Value::U64(50331648)));
        // unified wins over the structured fields, as in the files.
        assert_eq!(find(&v2, "MemoryMax"), Some(&Value::U64(INFINITY)));
        assert_eq!(v2.iter().filter(|(n, _)| n == "MemoryMax").count(), 1);
        assert_eq!(find(&v2, "TasksMax"), Some(&Value::U64(33)));
        assert_eq!(find(&v2, "CPUQuotaPeriodUSec"), Some(&Value::U64(50_000)));
        assert_eq!(find(&v2, "CPUQuotaPerSecUSec"), Some(&Value::U64(600_000)));
        assert_eq!(
            find(&v2, "AllowedCPUs"),
            Some(&Value::Array("y".into(), vec![Value::Byte(1)]))
        );
        // Not a number: left to the file write, which names it.
        assert_eq!(find(&v2, "MemoryLow"), None);
        assert_eq!(cpu_max("max"), Some((-1, None)));
        assert_eq!(cpu_max("1 2 3"), None);
        // v1 hosts: systemd manages no v2 files.
        let (v1, _) = from_resources(&r, false, PROC_DEVICES);
        assert_eq!(find(&v1, "MemoryHigh"), None);
        assert_eq!(find(&v1, "TasksMax"), Some(&Value::U64(10)));
    }

    #[test]
    fn properties_an_old_systemd_lacks_are_dropped_with_a_warning() {
        let all = || {
            vec![
                prop("CPUQuotaPeriodUSec", Value::U64(50_000)),
                prop(
                    "AllowedCPUs",
                    Value::Array("y".into(), vec![Value::Byte(1)]),
                ),
                prop("MemoryMax", Value::U64(1)),
            ]
        };
        let names = |props: &[Property]| props.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        let mut warnings = Vec::new();
        let mut props = all();
        for_version(&mut props, Some(239), &mut warnings);
        assert_eq!(names(&props), ["MemoryMax"]);
        assert!(
            warnings.len() == 2 && warnings[0].contains("systemd 239 has no CPUQuotaPeriodUSec"),
            "{warnings:?}"
        );
        for version in [Some(243), Some(244), None] {
            let mut props = all();
            let mut warnings = Vec::new();
            for_version(&mut props, version, &mut warnings);
            let kept = if version == Some(243) { 2 } else { 3 };
            assert_eq!(props.len(), kept, "{version:?}: {warnings:?}");
        }
    }

    fn rule(
        allow: bool,
        typ: LinuxDeviceType,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().unwrap()
    }

    #[test]
    fn containerd_default_devices_become_a_strict_allow_list() {
        let rules = [
            rule(false, LinuxDeviceType::A, None, None, "rwm"),
            rule(true, LinuxDeviceType::C, Some(10), Some(229), "rw"),
        ];
        let r = LinuxResourcesBuilder::default()
            .devices(rules)
            .build()
            .unwrap();
        let (props, warnings) = from_resources(&r, false, PROC_DEVICES);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            find(&props, "DevicePolicy"),
            Some(&Value::Str("strict".into()))
        );
        let Some(Value::Array(_, entries)) = find(&props, "DeviceAllow") else {
            panic!("{props:?}")
        };
        let entries: Vec<String> = entries
            .iter()
            .map(|e| match e {
                Value::Struct(f) => match (&f[0], &f[1]) {
                    (Value::Str(d), Value::Str(a)) => format!("{d} {a}"),
                    _ => panic!("{e:?}"),
                },
                _ => panic!("{e:?}"),
            })
            .collect();
        for want in [
            "/dev/char/10:229 rw",
            "char-* m",
            "block-* m",
            "/dev/char/1:3 rwm",
            "char-pts rwm",
        ] {
            assert!(
                entries.contains(&want.to_string()),
                "{want} not in {entries:?}"
            );
        }
    }

    #[test]
    fn what_systemd_cannot_express_is_a_warning() {
        let rules = [
            rule(true, LinuxDeviceType::A, None, None, "rwm"),
            // Not one of runc's always-allowed devices, which would take it back.
            rule(false, LinuxDeviceType::C, Some(4), Some(1), "rwm"),
        ];
        let r = LinuxResourcesBuilder::default()
            .devices(rules)
            .build()
            .unwrap();
        let (props, warnings) = from_resources(&r, false, PROC_DEVICES);
        assert_eq!(
            find(&props, "DevicePolicy"),
            Some(&Value::Str("auto".into()))
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let unnamed = rule(true, LinuxDeviceType::C, Some(99), None, "r");
        let r = LinuxResourcesBuilder::default()
            .devices([unnamed])
            .build()
            .unwrap();
        let (_, warnings) = from_resources(&r, false, PROC_DEVICES);
        assert!(
            warnings.iter().any(|w| w.contains("c 99:* r")),
            "{warnings:?}"
        );
    }
}
