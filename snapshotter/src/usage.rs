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

/// The whole of [`Walk`] at once.
pub fn disk_usage(root: &Path) -> Result<Usage, Error> {
    Walk::start(root)?.finish()
}

/// A walk of `root` that can stop after some entries and go on later (on
/// another thread): the Usage of a small active snapshot is answered on the
/// serving thread, and only a big one's goes to the blocking pool.
///
/// It does not follow symlinks or cross into other entries' targets. Each
/// entry is stat'ed relative to its directory's open handle (what
/// `DirEntry::metadata` does), not by a full path looked up again from the
/// root: this runs on every Usage of an active snapshot, which the CRI asks
/// for every 10 s per container. Entries that vanish during the walk are
/// skipped: an active snapshot may be in use by a running container.
pub struct Walk {
    root: PathBuf,
    /// The directory being read, and the ones still to read.
    current: Option<(PathBuf, fs::ReadDir)>,
    pending: Vec<PathBuf>,
    seen: HashSet<(u64, u64)>,
    usage: Usage,
}

impl Walk {
    pub fn start(root: &Path) -> Result<Walk, Error> {
        let mut walk = Walk::new(root.to_owned(), Usage::default());
        let meta = fs::symlink_metadata(root).map_err(|err| fail(root, err))?;
        walk.count(&meta);
        if meta.is_dir() {
            walk.pending.push(root.to_owned());
        }
        Ok(walk)
    }

    /// A walk with nothing left to visit: a usage already known.
    pub fn finished(usage: Usage) -> Walk {
        Walk::new(PathBuf::new(), usage)
    }

    fn new(root: PathBuf, usage: Usage) -> Walk {
        Walk {
            root,
            current: None,
            pending: Vec::new(),
            seen: HashSet::new(),
            usage,
        }
    }

    /// Visits at most `budget` more entries: the usage if the walk is done.
    pub fn advance(&mut self, mut budget: usize) -> Result<Option<Usage>, Error> {
        loop {
            let Some((dir, entries)) = &mut self.current else {
                let Some(dir) = self.pending.pop() else {
                    return Ok(Some(self.usage));
                };
                match fs::read_dir(&dir) {
                    Ok(entries) => self.current = Some((dir, entries)),
                    Err(err) if err.kind() == io::ErrorKind::NotFound && dir != self.root => {}
                    Err(err) => return Err(fail(&dir, err)),
                }
                continue;
            };
            if budget == 0 {
                return Ok(None);
            }
            budget -= 1;
            let Some(entry) = entries.next() else {
                self.current = None;
                continue;
            };
            let entry = entry.map_err(|err| fail(dir, err))?;
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => return Err(fail(&entry.path(), err)),
            };
            if self.count(&meta) && meta.is_dir() {
                self.pending.push(entry.path());
            }
        }
    }

    /// The rest of the walk, however long.
    pub fn finish(mut self) -> Result<Usage, Error> {
        loop {
            if let Some(usage) = self.advance(usize::MAX)? {
                return Ok(usage);
            }
        }
    }

    /// Adds one inode to the usage unless a hard link already brought it in;
    /// returns whether it was new.
    fn count(&mut self, meta: &fs::Metadata) -> bool {
        // Only files with other links can be met twice; the set stays small.
        if !meta.is_dir() && meta.nlink() > 1 && !self.seen.insert((meta.dev(), meta.ino())) {
            return false;
        }
        self.usage.inodes += 1;
        // st_blocks is in 512-byte units whatever the filesystem block size.
        self.usage.size += i64::try_from(meta.blocks() * 512).unwrap_or(i64::MAX);
        true
    }
}

fn fail(path: &Path, source: io::Error) -> Error {
    Error {
        path: path.to_owned(),
        source,
    }
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
    fn a_walk_in_steps_counts_what_a_whole_one_does() {
        let dir = tempfile::tempdir().unwrap();
        for d in ["a", "a/b", "c"] {
            fs::create_dir(dir.path().join(d)).unwrap();
            for f in 0..3 {
                fs::write(dir.path().join(d).join(f.to_string()), [1u8; 5000]).unwrap();
            }
        }
        let whole = disk_usage(dir.path()).unwrap();
        assert_eq!(whole.inodes, 13);
        let mut walk = Walk::start(dir.path()).unwrap();
        let mut steps = 0;
        let stepped = loop {
            steps += 1;
            if let Some(usage) = walk.advance(2).unwrap() {
                break usage;
            }
        };
        assert_eq!(stepped, whole);
        assert!(steps > 5, "{steps} steps of 2 entries for 12 entries");
        assert_eq!(Walk::finished(whole).advance(0).unwrap(), Some(whole));
    }

    #[test]
    fn missing_root_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = disk_usage(&dir.path().join("gone")).unwrap_err();
        assert!(err.to_string().contains("gone"), "{err}");
    }
}
