//! A session keyring of the container's own (as runc, unless NoNewKeyring):
//! without it, every container shares the session keyring the runtime was
//! started with, and keys stored by one are visible to the next.

use super::Result;
use std::ffi::CString;

const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
const KEYCTL_SETPERM: libc::c_long = 5;
const KEYCTL_DESCRIBE: libc::c_long = 6;
/// KEY_GRP_SEARCH: the possessor's group may search the ring (runc sets it).
const GROUP_SEARCH: u32 = 0x0008_0000;

/// Join a new session keyring named `_ses.<id>` and make it group-searchable.
/// A kernel without keyrings (ENOSYS) is no error: the protection is best-effort.
pub(super) fn join_new_session(id: &str) -> Result<()> {
    let name = CString::new(format!("_ses.{id}")).map_err(|_| "container id contains a NUL byte")?;
    // SAFETY: keyctl with a valid C string.
    let ring = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    if ring < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOSYS) => Ok(()),
            _ => Err(format!("join a session keyring of the container's own: {e}")),
        };
    }
    let perm = permissions(ring).map_err(|e| format!("describe the session keyring: {e}"))?;
    // SAFETY: keyctl on the ring we just joined.
    if unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_SETPERM, ring, perm | GROUP_SEARCH) } < 0 {
        return Err(format!("set session keyring permissions: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The permission mask from KEYCTL_DESCRIBE's "type;uid;gid;perm;description".
fn permissions(ring: libc::c_long) -> std::io::Result<u32> {
    let mut buf = [0u8; 512];
    // SAFETY: keyctl writes at most buf.len() bytes into buf.
    let n = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_DESCRIBE, ring, buf.as_mut_ptr(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let text = String::from_utf8_lossy(&buf[..(n as usize).min(buf.len())]);
    parse_permissions(&text).ok_or_else(|| std::io::Error::other(format!("unexpected description {text:?}")))
}

fn parse_permissions(description: &str) -> Option<u32> {
    u32::from_str_radix(description.split(';').nth(3)?, 16).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn permissions_are_the_fourth_field_in_hex() {
        assert_eq!(super::parse_permissions("keyring;0;0;3f1b0000;_ses.c1\0"), Some(0x3f1b_0000));
        assert_eq!(super::parse_permissions("keyring;0;0"), None);
    }
}
