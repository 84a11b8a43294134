//! linux.resources.hugepageLimits: the hugetlb controller, v1
//! (`hugetlb.<size>.limit_in_bytes`) or v2 (`hugetlb.<size>.max`) — on a hybrid
//! host such as this CI machine it sits in the v2 hierarchy. The reservation
//! limit (`.rsvd.`) is set to the same value where the kernel has it, as runc.
//! And the usage per page size, for metrics.

use super::resources::write;
use super::{cg_err, Cgroup};
use crate::error::Result;
use oci_spec::runtime::LinuxHugepageLimit;

impl Cgroup {
    pub(super) fn apply_hugepages(&self, limits: &[LinuxHugepageLimit]) -> Result<()> {
        if limits.is_empty() {
            return Ok(());
        }
        let Some(dir) = self.dirs.iter().find(|d| has_hugetlb(d)) else {
            return Err(self.missing_controller("hugepageLimits", "hugetlb"));
        };
        for l in limits {
            let size = l.page_size();
            if !is_page_size(size) {
                return Err(cg_err(dir, format!("linux.resources.hugepageLimits pageSize {size:?}"))(
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a page size (like 2MB or 1GB)"),
                ));
            }
            let value = l.limit().to_string();
            let (limit, rsvd) = if super::is_v2_dir(dir) {
                (format!("hugetlb.{size}.max"), format!("hugetlb.{size}.rsvd.max"))
            } else {
                (
                    format!("hugetlb.{size}.limit_in_bytes"),
                    format!("hugetlb.{size}.rsvd.limit_in_bytes"),
                )
            };
            // An unknown page size has no file: the write's error names it.
            write(dir, &limit, &value)?;
            if dir.join(&rsvd).exists() {
                write(dir, &rsvd, &value)?;
            }
        }
        Ok(())
    }
}

/// A page size as the kernel names its files: digits, then KB, MB or GB. It
/// becomes part of a file name, where a "/../" would leave the cgroup.
fn is_page_size(size: &str) -> bool {
    let digits = size.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &size[digits.len()..];
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && ["KB", "MB", "GB"].contains(&unit)
}

fn has_hugetlb(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("hugetlb."))
        })
        .unwrap_or(false)
}

/// Usage of one huge page size.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HugetlbUsage {
    /// As the kernel names it: "2MB", "1GB".
    pub page_size: String,
    pub usage: u64,
    /// Peak usage (v1 only; 0 on v2, which does not keep it).
    pub max_usage: u64,
    /// Allocations that failed at the limit.
    pub failcnt: u64,
}

impl Cgroup {
    pub(super) fn hugetlb_stats(&self) -> Vec<HugetlbUsage> {
        let Some(dir) = self.dirs.iter().find(|d| has_hugetlb(d)) else {
            return Vec::new();
        };
        let v2 = super::is_v2_dir(dir);
        let number = |file: String| {
            std::fs::read_to_string(dir.join(file))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let mut sizes: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        let size = name.strip_prefix("hugetlb.")?;
                        let size = if v2 {
                            size.strip_suffix(".current")?
                        } else {
                            size.strip_suffix(".usage_in_bytes")?
                        };
                        (!size.contains('.')).then(|| size.to_string())
                    })
                    .collect()
            })
            .unwrap_or_default();
        sizes.sort();
        sizes
            .into_iter()
            .map(|size| {
                if v2 {
                    let events =
                        std::fs::read_to_string(dir.join(format!("hugetlb.{size}.events"))).unwrap_or_default();
                    let failcnt = events
                        .lines()
                        .find_map(|l| l.strip_prefix("max ")?.trim().parse().ok())
                        .unwrap_or(0);
                    HugetlbUsage {
                        usage: number(format!("hugetlb.{size}.current")),
                        max_usage: 0,
                        failcnt,
                        page_size: size,
                    }
                } else {
                    HugetlbUsage {
                        usage: number(format!("hugetlb.{size}.usage_in_bytes")),
                        max_usage: number(format!("hugetlb.{size}.max_usage_in_bytes")),
                        failcnt: number(format!("hugetlb.{size}.failcnt")),
                        page_size: size,
                    }
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the config.json fuzz suite: the page size went into a file
    /// name as it was, so "a/../../b" wrote the limit outside the cgroup.
    #[test]
    fn only_page_sizes_become_file_names() {
        for good in ["2MB", "1GB", "64KB", "16GB"] {
            assert!(is_page_size(good), "{good}");
        }
        for bad in ["", "MB", "2", "2mb", "a/../../b", "2MB/../x", "../2MB", "2 MB", "２MB"] {
            assert!(!is_page_size(bad), "{bad}");
        }
    }
}
