//! One image layer: an ordered list of entries serialised as an uncompressed tar.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::EPOCH;

/// One tar entry of a layer. Paths are relative to the image root; a leading `/` is
/// dropped so `"/bin/sh"` and `"bin/sh"` mean the same.
#[derive(Debug, Clone)]
pub struct Entry {
    path: String,
    kind: EntryKind,
    mode: u32,
    uid: u64,
    gid: u64,
}

#[derive(Debug, Clone)]
pub enum EntryKind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    /// Target is another path of the same image (relative to the image root).
    Hardlink(String),
}

impl Entry {
    pub fn file(path: &str, content: impl Into<Vec<u8>>, mode: u32) -> Entry {
        Entry::new(path, EntryKind::File(content.into()), mode)
    }

    pub fn dir(path: &str, mode: u32) -> Entry {
        Entry::new(path, EntryKind::Dir, mode)
    }

    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry::new(path, EntryKind::Symlink(target.to_string()), 0o777)
    }

    pub fn hardlink(path: &str, target: &str) -> Entry {
        Entry::new(path, EntryKind::Hardlink(relative(target)), 0o644)
    }

    /// Entries belong to root unless told otherwise.
    pub fn owned_by(mut self, uid: u64, gid: u64) -> Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }

    fn new(path: &str, kind: EntryKind, mode: u32) -> Entry {
        Entry {
            path: relative(path),
            kind,
            mode,
            uid: 0,
            gid: 0,
        }
    }

    fn append_to(&self, tar: &mut tar::Builder<Vec<u8>>) -> io::Result<()> {
        let mut header = Header::new_gnu();
        header.set_mode(self.mode);
        header.set_uid(self.uid);
        header.set_gid(self.gid);
        header.set_mtime(EPOCH);
        header.set_size(0);
        match &self.kind {
            EntryKind::File(content) => {
                header.set_entry_type(EntryType::Regular);
                header.set_size(content.len() as u64);
                tar.append_data(&mut header, &self.path, content.as_slice())
            }
            EntryKind::Dir => {
                header.set_entry_type(EntryType::Directory);
                tar.append_data(&mut header, format!("{}/", self.path), io::empty())
            }
            EntryKind::Symlink(target) => {
                header.set_entry_type(EntryType::Symlink);
                tar.append_link(&mut header, &self.path, target)
            }
            EntryKind::Hardlink(target) => {
                header.set_entry_type(EntryType::Link);
                tar.append_link(&mut header, &self.path, target)
            }
        }
    }
}

/// A layer's entries in the order they go into the tar. Parents are not created
/// implicitly: list a directory before its children, as image tools do.
#[derive(Debug, Clone, Default)]
pub struct Layer {
    entries: Vec<Entry>,
}

impl Layer {
    pub fn new() -> Layer {
        Layer::default()
    }

    pub fn entry(mut self, entry: Entry) -> Layer {
        self.entries.push(entry);
        self
    }

    pub fn file(self, path: &str, content: impl Into<Vec<u8>>, mode: u32) -> Layer {
        self.entry(Entry::file(path, content, mode))
    }

    pub fn dir(self, path: &str, mode: u32) -> Layer {
        self.entry(Entry::dir(path, mode))
    }

    pub fn symlink(self, path: &str, target: &str) -> Layer {
        self.entry(Entry::symlink(path, target))
    }

    pub fn hardlink(self, path: &str, target: &str) -> Layer {
        self.entry(Entry::hardlink(path, target))
    }

    /// Deletes `path` of the layers below: an empty file `.wh.<name>` next to it
    /// (OCI image spec, "Whiteouts").
    pub fn whiteout(self, path: &str) -> Layer {
        let path = relative(path);
        let whiteout = match path.rsplit_once('/') {
            Some((parent, name)) => format!("{parent}/.wh.{name}"),
            None => format!(".wh.{path}"),
        };
        self.file(&whiteout, Vec::new(), 0o644)
    }

    /// Hides everything the layers below have under `dir`; the directory itself stays.
    pub fn opaque(self, dir: &str) -> Layer {
        let marker = format!("{}/.wh..wh..opq", relative(dir));
        self.file(&marker, Vec::new(), 0o644)
    }

    /// Adds the files of the tree at `root` under `prefix` ("" for the image
    /// root): directories before their contents, names sorted so the layer's
    /// digest depends on the tree only, modes and owners as on disk, hard
    /// links stored as copies. Paths for which `skip` (given the path relative
    /// to `root`) is true are left out, with everything below them.
    pub fn tree(mut self, root: &Path, prefix: &str, skip: &dyn Fn(&Path) -> bool) -> io::Result<Layer> {
        let mut stack = vec![PathBuf::new()];
        while let Some(relative) = stack.pop() {
            let mut names: Vec<_> = fs::read_dir(root.join(&relative))?.collect::<io::Result<Vec<_>>>()?;
            names.sort_by_key(|e| e.file_name());
            let mut dirs = Vec::new();
            for entry in names {
                let relative = relative.join(entry.file_name());
                if skip(&relative) {
                    continue;
                }
                let path = entry.path();
                let meta = fs::symlink_metadata(&path)?;
                let name = Path::new(prefix).join(&relative);
                let name = name.to_str().ok_or_else(|| io::Error::other(format!("{} is not UTF-8", path.display())))?;
                let mode = meta.permissions().mode() & 0o7777;
                let entry = if meta.is_dir() {
                    dirs.push(relative);
                    Entry::dir(name, mode)
                } else if meta.file_type().is_symlink() {
                    Entry::symlink(name, &fs::read_link(&path)?.to_string_lossy())
                } else if meta.is_file() {
                    Entry::file(name, fs::read(&path)?, mode)
                } else {
                    return Err(io::Error::other(format!("{}: neither file, directory nor symlink", path.display())));
                };
                self = self.entry(entry.owned_by(meta.uid().into(), meta.gid().into()));
            }
            // Depth first, in name order: pushed in reverse so the first pops first.
            stack.extend(dirs.into_iter().rev());
        }
        Ok(self)
    }

    /// The layer as an uncompressed tar; identical entries give identical bytes.
    pub fn to_tar(&self) -> io::Result<Vec<u8>> {
        let mut tar = tar::Builder::new(Vec::new());
        for entry in &self.entries {
            entry.append_to(&mut tar).map_err(|e| {
                io::Error::new(e.kind(), format!("layer entry {:?}: {e}", entry.path))
            })?;
        }
        tar.into_inner()
    }
}

fn relative(path: &str) -> String {
    path.trim_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// One entry as read back from the tar.
    #[derive(Debug)]
    struct Seen {
        path: String,
        kind: EntryType,
        mode: u32,
        link: Option<String>,
        data: Vec<u8>,
        owner: (u64, u64),
        mtime: u64,
    }

    fn read_back(layer: &Layer) -> Vec<Seen> {
        let bytes = layer.to_tar().unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let entries = archive.entries().unwrap();
        entries
            .map(|e| {
                let mut e = e.unwrap();
                let header = e.header().clone();
                let mut seen = Seen {
                    path: e.path().unwrap().to_string_lossy().into_owned(),
                    kind: header.entry_type(),
                    mode: header.mode().unwrap(),
                    link: e
                        .link_name()
                        .unwrap()
                        .map(|l| l.to_string_lossy().into_owned()),
                    data: Vec::new(),
                    owner: (header.uid().unwrap(), header.gid().unwrap()),
                    mtime: header.mtime().unwrap(),
                };
                e.read_to_end(&mut seen.data).unwrap();
                seen
            })
            .collect()
    }

    #[test]
    fn every_entry_kind_round_trips() {
        let layer = Layer::new()
            .dir("/etc", 0o755)
            .file("etc/motd", "hi\n", 0o644)
            .entry(Entry::file("etc/owned", "x", 0o600).owned_by(1000, 1001))
            .symlink("etc/link", "motd")
            .hardlink("etc/hard", "/etc/motd")
            .whiteout("etc/gone")
            .whiteout("top")
            .opaque("/etc/");
        let seen = read_back(&layer);
        let summary: Vec<_> = seen
            .iter()
            .map(|s| (s.path.as_str(), s.kind, s.mode, s.link.as_deref()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("etc/", EntryType::Directory, 0o755, None),
                ("etc/motd", EntryType::Regular, 0o644, None),
                ("etc/owned", EntryType::Regular, 0o600, None),
                ("etc/link", EntryType::Symlink, 0o777, Some("motd")),
                ("etc/hard", EntryType::Link, 0o644, Some("etc/motd")),
                ("etc/.wh.gone", EntryType::Regular, 0o644, None),
                (".wh.top", EntryType::Regular, 0o644, None),
                ("etc/.wh..wh..opq", EntryType::Regular, 0o644, None),
            ]
        );
        assert_eq!(seen[1].data, b"hi\n");
        assert_eq!(seen[1].owner, (0, 0));
        assert_eq!(seen[2].owner, (1000, 1001));
        assert!(seen.iter().all(|s| s.mtime == EPOCH));
    }

    #[test]
    fn long_paths_survive() {
        let long = format!("d/{}", "x".repeat(150));
        let seen = read_back(&Layer::new().file(&long, "y", 0o644).symlink("l", &long));
        assert_eq!(seen[0].path, long);
        assert_eq!(seen[1].link.as_deref(), Some(long.as_str()));
    }

    #[test]
    fn a_tree_becomes_entries_parents_first_in_name_order() {
        use std::os::unix::fs::symlink;
        let root = std::env::temp_dir().join(format!("ferrum-layer-tree-{}", std::process::id()));
        fs::create_dir_all(root.join("b/skipped")).unwrap();
        fs::create_dir_all(root.join("a/deep")).unwrap();
        fs::write(root.join("a/deep/file"), "x").unwrap();
        fs::set_permissions(root.join("a/deep/file"), fs::Permissions::from_mode(0o750)).unwrap();
        fs::write(root.join("b/skipped/gone"), "y").unwrap();
        symlink("a/deep/file", root.join("link")).unwrap();
        let skip = |p: &Path| p == Path::new("b/skipped");
        let layer = Layer::new().tree(&root, "top", &skip);
        fs::remove_dir_all(&root).unwrap();
        let seen = read_back(&layer.unwrap());
        let summary: Vec<_> = seen.iter().map(|s| (s.path.as_str(), s.kind, s.mode, s.link.as_deref())).collect();
        assert_eq!(
            summary,
            vec![
                ("top/a/", EntryType::Directory, 0o755, None),
                ("top/b/", EntryType::Directory, 0o755, None),
                ("top/link", EntryType::Symlink, 0o777, Some("a/deep/file")),
                ("top/a/deep/", EntryType::Directory, 0o755, None),
                ("top/a/deep/file", EntryType::Regular, 0o750, None),
            ]
        );
        assert_eq!(seen[4].data, b"x");
    }

    #[test]
    fn output_is_deterministic() {
        let layer = || Layer::new().dir("a", 0o755).file("a/b", "c", 0o644);
        assert_eq!(layer().to_tar().unwrap(), layer().to_tar().unwrap());
    }
}
