//! A new network namespace starts with `lo` down; runc (and crun, youki)
//! bring it up, so that 127.0.0.1 works in every container without a CNI.

use super::Result;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `struct ifreq` with the flags member of its union (linux/if.h), padded to size.
#[repr(C)]
struct IfreqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

pub(super) fn bring_up() -> Result<()> {
    let err = |what: &str| format!("bring up the loopback interface: {what}: {}", std::io::Error::last_os_error());
    // SAFETY: socket returns a new fd that we own.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err("socket"));
    }
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfreqFlags { name: [0; libc::IFNAMSIZ], flags: 0, _pad: [0; 22] };
    req.name[..2].copy_from_slice(b"lo");
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write an ifreq we own.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(err("get flags"));
        }
        req.flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(err("set flags"));
        }
    }
    Ok(())
}
