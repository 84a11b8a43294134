//! How the kernel schedules the container's process: personality (the
//! container's), I/O priority and CPU scheduler (each process's own).

use super::Result;
use oci_spec::runtime::{
    IOPriorityClass, LinuxIOPriority, LinuxPersonality, LinuxPersonalityDomain, LinuxSchedulerFlag,
    LinuxSchedulerPolicy, Scheduler,
};

/// linux.personality: the execution domain (LINUX or LINUX32). Like runc,
/// flags are refused rather than silently dropped: none is defined by the spec.
pub(super) fn set_personality(p: &LinuxPersonality) -> Result<()> {
    if let Some(flags) = p.flags().as_ref().filter(|f| !f.is_empty()) {
        return Err(format!("linux.personality.flags {flags:?}: no personality flag is supported"));
    }
    let domain: libc::c_ulong = match p.domain() {
        LinuxPersonalityDomain::PerLinux => 0x0000,
        LinuxPersonalityDomain::PerLinux32 => 0x0008,
    };
    // SAFETY: personality with a plain value.
    if unsafe { libc::personality(domain) } < 0 {
        return Err(format!("set personality {}: {}", p.domain(), std::io::Error::last_os_error()));
    }
    Ok(())
}

/// process.ioPriority: ioprio_set(IOPRIO_WHO_PROCESS, self, class << 13 | level).
pub(super) fn set_io_priority(io: &LinuxIOPriority) -> Result<()> {
    let class = match io.class() {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        IOPriorityClass::IoprioClassIdle => 3,
    };
    if !(0..=7).contains(&io.priority()) {
        return Err(format!("process.ioPriority.priority {} is not between 0 and 7", io.priority()));
    }
    let value = (class << 13) | io.priority();
    // SAFETY: ioprio_set with plain values (IOPRIO_WHO_PROCESS = 1, 0 = ourselves).
    if unsafe { libc::syscall(libc::SYS_ioprio_set, 1, 0, value) } < 0 {
        return Err(format!("set process.ioPriority {}/{}: {}", io.class(), io.priority(), std::io::Error::last_os_error()));
    }
    Ok(())
}

/// `struct sched_attr` of linux/sched/types.h (SCHED_ATTR_SIZE_VER0).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// process.scheduler: sched_setattr on ourselves.
pub(super) fn set_scheduler(s: &Scheduler) -> Result<()> {
    use LinuxSchedulerPolicy as P;
    let policy = match s.policy() {
        P::SchedOther => 0,
        P::SchedFifo => 1,
        P::SchedRr => 2,
        P::SchedBatch => 3,
        P::SchedIso => 4,
        P::SchedIdle => 5,
        P::SchedDeadline => 6,
    };
    let flags = s.flags().iter().flatten().fold(0u64, |acc, f| {
        acc | match f {
            LinuxSchedulerFlag::SchedResetOnFork => 0x01,
            LinuxSchedulerFlag::SchedFlagReclaim => 0x02,
            LinuxSchedulerFlag::SchedFlagDLOverrun => 0x04,
            LinuxSchedulerFlag::SchedFlagKeepPolicy => 0x08,
            LinuxSchedulerFlag::SchedFlagKeepParams => 0x10,
            LinuxSchedulerFlag::SchedFlagUtilClampMin => 0x20,
            LinuxSchedulerFlag::SchedFlagUtilClampMax => 0x40,
        }
    });
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy,
        flags,
        nice: s.nice().unwrap_or(0),
        priority: s.priority().unwrap_or(0).max(0) as u32,
        runtime: s.runtime().unwrap_or(0),
        deadline: s.deadline().unwrap_or(0),
        period: s.period().unwrap_or(0),
    };
    // SAFETY: sched_setattr(self, attr, 0) with a struct of the declared size.
    if unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) } < 0 {
        return Err(format!("set process.scheduler {:?}: {}", s.policy(), std::io::Error::last_os_error()));
    }
    Ok(())
}
