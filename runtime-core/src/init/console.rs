//! process.terminal: a pty from the container's own devpts instance. The slave
//! becomes the process's stdio and controlling terminal; the master goes to the
//! parent (the shim copies between it and the client).

use super::{Describe, Result};
use nix::mount::{mount, MsFlags};
use oci_spec::runtime::Box as ConsoleSize;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

nix::ioctl_write_ptr_bad!(set_lock, libc::TIOCSPTLCK, libc::c_int);
nix::ioctl_read_bad!(get_number, libc::TIOCGPTN, libc::c_uint);

pub(super) struct Console {
    pub master: OwnedFd,
    /// /dev/pts/N inside the container.
    pub slave_path: PathBuf,
}

/// Open a pty (through /dev/ptmx, which init made point at the container's
/// devpts), make it our stdio and controlling terminal.
pub(super) fn create(size: Option<ConsoleSize>, uid: u32) -> Result<Console> {
    let master: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open("/dev/ptmx")
        .describe(|| "open /dev/ptmx for the console".into())?
        .into();
    let mut n: libc::c_uint = 0;
    // SAFETY: ioctls on the master we own, with valid pointers.
    unsafe {
        set_lock(master.as_raw_fd(), &0).describe(|| "unlock pty".into())?;
        get_number(master.as_raw_fd(), &mut n).describe(|| "pty number".into())?;
    }
    // TIOCGPTPEER opens the slave through the master: no path lookup an image could redirect.
    // SAFETY: ioctl returning a new fd we then own.
    let slave = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY) };
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
        if libc::setsid() < 0 || libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) < 0 {
            return Err(format!("make the console our controlling terminal: {}", std::io::Error::last_os_error()));
        }
        for fd in 0..3 {
            if libc::dup2(slave.as_raw_fd(), fd) < 0 {
                return Err(format!("console as stdio: {}", std::io::Error::last_os_error()));
            }
        }
    }
    Ok(Console { master, slave_path: PathBuf::from(format!("/dev/pts/{n}")) })
}

/// /dev/console in the container is its console's slave, as with runc.
pub(super) fn bind_dev_console(console: &Console) -> Result<()> {
    let target = std::path::Path::new("/dev/console");
    if !target.exists() {
        std::fs::File::create(target).describe(|| "create /dev/console".into())?;
    }
    mount(Some(&console.slave_path), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        .describe(|| format!("bind {} on /dev/console", console.slave_path.display()))
}
