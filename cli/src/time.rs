//! Times as runc prints them: RFC 3339 in UTC, and a process's start time
//! (what `state`'s `created` reports: when init began).

/// `secs` since the epoch (and optional nanoseconds) as RFC 3339 UTC.
pub fn rfc3339(secs: u64, nanos: Option<u32>) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    let frac = nanos.map(|n| format!(".{n:09}")).unwrap_or_default();
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{frac}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// When a process started, from its start time in clock ticks after boot
/// (/proc/<pid>/stat) and the boot time (/proc/stat's btime).
pub fn started_at(start_ticks: u64) -> Option<String> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok().filter(|h| *h > 0)?;
    let nanos = ((start_ticks % hz) * 1_000_000_000 / hz) as u32;
    Some(rfc3339(btime + start_ticks / hz, Some(nanos)))
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_791), (2026, 12, 4));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(rfc3339(1_796_420_753, None), "2026-12-04T21:45:53Z");
        assert_eq!(rfc3339(0, Some(5)), "1970-01-01T00:00:00.000000005Z");
    }
}
