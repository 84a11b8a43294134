//! The few /proc readers cleanup needs: mounts, processes, bound Unix sockets.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

pub(crate) struct Mount {
    pub mount_point: PathBuf,
    pub fstype: String,
}

/// Our mount namespace's mounts, in mount order. That is also containerd's and the
/// shims' namespace: what they mount (runc-v2's rootfs, the snapshotters' views)
/// the host sees.
pub(crate) fn mounts() -> Vec<Mount> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines().filter_map(parse_mountinfo_line).collect()
}

/// How many mounts our mount namespace has at `path` (stacked ones each).
pub fn mounts_at(path: &std::path::Path) -> usize {
    mounts().iter().filter(|m| m.mount_point == path).count()
}

/// The root mount of process `pid`: (fstype, superblock options), from its mountinfo.
pub fn root_mount(pid: u64) -> (String, String) {
    let mountinfo = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    mountinfo
        .lines()
        .find_map(|line| {
            let (fields, rest) = line.split_once(" - ")?;
            (fields.split(' ').nth(4)? == "/").then_some(())?;
            let rest: Vec<&str> = rest.split(' ').collect();
            Some((rest[0].to_string(), rest.get(2).unwrap_or(&"").to_string()))
        })
        .unwrap_or_else(|| panic!("no root mount in the mountinfo of {pid}"))
}

/// `id parent maj:min root MOUNT_POINT opts [optional…] - FSTYPE source superopts`
fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let mut fields = line.split(' ');
    let mount_point = unescape(fields.nth(4)?);
    let fstype = fields.skip_while(|f| *f != "-").nth(1)?.to_string();
    Some(Mount {
        mount_point: PathBuf::from(mount_point),
        fstype,
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) struct Process {
    pub pid: i32,
    pub cmdline: Vec<String>,
}

impl Process {
    pub fn environ_has(&self, var: &str) -> bool {
        fs::read(format!("/proc/{}/environ", self.pid))
            .map(|env| env.split(|b| *b == 0).any(|v| v == var.as_bytes()))
            .unwrap_or(false)
    }

    pub fn describe(&self) -> String {
        format!("pid {} ({})", self.pid, self.cmdline.join(" "))
    }
}

/// Every live process with a command line (zombies and kernel threads have none).
pub(crate) fn processes() -> Vec<Process> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            (!cmdline.is_empty()).then_some(Process { pid, cmdline })
        })
        .collect()
}

/// Filesystem paths of the Unix sockets `pid` has bound, e.g. a shim's
/// /run/containerd/s/<hash>, which a killed shim leaves behind.
pub(crate) fn bound_socket_paths(pid: i32) -> Vec<PathBuf> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let inodes: BTreeSet<String> = fds
        .filter_map(|fd| {
            let target = fs::read_link(fd.ok()?.path()).ok()?;
            let inode = target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?;
            Some(inode.to_string())
        })
        .collect();
    let Ok(table) = fs::read_to_string("/proc/net/unix") else {
        return Vec::new();
    };
    // Num RefCount Protocol Flags Type St Inode [Path]; abstract names start with '@'.
    let paths: BTreeSet<PathBuf> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (inode, path) = (fields.get(6)?, fields.get(7)?);
            (inodes.contains(*inode) && path.starts_with('/')).then(|| PathBuf::from(path))
        })
        .collect();
    paths.into_iter().collect()
}

/// The first child of `pid`, e.g. the program nsenter or unshare runs.
pub(crate) fn first_child(pid: i32) -> Option<i32> {
    let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

/// The inode of `pid`'s network namespace (`net:[INODE]`), which names it
/// for as long as anything holds it.
pub(crate) fn net_namespace(pid: i32) -> Option<u64> {
    let link = fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    link.to_str()?.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// Every live process in the network namespace with inode `inode`.
pub(crate) fn processes_in_net_namespace(inode: u64) -> Vec<Process> {
    processes().into_iter().filter(|p| net_namespace(p.pid) == Some(inode)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn mountinfo_lines() {
        let m = parse_mountinfo_line(
            r"44 27 0:39 / /tmp/a\040b/rootfs rw,relatime shared:5 master:1 - overlay overlay rw,lowerdir=/x",
        )
        .unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/tmp/a b/rootfs"));
        assert_eq!(m.fstype, "overlay");
        assert!(mounts().iter().any(|m| m.mount_point == Path::new("/proc")));
    }

    #[test]
    fn unescape_leaves_plain_backslashes() {
        assert_eq!(unescape(r"a\134b\011c\x"), "a\\b\tc\\x");
    }

    #[test]
    fn this_process_is_seen() {
        let me = std::process::id() as i32;
        assert!(processes().iter().any(|p| p.pid == me));
        let net = net_namespace(me).expect("our network namespace");
        assert!(processes_in_net_namespace(net).iter().any(|p| p.pid == me));
    }

    #[test]
    fn bound_sockets_are_found() {
        let path =
            std::env::temp_dir().join(format!("ferrum-procfs-test-{}.sock", std::process::id()));
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let found = bound_socket_paths(std::process::id() as i32);
        drop(listener);
        std::fs::remove_file(&path).unwrap();
        assert!(found.contains(&path), "{found:?}");
    }
}
