//! Finding the cgroup hierarchies of this host from /proc/self/mountinfo and
//! the caller's place in each from /proc/self/cgroup.

use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Hierarchy {
    /// Controllers as /proc/self/cgroup names them ("cpu,cpuacct",
    /// "name=systemd"); empty for the v2 hierarchy.
    pub key: String,
    pub mountpoint: PathBuf,
    /// The cgroup at the root of this mount (not "/" inside a cgroup namespace).
    pub mount_root: PathBuf,
    /// The caller's cgroup in this hierarchy, as /proc/self/cgroup says it.
    pub own: PathBuf,
}

impl Hierarchy {
    /// The directory for a spec's `cgroupsPath`, as runc reads it: cleaned
    /// first (runc's CleanPath), so that `..` never leads out of the hierarchy,
    /// nor out of the caller's cgroup for a relative path.
    pub fn dir_for(&self, cgroups_path: Option<&Path>, id: &str) -> PathBuf {
        let own = self.own_path();
        match cgroups_path {
            Some(p) if p.is_absolute() => self.mountpoint.join(beneath(p)),
            Some(p) if !p.as_os_str().is_empty() => self.mountpoint.join(own).join(beneath(p)),
            _ => self.mountpoint.join(own).join(id),
        }
    }

    /// The caller's cgroup relative to the mountpoint.
    pub fn own_path(&self) -> &Path {
        let rel = self.own.strip_prefix(&self.mount_root).unwrap_or(&self.own);
        rel.strip_prefix("/").unwrap_or(rel)
    }
}

/// `path` without `.`, `..` and its root: a `..` takes away the part before
/// it and nothing above the start.
fn beneath(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// True on a host whose only cgroup filesystem is cgroup2 at /sys/fs/cgroup.
pub fn is_pure_v2() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Where the cgroup filesystems of a host are mounted. A hierarchy mounted only
/// elsewhere is some tool's passing mount (one ending an unused v1 hierarchy,
/// say): containers must not get cgroups in it.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// One entry per hierarchy mounted below CGROUP_ROOT (bind mounts of the
/// same hierarchy are skipped).
pub(super) fn parse(mountinfo: &str, own_cgroups: &str) -> Vec<Hierarchy> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else { continue };
        let (Some(fstype), Some(superopts)) = (fields.get(sep + 1), fields.get(sep + 3)) else {
            continue;
        };
        let key = match *fstype {
            "cgroup2" => String::new(),
            "cgroup" => v1_key(superopts),
            _ => continue,
        };
        let mountpoint = PathBuf::from(unescape(fields[4]));
        if seen.contains(&key) || !mountpoint.starts_with(CGROUP_ROOT) {
            continue;
        }
        let Some(own) = own_cgroup(own_cgroups, &key) else { continue };
        seen.push(key.clone());
        out.push(Hierarchy {
            key,
            mountpoint,
            mount_root: unescape(fields[3]).into(),
            own: own.into(),
        });
    }
    out
}

/// The controller list as /proc/self/cgroup spells it ("cpu,cpuacct", "name=systemd").
fn v1_key(superopts: &str) -> String {
    const NOT_CONTROLLERS: [&str; 6] = ["rw", "ro", "noprefix", "clone_children", "xattr", "nsdelegate"];
    superopts
        .split(',')
        .filter(|o| !NOT_CONTROLLERS.contains(o) && !o.starts_with("release_agent="))
        .collect::<Vec<_>>()
        .join(",")
}

fn own_cgroup(own_cgroups: &str, key: &str) -> Option<String> {
    own_cgroups.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        // Controllers may be listed in another order than in the mount options.
        let same = {
            let mut a: Vec<&str> = ctrls.split(',').collect();
            let mut b: Vec<&str> = key.split(',').collect();
            a.sort_unstable();
            b.sort_unstable();
            a == b
        };
        same.then(|| path.to_string())
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v as char);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
99 31 0:32 / /mnt/memory-again rw,relatime - cgroup cgroup rw,memory
100 23 0:40 / /tmp/passing rw,relatime - cgroup cgroup rw,net_cls,net_prio
";
    const OWN: &str = "9:name=systemd:/\n5:net_cls,net_prio:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n";

    #[test]
    fn hybrid_host_has_each_hierarchy_once() {
        let h = parse(HYBRID, OWN);
        let mps: Vec<_> = h.iter().map(|h| h.mountpoint.clone()).collect();
        assert_eq!(
            mps,
            ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"]
                .map(PathBuf::from)
        );
    }

    #[test]
    fn cgroups_path_semantics_follow_runc() {
        let h = parse(HYBRID, OWN);
        let mem = &h[1];
        assert_eq!(
            mem.dir_for(Some(Path::new("/ns/c1")), "c1"),
            Path::new("/sys/fs/cgroup/memory/ns/c1")
        );
        assert_eq!(
            mem.dir_for(Some(Path::new("sub/c1")), "c1"),
            Path::new("/sys/fs/cgroup/memory/process_api/abc/sub/c1")
        );
        assert_eq!(mem.dir_for(None, "c1"), Path::new("/sys/fs/cgroup/memory/process_api/abc/c1"));
    }

    /// Found by the config.json fuzz suite: `..` left the hierarchy, so a spec
    /// could have the runtime create directories (and write limits and pids)
    /// anywhere on the host.
    #[test]
    fn dot_dot_stays_inside_the_hierarchy_as_in_runc() {
        let h = parse(HYBRID, OWN);
        let mem = &h[1];
        for (path, dir) in [
            ("a/../../b", "/sys/fs/cgroup/memory/process_api/abc/b"),
            ("/../../../etc", "/sys/fs/cgroup/memory/etc"),
            ("/ns/./c1/..//c2", "/sys/fs/cgroup/memory/ns/c2"),
            ("../../../../tmp/x", "/sys/fs/cgroup/memory/process_api/abc/tmp/x"),
        ] {
            assert_eq!(mem.dir_for(Some(Path::new(path)), "c1"), Path::new(dir), "{path}");
        }
    }

    #[test]
    fn cgroup_namespace_root_is_stripped() {
        let info = "41 31 0:38 /kube/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let h = parse(info, "0::/kube/pod1/ctr\n");
        assert_eq!(h[0].own_path(), Path::new("ctr"));
    }

    #[test]
    fn escaped_mountpoints_are_decoded() {
        assert_eq!(unescape("/a\\040b"), "/a b");
    }
}
