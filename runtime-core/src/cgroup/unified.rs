//! linux.resources.unified: raw cgroup v2 key/values, written to the
//! container's v2 cgroup (on a hybrid host, its directory in the v2 hierarchy).
//! Validated first, as runc: a key is a file name of the cgroup itself and
//! must exist there (its controller enabled); a cgroup.* control file that
//! would move processes or change the tree is refused.

use super::resources::write;
use super::{cg_err, Cgroup};
use crate::error::Result;
use std::collections::HashMap;
use std::io;
use std::path::Path;

/// Core files that are not resource settings.
const REFUSED: [&str; 5] = [
    "cgroup.procs",
    "cgroup.threads",
    "cgroup.subtree_control",
    "cgroup.kill",
    "cgroup.freeze",
];

fn invalid(dir: &Path, key: &str, why: &str) -> crate::Error {
    cg_err(dir, format!("linux.resources.unified {key:?}"))(io::Error::new(
        io::ErrorKind::InvalidInput,
        why.to_string(),
    ))
}

impl Cgroup {
    pub(super) fn apply_unified(&self, unified: &HashMap<String, String>) -> Result<()> {
        if unified.is_empty() {
            return Ok(());
        }
        let Some(dir) = self.dirs.iter().find(|d| super::is_v2_dir(d)) else {
            return Err(self.missing_controller("unified", "cgroup v2"));
        };
        let mut keys: Vec<&String> = unified.keys().collect();
        keys.sort();
        for key in &keys {
            if key.is_empty() || key.contains('/') || key.starts_with('.') || !key.contains('.') {
                return Err(invalid(dir, key, "not a cgroup file name"));
            }
            if REFUSED.contains(&key.as_str()) {
                return Err(invalid(dir, key, "not a resource setting"));
            }
            if !dir.join(key).exists() {
                return Err(invalid(
                    dir,
                    key,
                    "no such file in the cgroup (is its controller enabled?)",
                ));
            }
        }
        for key in keys {
            write(dir, key, &unified[key])?;
        }
        Ok(())
    }
}
