//! The five capability sets of process.capabilities.

use super::Result;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

/// Kernel numbers of the capabilities, by their spec names.
pub(super) const NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

fn number(cap: &Capability) -> Option<u32> {
    let name = serde_json::to_value(cap).ok()?;
    NAMES.iter().position(|n| Some(*n) == name.as_str()).map(|i| i as u32)
}

/// The highest capability this kernel knows. Asked of the kernel itself
/// (PR_CAPBSET_READ fails for a number it does not know), not read from
/// /proc/sys/kernel/cap_last_cap: this runs after the container's mounts,
/// where a dummy file would make us keep capabilities we believe unknown.
fn last_cap() -> u32 {
    static LAST: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *LAST.get_or_init(|| {
        // SAFETY: prctl with integer arguments.
        let known = |cap: u32| unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) } >= 0;
        // Known capabilities are 0..=last: a binary search, six calls.
        let (mut known_up_to, mut unknown_from) = (0, 64);
        while unknown_from - known_up_to > 1 {
            let mid = (known_up_to + unknown_from) / 2;
            if known(mid) {
                known_up_to = mid;
            } else {
                unknown_from = mid;
            }
        }
        known_up_to
    })
}

/// A set as a 64-bit mask; capabilities this kernel does not know are left out
/// with a warning (runc does the same).
fn mask(set: &Option<Capabilities>, warnings: &mut Vec<String>) -> u64 {
    let last = last_cap();
    let mut m = 0u64;
    for cap in set.iter().flatten() {
        match number(cap) {
            Some(n) if n <= last => m |= 1 << n,
            _ => warnings.push(format!("capability {cap} is not known to this kernel, ignored")),
        }
    }
    m
}

pub(super) struct Sets {
    bounding: u64,
    effective: u64,
    permitted: u64,
    inheritable: u64,
    ambient: u64,
}

impl Sets {
    pub(super) fn from_spec(caps: &LinuxCapabilities, warnings: &mut Vec<String>) -> Sets {
        let mut sets = Sets {
            bounding: mask(caps.bounding(), warnings),
            effective: mask(caps.effective(), warnings),
            permitted: mask(caps.permitted(), warnings),
            inheritable: mask(caps.inheritable(), warnings),
            ambient: mask(caps.ambient(), warnings),
        };
        // The kernel raises an ambient capability only if it is permitted and
        // inheritable. runc leaves the others out, and `runc spec`'s own
        // config asks for three of them with no inheritable set: so do we,
        // with a warning.
        let raisable = sets.permitted & sets.inheritable;
        let dropped = sets.ambient & !raisable;
        if dropped != 0 {
            let names: Vec<&str> = (0..64).filter(|c| dropped & (1 << c) != 0).filter_map(|c| NAMES.get(c).copied()).collect();
            warnings.push(format!(
                "capability {} in process.capabilities.ambient: not both permitted and inheritable, not raised",
                names.join(", ")
            ));
            sets.ambient &= raisable;
        }
        sets
    }

    /// Drop what is outside the bounding set; needs CAP_SETPCAP, so before the
    /// user switch.
    pub(super) fn apply_bounding(&self) -> Result<()> {
        for cap in 0..=last_cap() {
            if self.bounding & (1 << cap) == 0 {
                // SAFETY: prctl with integer arguments.
                if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } < 0 {
                    return Err(format!("drop capability {} from the bounding set: {}", NAMES[cap as usize], std::io::Error::last_os_error()));
                }
            }
        }
        Ok(())
    }

    /// Set effective, permitted, inheritable and ambient, after the user switch.
    pub(super) fn apply(&self) -> Result<()> {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const VERSION_3: u32 = 0x2008_0522;
        let half = |m: u64, hi: bool| if hi { (m >> 32) as u32 } else { m as u32 };
        let data = [false, true].map(|hi| Data {
            effective: half(self.effective, hi),
            permitted: half(self.permitted, hi),
            inheritable: half(self.inheritable, hi),
        });
        let header = Header { version: VERSION_3, pid: 0 };
        // SAFETY: capset with a v3 header and two data structs, as the ABI wants.
        if unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) } < 0 {
            return Err(format!("set capabilities: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) };
        for cap in 0..=last_cap() {
            if self.ambient & (1 << cap) != 0 {
                // SAFETY: as above.
                let r = unsafe {
                    libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE, cap as libc::c_ulong, 0, 0)
                };
                if r < 0 {
                    return Err(format!("raise ambient capability {}: {}", NAMES[cap as usize], std::io::Error::last_os_error()));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_kernel_numbers() {
        assert_eq!(number(&Capability::Chown), Some(0));
        assert_eq!(number(&Capability::SysAdmin), Some(21));
        assert_eq!(number(&Capability::CheckpointRestore), Some(40));
    }

    #[test]
    fn the_kernel_tells_its_last_capability() {
        let proc: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").unwrap().trim().parse().unwrap();
        assert_eq!(last_cap(), proc);
    }
}
