//! Snapshot directories under the root, and the mounts containerd gets for them.
//!
//! ```text
//! <root>/snapshots/<id>/fs     the snapshot's own files (overlay upper/lower dir)
//! <root>/snapshots/<id>/work   overlay workdir, active snapshots only
//! <root>/snapshots/new-*       being created: renamed to <id> in one step
//! <root>/snapshots/rm-*        being deleted: renamed away from <id> first
//! <root>/spares/*              active snapshots' directories built ahead
//!                              (see [`crate::spares`]), renamed to <id>
//! ```
//!
//! A snapshot directory only ever appears or disappears under its id by a
//! rename, so a crash leaves whole snapshots or `new-*`/`rm-*`/unreferenced
//! directories, which [`Layout::detach_garbage`] collects.

use std::collections::HashSet;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{lchown, DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ferrum_protos::types::Mount;

use crate::spares::Spares;
use crate::store::{Kind, Snapshot};

const TEMP_PREFIX: &str = "new-";
const REMOVED_PREFIX: &str = "rm-";
/// A snapshot's own directory (its `fs` and `work` are 0755 and 0711).
const SNAPSHOT_DIR_MODE: u32 = 0o700;

#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct Error {
    action: &'static str,
    path: PathBuf,
    source: io::Error,
}

fn fail<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error {
        action,
        path: path.to_owned(),
        source,
    }
}

pub struct Layout {
    snapshots: PathBuf,
    /// Options every overlay mount gets besides its directories (`index=off`,
    /// `userxattr`, configured ones).
    overlay_options: Vec<String>,
    /// Active snapshots' directories built ahead, in `<root>/spares`.
    spares: Option<Spares>,
}

impl Layout {
    /// The layout under `root`; with `spares`, directories for active
    /// snapshots are built ahead by a thread of their own.
    pub fn open(root: &Path, overlay_options: Vec<String>, spares: bool) -> Result<Layout, Error> {
        let snapshots = root.join("snapshots");
        match DirBuilder::new().mode(0o700).create(&snapshots) {
            Err(err) if err.kind() != io::ErrorKind::AlreadyExists => {
                return Err(fail("creating", &snapshots)(err));
            }
            _ => {}
        }
        let spares = match spares {
            true => {
                let dir = root.join("spares");
                Some(Spares::open(dir.clone(), make_spare).map_err(fail("preparing spare directories in", &dir))?)
            }
            false => None,
        };
        Ok(Layout {
            snapshots,
            overlay_options,
            spares,
        })
    }

    pub fn fs_path(&self, id: u64) -> PathBuf {
        self.dir(id).join("fs")
    }

    fn work_path(&self, id: u64) -> PathBuf {
        self.dir(id).join("work")
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.snapshots.join(id.to_string())
    }

    /// Builds the directory for a snapshot just recorded (not yet committed) in
    /// the metadata, and moves it in place under the snapshot's id; an active
    /// snapshot's is a spare when one is ready.
    pub fn create_dir(&self, snap: &Snapshot) -> Result<(), Error> {
        if snap.kind == Kind::Active {
            if let Some(spare) = self.spares.as_ref().and_then(Spares::take) {
                let dir = self.dir(snap.id);
                match fs::rename(&spare, &dir) {
                    Ok(()) => {
                        let owned = self.give_owner(&dir, snap);
                        if owned.is_err() {
                            delete(&dir);
                        }
                        return owned;
                    }
                    // Building one below meets the same error, and says it.
                    Err(_) => delete(&spare),
                }
            }
        }
        let temp = self.make_temp()?;
        let built = self.fill(&temp, snap).and_then(|()| {
            let dir = self.dir(snap.id);
            fs::rename(&temp, &dir).map_err(fail("renaming into place", &dir))
        });
        if built.is_err() {
            delete(&temp);
        }
        built
    }

    fn fill(&self, dir: &Path, snap: &Snapshot) -> Result<(), Error> {
        make_contents(dir, snap.kind)?;
        self.give_owner(dir, snap)
    }

    /// The upper dir is the root of the merged tree: give it the owner of the
    /// image's root, as containerd does, not ours.
    fn give_owner(&self, dir: &Path, snap: &Snapshot) -> Result<(), Error> {
        let Some(&parent) = snap.parent_ids.first() else {
            return Ok(());
        };
        let parent_fs = self.fs_path(parent);
        let meta = fs::metadata(&parent_fs).map_err(fail("reading owner of", &parent_fs))?;
        let fs_dir = dir.join("fs");
        lchown(&fs_dir, Some(meta.uid()), Some(meta.gid())).map_err(fail("changing owner of", &fs_dir))
    }

    fn make_temp(&self) -> Result<PathBuf, Error> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let temp = self
                .snapshots
                .join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()));
            match DirBuilder::new().mode(SNAPSHOT_DIR_MODE).create(&temp) {
                Ok(()) => return Ok(temp),
                // Left by an earlier process with our pid: try the next name.
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(err) => return Err(fail("creating", &temp)(err)),
            }
        }
    }

    /// Deletes a snapshot's directory; failures are only logged, since the
    /// metadata is already gone and cleanup will find the leftovers.
    pub fn remove(&self, id: u64) {
        if let Some(detached) = detach(&self.dir(id)) {
            delete(&detached);
        }
    }

    /// Renames every directory that belongs to no snapshot in `referenced`
    /// (left by crashes or failed deletions) out of the way, and returns them
    /// for [`delete_all`]. Call it while holding the metadata write lock, so
    /// that no snapshot directory is being created meanwhile.
    pub fn detach_garbage(&self, referenced: &HashSet<u64>) -> Result<Vec<PathBuf>, Error> {
        let mut garbage = Vec::new();
        let entries = fs::read_dir(&self.snapshots).map_err(fail("listing", &self.snapshots))?;
        for entry in entries {
            let entry = entry.map_err(fail("listing", &self.snapshots))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            if name.starts_with(REMOVED_PREFIX) {
                garbage.push(path);
            } else if name.starts_with(TEMP_PREFIX)
                || name.parse().is_ok_and(|id| !referenced.contains(&id))
            {
                garbage.extend(detach(&path));
            }
        }
        Ok(garbage)
    }

    /// What containerd mounts for an active or view snapshot (see
    /// containerd's overlay snapshotter, whose mounts these match).
    pub fn mounts(&self, snap: &Snapshot) -> Vec<Mount> {
        let bind = |dir: PathBuf, mode: &str| Mount {
            r#type: "bind".into(),
            source: dir.to_string_lossy().into_owned(),
            target: String::new(),
            options: vec![mode.into(), "rbind".into()],
        };
        // Overlay needs at least one lower dir: a base snapshot is its own dir.
        if snap.parent_ids.is_empty() {
            let mode = if snap.kind == Kind::View { "ro" } else { "rw" };
            return vec![bind(self.fs_path(snap.id), mode)];
        }
        // A read-only view of a single layer needs no overlay at all.
        if snap.kind == Kind::View && snap.parent_ids.len() == 1 {
            return vec![bind(self.fs_path(snap.parent_ids[0]), "ro")];
        }

        let mut options = self.overlay_options.clone();
        if snap.kind == Kind::Active {
            options.push(format!("workdir={}", self.work_path(snap.id).display()));
            options.push(format!("upperdir={}", self.fs_path(snap.id).display()));
        }
        let lower: Vec<String> = snap
            .parent_ids
            .iter()
            .map(|&id| self.fs_path(id).to_string_lossy().into_owned())
            .collect();
        options.push(format!("lowerdir={}", lower.join(":")));
        vec![Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options,
        }]
    }
}

/// Makes what a snapshot's directory holds: `fs`, and `work` for an active one.
fn make_contents(dir: &Path, kind: Kind) -> Result<(), Error> {
    let fs_dir = dir.join("fs");
    DirBuilder::new()
        .mode(0o755)
        .create(&fs_dir)
        .map_err(fail("creating", &fs_dir))?;
    if kind == Kind::Active {
        let work = dir.join("work");
        DirBuilder::new()
            .mode(0o711)
            .create(&work)
            .map_err(fail("creating", &work))?;
    }
    Ok(())
}

/// A spare (see [`crate::spares`]): an active snapshot's directory, all but
/// the owner its `fs` gets when it is taken.
pub(crate) fn make_spare(dir: &Path) -> Result<(), Error> {
    DirBuilder::new()
        .mode(SNAPSHOT_DIR_MODE)
        .create(dir)
        .map_err(fail("creating", dir))?;
    make_contents(dir, Kind::Active)
}

/// Renames `path` to an `rm-` name beside it; `None` if it is already gone.
fn detach(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_string_lossy();
    let detached = path.with_file_name(format!("{REMOVED_PREFIX}{name}"));
    match fs::rename(path, &detached) {
        Ok(()) => Some(detached),
        Err(err) if err.kind() == io::ErrorKind::NotFound => None,
        Err(err) => {
            eprintln!(
                "ferrum-snapshotter: warning: renaming {} away: {err}; deleting it in place",
                path.display()
            );
            Some(path.to_owned())
        }
    }
}

pub fn delete_all(paths: &[PathBuf]) {
    for path in paths {
        delete(path);
    }
}

fn delete(path: &Path) {
    match fs::remove_dir_all(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            eprintln!(
                "ferrum-snapshotter: warning: deleting {}: {err}",
                path.display()
            );
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(options: &[&str]) -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let options = options.iter().map(|o| o.to_string()).collect();
        let layout = Layout::open(dir.path(), options, false).unwrap();
        (dir, layout)
    }

    fn snap(id: u64, kind: Kind, parent_ids: &[u64]) -> Snapshot {
        Snapshot {
            id,
            kind,
            parent_ids: parent_ids.to_vec(),
        }
    }

    fn fs(layout: &Layout, id: u64) -> String {
        layout.fs_path(id).display().to_string()
    }

    #[test]
    fn base_snapshots_are_bind_mounts_of_their_own_dir() {
        let (_dir, l) = layout(&["index=off"]);
        let active = &l.mounts(&snap(1, Kind::Active, &[]))[0];
        assert_eq!(
            (active.r#type.as_str(), active.source.clone()),
            ("bind", fs(&l, 1))
        );
        assert_eq!(active.options, ["rw", "rbind"]);
        let view = &l.mounts(&snap(2, Kind::View, &[]))[0];
        assert_eq!(view.options, ["ro", "rbind"]);
        assert_eq!(view.source, fs(&l, 2));
    }

    #[test]
    fn view_of_one_layer_binds_the_layer_read_only() {
        let (_dir, l) = layout(&["index=off"]);
        let m = l.mounts(&snap(5, Kind::View, &[3]));
        assert_eq!(m.len(), 1);
        assert_eq!(
            (m[0].r#type.as_str(), m[0].source.clone()),
            ("bind", fs(&l, 3))
        );
        assert_eq!(m[0].options, ["ro", "rbind"]);
    }

    #[test]
    fn view_of_many_layers_is_a_lower_only_overlay() {
        let (_dir, l) = layout(&[]);
        let m = l.mounts(&snap(5, Kind::View, &[4, 2]));
        assert_eq!(
            (m[0].r#type.as_str(), m[0].source.as_str()),
            ("overlay", "overlay")
        );
        assert_eq!(
            m[0].options,
            [format!("lowerdir={}:{}", fs(&l, 4), fs(&l, 2))]
        );
    }

    #[test]
    fn active_on_layers_is_an_overlay_nearest_parent_first() {
        let (_dir, l) = layout(&["index=off"]);
        let m = l.mounts(&snap(9, Kind::Active, &[7, 3, 1]));
        assert_eq!(m.len(), 1);
        assert_eq!(
            (m[0].r#type.as_str(), m[0].source.as_str()),
            ("overlay", "overlay")
        );
        assert_eq!(
            m[0].options,
            [
                "index=off".to_owned(),
                format!("workdir={}", l.work_path(9).display()),
                format!("upperdir={}", fs(&l, 9)),
                format!("lowerdir={}:{}:{}", fs(&l, 7), fs(&l, 3), fs(&l, 1)),
            ]
        );
        let (_dir, no_index) = layout(&[]);
        assert!(!no_index.mounts(&snap(9, Kind::Active, &[7]))[0]
            .options
            .iter()
            .any(|o| o == "index=off"));
    }

    #[test]
    fn overlay_options_go_into_overlays_only() {
        let (_dir, l) = layout(&["index=off", "userxattr", "volatile"]);
        let m = &l.mounts(&snap(3, Kind::Active, &[1]))[0];
        assert_eq!(m.options[..3], ["index=off", "userxattr", "volatile"]);
        let view = &l.mounts(&snap(4, Kind::View, &[2, 1]))[0];
        assert_eq!(view.options[..3], ["index=off", "userxattr", "volatile"]);
        let bind = &l.mounts(&snap(5, Kind::Active, &[]))[0];
        assert_eq!(bind.options, ["rw", "rbind"]);
    }

    #[test]
    fn create_dir_builds_fs_and_work_in_place() {
        let (_dir, l) = layout(&["index=off"]);
        l.create_dir(&snap(1, Kind::Active, &[])).unwrap();
        l.create_dir(&snap(2, Kind::View, &[1])).unwrap();
        assert!(l.fs_path(1).is_dir() && l.work_path(1).is_dir());
        assert!(
            l.fs_path(2).is_dir() && !l.work_path(2).exists(),
            "views need no workdir"
        );
        let names: Vec<_> = fs::read_dir(&l.snapshots)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temp dir left: {names:?}");
    }

    #[test]
    fn an_active_snapshot_takes_a_spare_and_its_parents_owner() {
        let root = tempfile::tempdir().unwrap();
        let l = Layout::open(root.path(), vec![], true).unwrap();
        let spares = root.path().join("spares");
        let built = || fs::read_dir(&spares).unwrap().filter(|e| e.as_ref().unwrap().path().join("work").is_dir()).count();
        let wait_for_spares = || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while built() < 2 {
                assert!(std::time::Instant::now() < deadline, "no spares were built");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        };
        wait_for_spares();
        l.create_dir(&snap(1, Kind::Active, &[])).unwrap();
        lchown(l.fs_path(1), Some(1234), Some(4321)).unwrap();
        wait_for_spares();
        let inodes: HashSet<u64> = fs::read_dir(&spares).unwrap().map(|e| e.unwrap().metadata().unwrap().ino()).collect();
        l.create_dir(&snap(2, Kind::Active, &[1])).unwrap();
        assert!(l.work_path(2).is_dir());
        assert!(inodes.contains(&fs::metadata(l.dir(2)).unwrap().ino()), "snapshot 2 is a spare renamed");
        let meta = fs::metadata(l.fs_path(2)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1234, 4321), "the upper dir has the image root's owner");
        l.create_dir(&snap(3, Kind::View, &[1])).unwrap();
        assert!(!l.work_path(3).exists(), "a view is built, without a workdir");
    }

    #[test]
    fn create_dir_failure_leaves_nothing() {
        let (_dir, l) = layout(&["index=off"]);
        // The parent's dir is missing, so its owner cannot be read.
        let err = l.create_dir(&snap(2, Kind::Active, &[1])).unwrap_err();
        assert!(err.to_string().contains(&fs(&l, 1)), "{err}");
        assert_eq!(fs::read_dir(&l.snapshots).unwrap().count(), 0);
    }

    #[test]
    fn garbage_is_whatever_no_snapshot_owns() {
        let (_dir, l) = layout(&["index=off"]);
        for id in [1, 2] {
            l.create_dir(&snap(id, Kind::Active, &[])).unwrap();
        }
        fs::create_dir_all(l.snapshots.join("new-1-0/fs")).unwrap();
        fs::create_dir_all(l.snapshots.join("rm-7/fs")).unwrap();

        let mut garbage = l.detach_garbage(&HashSet::from([1])).unwrap();
        garbage.sort();
        let expect = |n: &str| l.snapshots.join(n);
        assert_eq!(
            garbage,
            [expect("rm-2"), expect("rm-7"), expect("rm-new-1-0")]
        );
        delete_all(&garbage);
        let names: Vec<_> = fs::read_dir(&l.snapshots)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["1"]);

        l.remove(1);
        l.remove(1);
        assert_eq!(fs::read_dir(&l.snapshots).unwrap().count(), 0);
    }
}
