//! CPU lists as the spec writes them ("0-3,7") and the affinity they set
//! (process.execCPUAffinity: `initial` before an exec joins the container's
//! cgroup, `final` after).

use std::io;

/// Parse a list of CPUs: comma-separated numbers and inclusive ranges.
pub(crate) fn parse_cpu_list(list: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let number = |s: &str| s.trim().parse::<usize>().map_err(|_| format!("CPU list {list:?}: {s:?} is not a CPU number"));
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(part)?, number(part)?),
        };
        if first > last || last >= libc::CPU_SETSIZE as usize {
            return Err(format!("CPU list {list:?}: bad range {part:?}"));
        }
        cpus.extend(first..=last);
    }
    if cpus.is_empty() {
        return Err(format!("CPU list {list:?} names no CPU"));
    }
    Ok(cpus)
}

/// sched_setaffinity of `pid` (0: the caller) to `cpus`.
pub(crate) fn set(pid: libc::pid_t, cpus: &[usize]) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays in bounds
    // (parse_cpu_list checked each number against CPU_SETSIZE).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: sched_setaffinity with a valid set of its own size.
    if unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_cpu_list;

    #[test]
    fn numbers_and_ranges() {
        assert_eq!(parse_cpu_list("0-3,7").unwrap(), [0, 1, 2, 3, 7]);
        assert_eq!(parse_cpu_list("1").unwrap(), [1]);
    }

    #[test]
    fn garbage_is_named() {
        assert!(parse_cpu_list("3-1").unwrap_err().contains("bad range \"3-1\""));
        assert!(parse_cpu_list("x").unwrap_err().contains("\"x\" is not a CPU number"));
        assert!(parse_cpu_list("").unwrap_err().contains("names no CPU"));
    }
}
