//! Disk usage of one snapshot directory, as containerd's `fs.DiskUsage`
//! reports it: allocated bytes and inodes, each inode counted once however many
//! hard links reach it.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::store::Usage;

#[derive(Debug, thiserror::Error)]
#[error("measuring disk usage at {path}: {source}")]
pub struct Error {
    path: PathBuf,
    source: io::Error,
}

/// Walks `root` without following symlinks or crossing into other entries'
/// targets. Each entry is stat'ed relative to its directory's open handle
/// (what `DirEntry::metadata` does), not by a full path looked up again from
/// the root: this runs on every Usage of an active snapshot, which the CRI asks
/// for every 10 s per container. Entries that vanish during the walk are
/// skipped: an active snapshot may be in use by a running container.
pub fn disk_usage(root: &Path) -> Result<Usage, Error> {
    let fail = |path: &Path, source| Error {
        path: path.to_owned(),
        source,
    };
    let mut seen = HashSet::new();
    let mut usage = Usage::default();
    let meta = fs::symlink_metadata(root).map_err(|err| fail(root, err))?;
    count(&meta, &mut seen, &mut usage);
    let mut pending: Vec<PathBuf> = Vec::new();
    if meta.is_dir() {
        pending.push(root.to_owned());
    }
    while let Some(dir) = pending.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound && dir != root => continue,
            Err(err) => return Err(fail(&dir, err)),
        };
        for entry in entries {
            let entry = entry.map_err(|err| fail(&dir, err))?;
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(fail(&entry.path(), err)),
            };
            if count(&meta, &mut seen, &mut usage) && meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok(usage)
}

/// Adds one inode to `usage` unless a hard link already brought it in;
/// returns whether it was new.
fn count(meta: &fs::Metadata, seen: &mut HashSet<(u64, u64)>, usage: &mut Usage) -> bool {
    // Only files with other links can be met twice; the set stays small.
    if !meta.is_dir() && meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
        return false;
    }
    usage.inodes += 1;
    // st_blocks is in 512-byte units whatever the filesystem block size.
    usage.size += i64::try_from(meta.blocks() * 512).unwrap_or(i64::MAX);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn counts_each_inode_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("sub")).unwrap();
        fs::write(root.join("sub/data"), vec![7u8; 64 * 1024]).unwrap();
        fs::hard_link(root.join("sub/data"), root.join("link")).unwrap();
        symlink("/nonexistent/target", root.join("dangling")).unwrap();

        let usage = disk_usage(root).unwrap();
        // root, sub, data (linked twice), dangling symlink
        assert_eq!(usage.inodes, 4);
        let data_blocks = fs::metadata(root.join("sub/data")).unwrap().blocks() as i64 * 512;
        assert!(
            usage.size >= data_blocks && data_blocks >= 64 * 1024,
            "{usage:?}"
        );
        assert!(
            usage.size < 2 * data_blocks,
            "the hard link was counted twice: {usage:?}"
        );
    }

    #[test]
    fn does_not_follow_symlinked_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let big = tempfile::tempdir().unwrap();
        fs::write(big.path().join("f"), vec![1u8; 256 * 1024]).unwrap();
        symlink(big.path(), dir.path().join("elsewhere")).unwrap();
        let usage = disk_usage(dir.path()).unwrap();
        assert_eq!(usage.inodes, 2);
        assert!(usage.size < 256 * 1024);
    }

    #[test]
    fn missing_root_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = disk_usage(&dir.path().join("gone")).unwrap_err();
        assert!(err.to_string().contains("gone"), "{err}");
    }
}
