//! The differential probe: a busybox script (probe.sh) that prints what a
//! container sees, and the normalisation that makes two runtimes' prints
//! comparable line by line. Only what legitimately differs between two runs of
//! the same container is normalised here (mount ids, device numbers, snapshot
//! paths, the order of unrelated mounts).

use std::collections::BTreeMap;
use std::fmt::Write;

/// `sh -c PROBE` prints "== section" headers followed by that section's lines.
pub const PROBE: &str = include_str!("probe.sh");

/// One run of the probe, section name -> normalised lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    sections: BTreeMap<String, Vec<String>>,
}

impl Probe {
    /// Parses the probe's stdout. A terminal's `\r\n` counts as `\n`. Fails when
    /// the probe did not get to its last section.
    pub fn parse(stdout: &str) -> Result<Probe, String> {
        let mut sections: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut current = None;
        for line in stdout.lines().map(|l| l.trim_end_matches('\r')) {
            if let Some(name) = line.strip_prefix("== ") {
                current = Some(name.to_string());
                sections.entry(name.to_string()).or_default();
            } else if let Some(name) = &current {
                let lines = sections.get_mut(name).expect("entry made at its header");
                lines.push(line.to_string());
            }
        }
        if !sections.contains_key("end") {
            return Err(format!("the probe did not finish:\n{stdout}"));
        }
        if let Some(mounts) = sections.get_mut("mountinfo") {
            *mounts = mounts.iter().map(|l| normalise_mountinfo(l)).collect();
            // Runtimes mount unrelated things in different orders (runc binds
            // devices in the spec's order and /dev/console before the masks);
            // what is visible is checked by the dev, masked and writable
            // sections. Mounts stacked on one mount point keep their order.
            mounts.sort_by(|a, b| mount_point(a).cmp(mount_point(b)));
        }
        Ok(Probe { sections })
    }

    pub fn section(&self, name: &str) -> &[String] {
        self.sections.get(name).map_or(&[], Vec::as_slice)
    }

    /// Replaces the line `from` of `section` with `to`: a test's documented
    /// allowance for a deliberate difference. Panics when `from` is not there,
    /// so an allowance cannot outlive the difference it was made for.
    pub fn replace_line(&mut self, section: &str, from: &str, to: &str) {
        let lines = self.sections.get_mut(section);
        let line = lines.and_then(|l| l.iter_mut().find(|l| *l == from));
        *line.unwrap_or_else(|| panic!("no line {from:?} in section {section}")) = to.to_string();
    }

    /// Empty when both probes saw the same; else each differing section with the
    /// lines only one side has.
    pub fn differences(&self, reference: &str, other: &Probe, name: &str) -> String {
        let mut report = String::new();
        let names = self.sections.keys().chain(other.sections.keys());
        let mut seen = std::collections::BTreeSet::new();
        for section in names.filter(|n| seen.insert(*n)) {
            let (a, b) = (self.section(section), other.section(section));
            if a == b {
                continue;
            }
            let _ = writeln!(report, "section {section}:");
            for line in a.iter().filter(|l| !b.contains(l)) {
                let _ = writeln!(report, "  only {reference}: {line}");
            }
            for line in b.iter().filter(|l| !a.contains(l)) {
                let _ = writeln!(report, "  only {name}:  {line}");
            }
            if a.iter().all(|l| b.contains(l)) && b.iter().all(|l| a.contains(l)) {
                let _ = writeln!(report, "  same lines, different order or count");
                let _ = writeln!(report, "  {reference}: {a:#?}\n  {name}: {b:#?}");
            }
        }
        report
    }
}

/// The second field of a normalised mountinfo line.
fn mount_point(line: &str) -> &str {
    line.split(' ').nth(1).unwrap_or("")
}

/// `id parent maj:min root mountpoint opts [optional…] - fstype source superopts`
/// becomes `root mountpoint opts [optional…] - fstype source superopts` with the
/// per-boot numbers gone: peer group ids (`shared:N` -> `shared`), the source and
/// options of the rootfs overlay (snapshot paths), tmpfs sizes are kept.
fn normalise_mountinfo(line: &str) -> String {
    let fields: Vec<&str> = line.split(' ').collect();
    let Some(dash) = fields.iter().position(|f| *f == "-") else {
        return line.to_string();
    };
    if fields.len() < dash + 4 || dash < 6 {
        return line.to_string();
    }
    let optional = fields[6..dash]
        .iter()
        .map(|f| f.split(':').next().unwrap_or(f));
    let fstype = fields[dash + 1];
    let (source, superopts) = if fstype == "overlay" {
        ("overlay", "(snapshot)".to_string())
    } else {
        (fields[dash + 2], fields[dash + 3..].join(" "))
    };
    let mut out = vec![fields[3], fields[4], fields[5]];
    out.extend(optional);
    out.extend(["-", fstype, source, &superopts]);
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_loses_ids_device_numbers_and_snapshot_paths() {
        let root = "1204 1100 0:88 / / rw,relatime shared:7 master:2 - overlay overlay rw,lowerdir=/a,upperdir=/b";
        assert_eq!(
            normalise_mountinfo(root),
            "/ / rw,relatime shared master - overlay overlay (snapshot)"
        );
        let proc = "1205 1204 0:90 / /proc rw,nosuid - proc proc rw";
        assert_eq!(
            normalise_mountinfo(proc),
            "/ /proc rw,nosuid - proc proc rw"
        );
    }

    #[test]
    fn sections_parse_and_compare() {
        let a = Probe::parse("== id\r\r\nuid=0\r\n== end\n").unwrap();
        let b = Probe::parse("== id\nuid=1\n== end\n").unwrap();
        assert_eq!(a.section("id"), ["uid=0"]);
        assert_eq!(a.differences("runc", &a, "ferrum"), "");
        let diff = a.differences("runc", &b, "ferrum");
        assert!(
            diff.contains("only runc: uid=0") && diff.contains("only ferrum:  uid=1"),
            "{diff}"
        );
        assert!(Probe::parse("== id\nuid=0\n").is_err());
        let stacked = "== mountinfo\n1 0 0:1 / /b rw - tmpfs a rw\n2 0 0:2 / /a rw - tmpfs b rw\n\
                       3 0 0:3 / /a rw - tmpfs c rw\n== end\n";
        let mounts = Probe::parse(stacked).unwrap();
        let sources: Vec<&str> = mounts
            .section("mountinfo")
            .iter()
            .map(|l| &l[l.len() - 4..])
            .collect();
        assert_eq!(
            sources,
            ["b rw", "c rw", "a rw"],
            "by mount point, stacking kept"
        );
    }
}
