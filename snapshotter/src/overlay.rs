//! Which overlay mount options this kernel and this process need, decided
//! once at start-up as containerd's overlay snapshotter does.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// containerd adds `index=off` whenever the kernel knows the parameter: with the
/// index on, overlay refuses a lower layer that was used with another upper
/// before, which shared image layers always are.
pub fn supports_index_off() -> bool {
    Path::new("/sys/module/overlay/parameters/index").exists()
}

/// Whether overlay mounts need `userxattr`: only in a user namespace (where
/// trusted.* xattrs are out of reach, so overlay must keep whiteouts and
/// opaque markers in user.overlay.*) and only if the kernel knows the option
/// (5.11+), which a trial mount under `scratch` finds out — containerd's
/// `NeedsUserXAttr` decides the same way.
pub fn needs_userxattr(scratch: &Path) -> io::Result<bool> {
    let uid_map = fs::read_to_string("/proc/self/uid_map")?;
    if !in_user_namespace(&uid_map) {
        return Ok(false);
    }
    let probe = scratch.join("userxattr-check");
    let result = try_userxattr_mount(&probe);
    if let Err(err) = fs::remove_dir_all(&probe) {
        eprintln!(
            "ferrum-snapshotter: warning: removing {}: {err}",
            probe.display()
        );
    }
    result
}

/// The initial user namespace maps every id onto itself; any other map means
/// we run in a user namespace.
fn in_user_namespace(uid_map: &str) -> bool {
    let fields: Vec<&str> = uid_map.split_whitespace().collect();
    fields != ["0", "0", "4294967295"]
}

fn try_userxattr_mount(probe: &Path) -> io::Result<bool> {
    let _ = fs::remove_dir_all(probe);
    for dir in ["lower1", "lower2", "upper", "work", "merged"] {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(probe.join(dir))?;
    }
    let data = format!(
        "lowerdir={}:{},upperdir={},workdir={},userxattr",
        probe.join("lower2").display(),
        probe.join("lower1").display(),
        probe.join("upper").display(),
        probe.join("work").display(),
    );
    let merged = probe.join("merged");
    match mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    ) {
        Ok(()) => {
            umount2(&merged, MntFlags::MNT_DETACH)?;
            Ok(true)
        }
        // A kernel without userxattr (before 5.11) rejects the option.
        Err(_) => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_the_initial_user_namespace_from_others() {
        assert!(!in_user_namespace("         0          0 4294967295\n"));
        assert!(in_user_namespace("         0       1000          1\n"));
        assert!(in_user_namespace("0 100000 65536\n65536 1000 1\n"));
    }
}
