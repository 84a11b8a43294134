//! linux.resources.hugepageLimits: the hugetlb controller, v1
//! (`hugetlb.<size>.limit_in_bytes`) or v2 (`hugetlb.<size>.max`) — on a hybrid
//! host such as this CI machine it sits in the v2 hierarchy. The reservation
//! limit (`.rsvd.`) is set to the same value where the kernel has it, as runc.

use super::resources::write;
use super::Cgroup;
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

fn has_hugetlb(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("hugetlb."))
        })
        .unwrap_or(false)
}
