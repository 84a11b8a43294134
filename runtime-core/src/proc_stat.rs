//! Process identity from /proc: a pid plus its start time names one process for
//! good, so a recycled pid is never signalled.

use std::io;

/// Start time (field 22 of /proc/<pid>/stat, in clock ticks since boot).
pub(crate) fn start_time(pid: i32) -> io::Result<u64> {
    let stat = crate::procfs::read(crate::procfs::Base::Pid(pid), "stat")?;
    parse_start_time(&stat).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad /proc stat"))
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    // `rest` starts at field 3; start time is field 22.
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// True when `pid` still is the process that started at `start`.
pub(crate) fn is_same_process(pid: i32, start: u64) -> bool {
    start_time(pid).map(|t| t == start).unwrap_or(false)
}

/// True when `pid` is the process that started at `start` and has not
/// exited: a zombie waiting for its reaper is gone, as runc counts it.
pub(crate) fn is_running(pid: i32, start: u64) -> bool {
    let Ok(stat) = crate::procfs::read(crate::procfs::Base::Pid(pid), "stat") else { return false };
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next());
    parse_start_time(&stat) == Some(start) && state != Some("Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_spaces_and_parens() {
        let stat = "42 (a b) c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_start_time(stat), Some(98765));
    }

    #[test]
    fn own_process_is_itself() {
        let me = std::process::id() as i32;
        let t = start_time(me).unwrap();
        assert!(is_same_process(me, t));
        assert!(!is_same_process(me, t + 1));
    }
}
