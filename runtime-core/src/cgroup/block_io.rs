//! linux.resources.blockIO: v1's blkio controller, v2's io controller.
//!
//! v1 writes the spec's values as they are; v2 converts the weight [10, 1000]
//! to io.weight's [1, 10000] as runc does, except for BFQ's io.bfq.weight which
//! takes the v1 range. A file the kernel lacks (BFQ group scheduling not built,
//! no iocost) fails the container with the file and value named, as any refusal.

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
        if let Some(w) = b.weight() {
            write(d, weight, &w.to_string())?;
        }
        if let Some(w) = b.leaf_weight() {
            write(d, "blkio.leaf_weight", &w.to_string())?;
        }
        for dev in b.weight_device().iter().flatten() {
            if let Some(w) = dev.weight() {
                write(d, weight_device, &format!("{}:{} {w}", dev.major(), dev.minor()))?;
            }
            if let Some(w) = dev.leaf_weight() {
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
        if let Some(w) = b.weight() {
            write(d, weight, &format!("default {}", value(w)))?;
        }
        for dev in b.weight_device().iter().flatten() {
            if let Some(w) = dev.weight() {
                write(d, weight, &format!("{}:{} {}", dev.major(), dev.minor(), value(w)))?;
            }
        }
        if b.leaf_weight().is_some() || b.weight_device().iter().flatten().any(|w| w.leaf_weight().is_some()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkio_weights_convert_as_runc() {
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
        assert_eq!(blkio_weight_to_io_weight(1000), 10000);
    }
}
