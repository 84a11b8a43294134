//! linux.resources.blockIO: v1's blkio controller, v2's io controller.
//!
//! v1 writes the spec's values as they are; v2 converts the weight [10, 1000]
//! to io.weight's [1, 10000] as runc does, except for BFQ's io.bfq.weight which
//! takes the v1 range. A file the kernel lacks (BFQ group scheduling not built,
//! no iocost) fails the container with the file and value named, as any refusal.
//!
//! Also the usage figures: v1's blkio.* statistics (the throttle ones where
//! the kernel has no others, as containerd reads them) and v2's io.stat.

use super::resources::write;
use super::Cgroup;
use crate::error::Result;
use oci_spec::runtime::{LinuxBlockIo, LinuxThrottleDevice};
use std::path::Path;

/// runc's conversion of a blkio weight [10, 1000] to io.weight [1, 10000].
pub(crate) fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    let w = u64::from(weight.clamp(10, 1000));
    1 + (w - 10) * 9999 / 990
}

/// The throttle lists with the v1 file and the v2 io.max key of each.
fn throttles(b: &LinuxBlockIo) -> [(&Option<Vec<LinuxThrottleDevice>>, &'static str, &'static str); 4] {
    [
        (b.throttle_read_bps_device(), "blkio.throttle.read_bps_device", "rbps"),
        (b.throttle_write_bps_device(), "blkio.throttle.write_bps_device", "wbps"),
        (
            b.throttle_read_iops_device(),
            "blkio.throttle.read_iops_device",
            "riops",
        ),
        (
            b.throttle_write_iops_device(),
            "blkio.throttle.write_iops_device",
            "wiops",
        ),
    ]
}

/// A weight the spec sets: 0 is none, as runc reads it (Docker 20.10 sends
/// `blockIO.weight: 0` for every container; the kernel refuses it).
fn set(weight: Option<u16>) -> Option<u16> {
    weight.filter(|w| *w != 0)
}

/// BFQ's weight files when the kernel has them, else the generic ones.
fn weight_files<'a>(d: &Path, bfq: &'a str, generic: &'a str) -> (&'a str, bool) {
    if d.join(bfq).exists() {
        (bfq, true)
    } else {
        (generic, false)
    }
}

impl Cgroup {
    pub(super) fn apply_block_io_v1(&self, b: &LinuxBlockIo) -> Result<()> {
        let Some(d) = self.dir_with("blkio.throttle.read_bps_device") else {
            return Err(self.missing_controller("blockIO", "blkio"));
        };
        let (weight, _) = weight_files(d, "blkio.bfq.weight", "blkio.weight");
        let (weight_device, _) = weight_files(d, "blkio.bfq.weight_device", "blkio.weight_device");
        if let Some(w) = set(b.weight()) {
            write(d, weight, &w.to_string())?;
        }
        if let Some(w) = set(b.leaf_weight()) {
            write(d, "blkio.leaf_weight", &w.to_string())?;
        }
        for dev in b.weight_device().iter().flatten() {
            if let Some(w) = set(dev.weight()) {
                write(d, weight_device, &format!("{}:{} {w}", dev.major(), dev.minor()))?;
            }
            if let Some(w) = set(dev.leaf_weight()) {
                write(
                    d,
                    "blkio.leaf_weight_device",
                    &format!("{}:{} {w}", dev.major(), dev.minor()),
                )?;
            }
        }
        for (list, file, _) in throttles(b) {
            for t in list.iter().flatten() {
                write(d, file, &format!("{}:{} {}", t.major(), t.minor(), t.rate()))?;
            }
        }
        Ok(())
    }

    /// leafWeight has no v2 equivalent: a warning, as runc ignores it.
    pub(super) fn apply_block_io_v2(&self, d: &Path, b: &LinuxBlockIo, warnings: &mut Vec<String>) -> Result<()> {
        let (weight, bfq) = weight_files(d, "io.bfq.weight", "io.weight");
        let value = |w: u16| {
            if bfq {
                w.to_string()
            } else {
                blkio_weight_to_io_weight(w).to_string()
            }
        };
        if let Some(w) = set(b.weight()) {
            write(d, weight, &format!("default {}", value(w)))?;
        }
        for dev in b.weight_device().iter().flatten() {
            if let Some(w) = set(dev.weight()) {
                write(d, weight, &format!("{}:{} {}", dev.major(), dev.minor(), value(w)))?;
            }
        }
        if set(b.leaf_weight()).is_some() || b.weight_device().iter().flatten().any(|w| set(w.leaf_weight()).is_some()) {
            warnings.push("linux.resources.blockIO.leafWeight: cgroup v2 has no leaf weight, ignored".into());
        }
        for (list, _, key) in throttles(b) {
            for t in list.iter().flatten() {
                write(d, "io.max", &format!("{}:{} {key}={}", t.major(), t.minor(), t.rate()))?;
            }
        }
        Ok(())
    }
}

/// One line of a v1 blkio statistics file ("8:0 Read 4096"; no op in some files).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BlkioEntry {
    pub op: String,
    /// "/dev/NAME" when the kernel knows the device.
    pub device: String,
    pub major: u64,
    pub minor: u64,
    pub value: u64,
}

/// One device of v2's io.stat.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IoEntry {
    pub major: u64,
    pub minor: u64,
    pub rbytes: u64,
    pub wbytes: u64,
    pub rios: u64,
    pub wios: u64,
}

/// containerd's BlkIOStat fields and the v1 files they come from.
const BLKIO_FILES: [(&str, &str); 8] = [
    ("io_service_bytes_recursive", "blkio.io_service_bytes_recursive"),
    ("io_serviced_recursive", "blkio.io_serviced_recursive"),
    ("io_queued_recursive", "blkio.io_queued_recursive"),
    ("io_service_time_recursive", "blkio.io_service_time_recursive"),
    ("io_wait_time_recursive", "blkio.io_wait_time_recursive"),
    ("io_merged_recursive", "blkio.io_merged_recursive"),
    ("io_time_recursive", "blkio.time_recursive"),
    ("sectors_recursive", "blkio.sectors_recursive"),
];

/// Without CFQ's files (gone from current kernels) only the throttle
/// statistics remain; containerd falls back to them the same way.
const BLKIO_THROTTLE_FILES: [(&str, &str); 2] = [
    (
        "io_service_bytes_recursive",
        "blkio.throttle.io_service_bytes_recursive",
    ),
    ("io_serviced_recursive", "blkio.throttle.io_serviced_recursive"),
];

pub(super) fn blkio_stats(dir: &Path) -> std::collections::BTreeMap<&'static str, Vec<BlkioEntry>> {
    let read = |files: &[(&'static str, &str)]| -> std::collections::BTreeMap<&'static str, Vec<BlkioEntry>> {
        files
            .iter()
            .filter_map(|(field, file)| Some((*field, std::fs::read_to_string(dir.join(file)).ok()?)))
            .map(|(field, text)| (field, parse_blkio(&text)))
            .filter(|(_, entries)| !entries.is_empty())
            .collect()
    };
    let stats = read(&BLKIO_FILES);
    if stats.contains_key("io_serviced_recursive") {
        stats
    } else {
        read(&BLKIO_THROTTLE_FILES)
    }
}

fn parse_blkio(text: &str) -> Vec<BlkioEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dev, op, value) = match f.as_slice() {
                [dev, op, value] => (dev, op.to_string(), value),
                [dev, value] => (dev, String::new(), value),
                _ => return None,
            };
            let (major, minor) = dev.split_once(':')?;
            let (major, minor) = (major.parse().ok()?, minor.parse().ok()?);
            Some(BlkioEntry {
                op,
                device: device_name(major, minor),
                major,
                minor,
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// "/dev/vda" for 254:0, from the kernel's uevent of the device.
fn device_name(major: u64, minor: u64) -> String {
    std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent"))
        .ok()
        .and_then(|u| {
            u.lines()
                .find_map(|l| l.strip_prefix("DEVNAME="))
                .map(|n| format!("/dev/{n}"))
        })
        .unwrap_or_default()
}

pub(super) fn io_stats(dir: &Path) -> Vec<IoEntry> {
    parse_io_stat(&std::fs::read_to_string(dir.join("io.stat")).unwrap_or_default())
}

fn parse_io_stat(text: &str) -> Vec<IoEntry> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (major, minor) = f.next()?.split_once(':')?;
            let mut e = IoEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                ..Default::default()
            };
            for kv in f {
                let Some((k, v)) = kv.split_once('=') else { continue };
                let v = v.parse().unwrap_or(0);
                match k {
                    "rbytes" => e.rbytes = v,
                    "wbytes" => e.wbytes = v,
                    "rios" => e.rios = v,
                    "wios" => e.wios = v,
                    _ => {}
                }
            }
            Some(e)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkio_weights_convert_as_runc() {
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
        assert_eq!(blkio_weight_to_io_weight(1000), 10000);
    }

    #[test]
    fn blkio_and_io_stat_lines_parse() {
        let v1 = parse_blkio("7:0 Read 4096\n7:0 Write 0\nTotal 4096\n");
        assert_eq!(v1.len(), 2);
        assert_eq!(
            (v1[0].op.as_str(), v1[0].major, v1[0].minor, v1[0].value),
            ("Read", 7, 0, 4096)
        );
        let v2 = parse_io_stat("254:0 rbytes=512 wbytes=1024 rios=1 wios=2 dbytes=0 dios=0\n");
        assert_eq!(
            v2,
            [IoEntry {
                major: 254,
                minor: 0,
                rbytes: 512,
                wbytes: 1024,
                rios: 1,
                wios: 2
            }]
        );
    }
}
