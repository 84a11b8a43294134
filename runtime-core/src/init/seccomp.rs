//! linux.seccomp: the OCI profile compiled with libseccomp.
//!
//! Semantics follow runc: unknown syscall names are skipped (a profile lists
//! syscalls of many kernels), rules whose action is the default are dropped
//! (libseccomp refuses them), several conditions on the same argument become
//! separate rules (OR) while conditions on different arguments form one rule
//! (AND), and libseccomp must not set no_new_privs on its own.

use super::Result;
use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction as A, LinuxSeccompFilterFlag as F, LinuxSeccompOperator as Op};
use std::os::fd::RawFd;
use std::str::FromStr;

const EPERM: i32 = libc::EPERM;

fn action(a: A, errno_ret: Option<u32>) -> Result<ScmpAction> {
    Ok(match a {
        A::ScmpActKill | A::ScmpActKillThread => ScmpAction::KillThread,
        A::ScmpActKillProcess => ScmpAction::KillProcess,
        A::ScmpActTrap => ScmpAction::Trap,
        A::ScmpActErrno => ScmpAction::Errno(errno_ret.map_or(EPERM, |e| e as i32)),
        A::ScmpActTrace => ScmpAction::Trace(errno_ret.map_or(EPERM as u16, |e| e as u16)),
        A::ScmpActLog => ScmpAction::Log,
        A::ScmpActAllow => ScmpAction::Allow,
        A::ScmpActNotify => ScmpAction::Notify,
    })
}

fn condition(index: usize, op: Op, value: u64, value_two: Option<u64>) -> ScmpArgCompare {
    let (op, datum) = match op {
        Op::ScmpCmpNe => (ScmpCompareOp::NotEqual, value),
        Op::ScmpCmpLt => (ScmpCompareOp::Less, value),
        Op::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, value),
        Op::ScmpCmpEq => (ScmpCompareOp::Equal, value),
        Op::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, value),
        Op::ScmpCmpGt => (ScmpCompareOp::Greater, value),
        // OCI: `value` is the mask, `valueTwo` the value compared with.
        Op::ScmpCmpMaskedEq => (ScmpCompareOp::MaskedEqual(value), value_two.unwrap_or(0)),
    };
    ScmpArgCompare::new(index as u32, op, datum)
}

fn err(what: &str) -> impl FnOnce(libseccomp::error::SeccompError) -> String + '_ {
    move |e| format!("seccomp: {what}: {e}")
}

/// A compiled profile, not yet loaded.
pub(super) struct Filter {
    ctx: ScmpFilterContext,
    /// Some rule hands syscalls to a listener (SCMP_ACT_NOTIFY).
    notify: bool,
}

/// Compile `profile` into a filter, not yet loaded.
pub(super) fn build(profile: &LinuxSeccomp) -> Result<Filter> {
    if profile.default_action() == A::ScmpActNotify {
        return Err("seccomp: SCMP_ACT_NOTIFY cannot be the defaultAction (the runtime's own syscalls would wait for the listener)".into());
    }
    let notify = profile.syscalls().iter().flatten().any(|r| r.action() == A::ScmpActNotify);
    if notify && profile.listener_path().as_ref().is_none_or(|p| p.as_os_str().is_empty()) {
        return Err("seccomp: SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath".into());
    }
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(err("create filter"))?;
    ctx.set_ctl_nnp(false).map_err(err("leave no_new_privs to the spec"))?;
    for arch in profile.architectures().iter().flatten() {
        let name = serde_json::to_value(arch).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        let arch = ScmpArch::from_str(&name).map_err(|_| format!("seccomp: unknown architecture {name:?}"))?;
        if !ctx.is_arch_present(arch).map_err(err("architecture"))? {
            ctx.add_arch(arch).map_err(err(&format!("add architecture {name}")))?;
        }
    }
    for flag in profile.flags().iter().flatten() {
        match flag {
            F::SeccompFilterFlagLog => ctx.set_ctl_log(true),
            F::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true),
            F::SeccompFilterFlagTsync => ctx.set_ctl_tsync(true),
            F::SeccompFilterFlagWaitKillableRecv => ctx.set_ctl_waitkill(true),
        }
        .map_err(err(&format!("flag {flag}")))?;
    }
    for rule in profile.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue;
        }
        let args = rule.args().clone().unwrap_or_default();
        let conditions: Vec<ScmpArgCompare> =
            args.iter().map(|a| condition(a.index(), a.op(), a.value(), a.value_two())).collect();
        let mut indexes: Vec<usize> = args.iter().map(|a| a.index()).collect();
        indexes.sort_unstable();
        indexes.dedup();
        let same_argument_twice = indexes.len() < args.len();
        for name in rule.names() {
            let Ok(syscall) = ScmpSyscall::from_name(name) else { continue };
            let what = format!("rule for {name}");
            if conditions.is_empty() {
                ctx.add_rule(act, syscall).map_err(err(&what))?;
            } else if same_argument_twice {
                for c in &conditions {
                    ctx.add_rule_conditional(act, syscall, std::slice::from_ref(c)).map_err(err(&what))?;
                }
            } else {
                ctx.add_rule_conditional(act, syscall, &conditions).map_err(err(&what))?;
            }
        }
    }
    Ok(Filter { ctx, notify })
}

/// Load the filter into this process. With notify rules, returns the
/// listener fd (close-on-exec) for the parent to pass to listenerPath.
pub(super) fn load(filter: &Filter) -> Result<Option<RawFd>> {
    filter.ctx.load().map_err(err("load filter"))?;
    if !filter.notify {
        return Ok(None);
    }
    filter.ctx.get_notify_fd().map(Some).map_err(err("get the listener fd"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_full_profile_compiles() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,
                "architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
                "flags":["SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                "syscalls":[
                  {"names":["read","write","no_such_syscall_anywhere"],"action":"SCMP_ACT_ALLOW"},
                  {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[
                     {"index":0,"value":0,"op":"SCMP_CMP_EQ"},{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
                  {"names":["clone"],"action":"SCMP_ACT_ALLOW","args":[
                     {"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},
                  {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
                  {"names":["kill"],"action":"SCMP_ACT_LOG"}]}"#,
        );
        build(&p).unwrap();
    }

    #[test]
    fn notify_needs_a_listener_and_cannot_be_the_default() {
        let p = profile(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#);
        assert!(build(&p).err().unwrap().contains("needs linux.seccomp.listenerPath"));
        let p = profile(r#"{"defaultAction":"SCMP_ACT_NOTIFY","listenerPath":"/l"}"#);
        assert!(build(&p).err().unwrap().contains("cannot be the defaultAction"));
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/l","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        );
        assert!(build(&p).unwrap().notify);
    }
}
