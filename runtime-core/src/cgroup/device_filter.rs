//! linux.resources.devices on cgroup v2: an eBPF program of type
//! BPF_PROG_TYPE_CGROUP_DEVICE attached to the container's cgroup, which the
//! kernel asks on every open and mknod of a device node.
//!
//! The spec's rules follow v1's devices.allow/deny semantics: applied in
//! order, a full wildcard rule ("a", all access) resets the default, any other
//! rule adds an exception to it or takes one back. As runc, the list starts
//! as deny-all and runc's always-allowed devices are appended; the result
//! (a default and its exceptions) is assembled by hand into BPF instructions —
//! a handful per exception, no compiler or BPF library needed.
//!
//! Attached with BPF_F_ALLOW_MULTI (a nested cgroup manager may add its own);
//! on update the new program is attached first and the previous ones
//! detached after, so no device is ever reachable in between.

use super::{cg_err, Cgroup};
use crate::error::Result;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

// From linux/bpf.h.
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_DETACH: libc::c_int = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_PROG_QUERY: libc::c_int = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;
// The context's access_type: (access << 16) | device type.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
pub(super) const ACC_MKNOD: u8 = 1;
pub(super) const ACC_READ: u8 = 2;
pub(super) const ACC_WRITE: u8 = 4;
const ACC_ALL: u8 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// One rule: `kind` 'b' or 'c' (None: both), `None` numbers are wildcards.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Rule {
    pub allow: bool,
    pub kind: Option<char>,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub access: u8,
}

impl Rule {
    pub fn from_spec(r: &LinuxDeviceCgroup) -> Rule {
        let kind = match r.typ() {
            Some(LinuxDeviceType::B) => Some('b'),
            Some(LinuxDeviceType::C | LinuxDeviceType::U) => Some('c'),
            _ => None,
        };
        let access = r.access().as_deref().map_or(ACC_ALL, parse_access);
        Rule {
            allow: r.allow(),
            kind,
            major: r.major().filter(|m| *m >= 0),
            minor: r.minor().filter(|m| *m >= 0),
            access,
        }
    }

    /// "c 1:3 rwm" (v1's devices.allow syntax, as runc's default list is written).
    pub fn parse_allow(s: &str) -> Option<Rule> {
        let mut parts = s.split_whitespace();
        let kind = match parts.next()? {
            "a" => None,
            k => Some(k.chars().next()?),
        };
        let (major, minor) = parts.next()?.split_once(':')?;
        let number = |n: &str| if n == "*" { Some(None) } else { n.parse().ok().map(Some) };
        Some(Rule {
            allow: true,
            kind,
            major: number(major)?,
            minor: number(minor)?,
            access: parse_access(parts.next()?),
        })
    }

    fn same_devices(&self, other: &Rule) -> bool {
        (self.kind, self.major, self.minor) == (other.kind, other.major, other.minor)
    }

    fn is_reset(&self) -> bool {
        self.kind.is_none() && self.major.is_none() && self.minor.is_none() && self.access == ACC_ALL
    }
}

fn parse_access(s: &str) -> u8 {
    s.chars().fold(0, |acc, c| match c {
        'r' => acc | ACC_READ,
        'w' => acc | ACC_WRITE,
        'm' => acc | ACC_MKNOD,
        _ => acc,
    })
}

/// The spec's rules followed by runc's always-allowed devices, as every
/// container gets them (whatever the cgroup version or driver).
pub(super) fn with_runc_defaults(spec_rules: &[LinuxDeviceCgroup]) -> Vec<Rule> {
    let defaults = super::resources::RUNC_ALLOWED_DEVICES.iter().filter_map(|r| Rule::parse_allow(r));
    spec_rules.iter().map(Rule::from_spec).chain(defaults).collect()
}

/// The rules' net effect: whether unmatched accesses are allowed, and the
/// exceptions to that default.
pub(super) fn effective(rules: &[Rule]) -> (bool, Vec<Rule>) {
    let mut default_allow = false;
    let mut exceptions: Vec<Rule> = Vec::new();
    for rule in rules {
        if rule.is_reset() {
            default_allow = rule.allow;
            exceptions.clear();
        } else if rule.allow == default_allow {
            // Takes back (part of) an exception for the same devices.
            for ex in exceptions.iter_mut().filter(|e| e.same_devices(rule)) {
                ex.access &= !rule.access;
            }
            exceptions.retain(|e| e.access != 0);
        } else if let Some(ex) = exceptions.iter_mut().find(|e| e.same_devices(rule)) {
            ex.access |= rule.access;
        } else {
            exceptions.push(rule.clone());
        }
    }
    (default_allow, exceptions)
}

/// struct bpf_insn.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}
const LDX_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const AND32_K: u8 = 0x54;
const RSH32_K: u8 = 0x74;
const MOV32_K: u8 = 0xb4;
const MOV32_X: u8 = 0xbc;
const JNE_K: u8 = 0x55;
const JEQ_K: u8 = 0x15;
const EXIT: u8 = 0x95;

/// The program. Registers: r2 device type, r3 requested access, r4 major,
/// r5 minor; r1 (the context pointer, not needed after the loads) is scratch.
pub(super) fn program(default_allow: bool, exceptions: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND32_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, 0, 0),
        insn(RSH32_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    for ex in exceptions {
        // Each `None` offset jumps past this block: patched once its length is known.
        let mut block: Vec<(Insn, bool)> = Vec::new();
        match ex.kind {
            Some('b') => block.push((insn(JNE_K, 2, 0, 0, DEV_BLOCK), true)),
            Some(_) => block.push((insn(JNE_K, 2, 0, 0, DEV_CHAR), true)),
            None => {}
        }
        if let Some(major) = ex.major {
            block.push((insn(JNE_K, 4, 0, 0, major as i32), true));
        }
        if let Some(minor) = ex.minor {
            block.push((insn(JNE_K, 5, 0, 0, minor as i32), true));
        }
        if ex.access != ACC_ALL {
            block.push((insn(MOV32_X, 1, 3, 0, 0), false));
            if ex.allow {
                // Allowed only if every requested access is in the exception.
                block.push((insn(AND32_K, 1, 0, 0, i32::from(!ex.access & ACC_ALL)), false));
                block.push((insn(JNE_K, 1, 0, 0, 0), true));
            } else {
                // Denied if any requested access is.
                block.push((insn(AND32_K, 1, 0, 0, i32::from(ex.access)), false));
                block.push((insn(JEQ_K, 1, 0, 0, 0), true));
            }
        }
        block.push((insn(MOV32_K, 0, 0, 0, i32::from(ex.allow)), false));
        block.push((insn(EXIT, 0, 0, 0, 0), false));
        let len = block.len();
        p.extend(block.into_iter().enumerate().map(|(i, (mut ins, skip))| {
            if skip {
                ins.off = (len - i - 1) as i16;
            }
            ins
        }));
    }
    p.push(insn(MOV32_K, 0, 0, 0, i32::from(default_allow)));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

/// The bpf(2) syscall with an attribute struct of ours (the kernel takes a
/// shorter one than its own as long as what we pass is ours to fill).
fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid, fully initialised #[repr(C)] struct of the size passed.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn fd_from(r: libc::c_long) -> OwnedFd {
    // SAFETY: a new fd the kernel just returned to us.
    unsafe { OwnedFd::from_raw_fd(r as RawFd) }
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

fn load(insns: &[Insn]) -> io::Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 16 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..Default::default()
    };
    bpf(BPF_PROG_LOAD, &mut attr).map(fd_from).map_err(|e| {
        let verifier = String::from_utf8_lossy(&log[..log.iter().position(|b| *b == 0).unwrap_or(0)]).into_owned();
        io::Error::new(
            e.kind(),
            format!("load the device filter: {e}; verifier: {}", verifier.trim()),
        )
    })
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// The ids of the device programs attached to the cgroup itself.
fn attached(cgroup: &OwnedFd) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = QueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr)?;
    ids.truncate(attr.prog_cnt as usize);
    Ok(ids)
}

fn attach_cmd(cmd: libc::c_int, cgroup: &OwnedFd, prog: &OwnedFd) -> io::Result<()> {
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: if cmd == BPF_PROG_ATTACH { BPF_F_ALLOW_MULTI } else { 0 },
    };
    bpf(cmd, &mut attr).map(drop)
}

/// Load the program for `rules` and make it the cgroup's only device filter.
fn replace_filter(dir: &Path, rules: &[Rule]) -> io::Result<()> {
    let (default_allow, exceptions) = effective(rules);
    let prog = load(&program(default_allow, &exceptions))?;
    let cgroup: OwnedFd = std::fs::File::open(dir)?.into();
    let previous = attached(&cgroup)?;
    attach_cmd(BPF_PROG_ATTACH, &cgroup, &prog)?;
    for id in previous {
        let mut attr = GetFdByIdAttr {
            prog_id: id,
            ..Default::default()
        };
        // Gone meanwhile (another manager detached it): nothing to do.
        let Ok(old) = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).map(fd_from) else {
            continue;
        };
        attach_cmd(BPF_PROG_DETACH, &cgroup, &old)?;
    }
    Ok(())
}

impl Cgroup {
    /// The spec's rules plus runc's always-allowed devices as the v2 cgroup's filter.
    pub(super) fn apply_device_filter(&self, dir: &Path, spec_rules: &[LinuxDeviceCgroup]) -> Result<()> {
        replace_filter(dir, &with_runc_defaults(spec_rules)).map_err(cg_err(dir, "linux.resources.devices: attach the eBPF device filter"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(allow: bool, kind: Option<char>, major: Option<i64>, minor: Option<i64>, access: &str) -> Rule {
        Rule {
            allow,
            kind,
            major,
            minor,
            access: parse_access(access),
        }
    }

    #[test]
    fn rules_reduce_to_a_default_and_exceptions_as_v1_does() {
        let rules = [
            rule(true, None, None, None, "rwm"),
            rule(false, None, None, None, "rwm"),
            rule(true, Some('c'), Some(1), Some(3), "rw"),
            rule(true, Some('c'), Some(1), Some(3), "m"),
            rule(true, Some('b'), Some(8), None, "r"),
            rule(false, Some('b'), Some(8), None, "r"),
        ];
        let (default_allow, ex) = effective(&rules);
        assert!(!default_allow);
        assert_eq!(ex, [rule(true, Some('c'), Some(1), Some(3), "rwm")]);
        assert_eq!(
            Rule::parse_allow("c 136:* rwm"),
            Some(rule(true, Some('c'), Some(136), None, "rwm"))
        );
        assert_eq!(
            Rule::parse_allow("b *:* m"),
            Some(rule(true, Some('b'), None, None, "m"))
        );
    }

    #[test]
    fn each_exception_skips_to_the_next_when_it_does_not_match() {
        let p = program(false, &[rule(true, Some('c'), Some(1), None, "rw")]);
        // 6 loads; type, major, access (mov, and, jne), return allow; default deny.
        assert_eq!(p.len(), 6 + 7 + 2);
        let block = &p[6..13];
        // Every jump lands right after the block, on the default.
        for (i, ins) in block.iter().enumerate().filter(|(_, i)| i.code == JNE_K) {
            assert_eq!(i as i16 + 1 + ins.off, 7, "{ins:?}");
        }
        assert_eq!(block[3].imm, i32::from(ACC_MKNOD), "anything beyond rw fails the match");
        assert_eq!(p[13], insn(MOV32_K, 0, 0, 0, 0));
    }
}
