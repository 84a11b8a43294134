//! process.terminal: a pty from the container's own devpts instance. The slave
//! becomes the process's stdio and controlling terminal; the master goes to the
//! parent (the shim copies between it and the client).
//!
//! Nothing here is reached by a path an image or a volume could redirect (the
//! CVE-2025-52565 class): the ptmx is opened O_PATH and checked to be a devpts
//! ptmx before it is opened for real, the slave comes from the master
//! (TIOCGPTPEER), and /dev/console gets the slave by fd, on a /dev/console
//! that is opened, never followed.

use super::paths::{open_in_root, open_process_root, Leaf};
use super::{Describe, Result};
use crate::procfs;
use nix::sys::stat::{fstat, SFlag};
use nix::sys::statfs::{fstatfs, DEVPTS_SUPER_MAGIC};
use oci_spec::runtime::Box as ConsoleSize;
use pathrs::flags::OpenFlags;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

nix::ioctl_write_ptr_bad!(set_lock, libc::TIOCSPTLCK, libc::c_int);

pub(super) struct Console {
    pub master: OwnedFd,
    slave: OwnedFd,
}

/// devpts gives its ptmx node inode 2, always.
const PTMX_INO: u64 = 2;

/// The container's /dev/pts/ptmx, checked to be the ptmx of a devpts (as
/// runc: a /dev bound from the host still has the host's devpts there).
fn open_ptmx(root: BorrowedFd) -> Result<OwnedFd> {
    let what = || "open /dev/pts/ptmx for the console".to_string();
    let handle = open_in_root(root, Path::new("/dev/pts/ptmx")).describe(what)?;
    let st = fstat(&handle).describe(what)?;
    let on_devpts = fstatfs(&handle).is_ok_and(|fs| fs.filesystem_type() == DEVPTS_SUPER_MAGIC);
    let is_ptmx = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR
        && st.st_ino == PTMX_INO
        && (libc::major(st.st_rdev), libc::minor(st.st_rdev)) == (5, 2);
    if !(on_devpts && is_ptmx) {
        return Err("/dev/pts/ptmx is not the ptmx of a devpts filesystem: no console can be made".into());
    }
    procfs::reopen(handle.as_fd(), OpenFlags::O_RDWR | OpenFlags::O_NOCTTY).describe(what)
}

/// Open a pty of the container's devpts, make its slave our stdio and
/// controlling terminal.
pub(super) fn create(size: Option<ConsoleSize>, uid: u32) -> Result<Console> {
    let root = open_root()?;
    let master = open_ptmx(root.as_fd())?;
    // SAFETY: ioctls on the master we own, with valid pointers.
    unsafe { set_lock(master.as_raw_fd(), &0).describe(|| "unlock pty".into())? };
    // TIOCGPTPEER opens the slave through the master: no path lookup at all.
    // SAFETY: ioctl returning a new fd we then own.
    let slave = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if slave < 0 {
        return Err(format!("open pty slave: {}", std::io::Error::last_os_error()));
    }
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    // SAFETY: fchown/ioctl/setsid/dup2 on fds we own.
    unsafe {
        // The group stays devpts' (tty, gid=5 in containerd's mount), as runc:
        // tools like write(1) rely on it.
        if libc::fchown(slave.as_raw_fd(), uid, u32::MAX) < 0 {
            return Err(format!("chown console: {}", std::io::Error::last_os_error()));
        }
        if let Some(size) = size {
            let ws = libc::winsize { ws_row: size.height() as u16, ws_col: size.width() as u16, ws_xpixel: 0, ws_ypixel: 0 };
            libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
        // A container's init has made its session already (see process).
        let leader = libc::getsid(0) == libc::getpid();
        if (!leader && libc::setsid() < 0) || libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) < 0 {
            return Err(format!("make the console our controlling terminal: {}", std::io::Error::last_os_error()));
        }
        for fd in 0..3 {
            if libc::dup2(slave.as_raw_fd(), fd) < 0 {
                return Err(format!("console as stdio: {}", std::io::Error::last_os_error()));
            }
        }
    }
    Ok(Console { master, slave })
}

fn open_root() -> Result<OwnedFd> {
    open_process_root().describe(|| "open the container's root".into())
}

/// /dev/console in the container is its console's slave, as with runc: a bind
/// of the slave's fd onto /dev/console, which must be a file or a device of
/// /dev itself. A symlink there is refused, never followed.
pub(super) fn bind_dev_console(console: &Console) -> Result<()> {
    let what = || "bind the console on /dev/console".to_string();
    let root = open_root()?;
    let dev = open_in_root(root.as_fd(), Path::new("/dev")).describe(what)?;
    let target = super::paths::open_or_create_at(dev.as_fd(), "console", Leaf::File, 0o666).describe(what)?;
    let st = fstat(&target).describe(what)?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if kind != SFlag::S_IFREG && kind != SFlag::S_IFCHR {
        let is = if kind == SFlag::S_IFLNK { "a symlink" } else { "neither a file nor a device" };
        return Err(format!("/dev/console is {is}: refusing to mount the console there"));
    }
    use crate::sys::Sys;
    crate::sys::Kernel.bind_fd(console.slave.as_fd(), target.as_fd(), false).describe(what)
}

impl Console {
    pub(super) fn into_master(self) -> OwnedFd {
        self.master
    }
}
