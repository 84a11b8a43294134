//! The snapshot operations containerd calls, with the semantics of its
//! built-in overlayfs snapshotter: metadata from [`store`](crate::store),
//! directories and mounts from [`layout`](crate::layout). All calls block; the
//! gRPC layer runs them off the async threads.

use std::path::Path;
use std::time::SystemTime;

use ferrum_protos::types::Mount;

use crate::filter::Filter;
use crate::quote::Quoted;
use crate::layout::{self, Layout};
use crate::store::{self, Info, Kind, Labels, Store, SNAPSHOT_REF_LABEL};
use crate::usage;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Layout(#[from] layout::Error),
    #[error(transparent)]
    Usage(#[from] usage::Error),
    #[error("snapshot {}: its content {} already exists as committed snapshot {}", Quoted(key), Quoted(target), Quoted(existing))]
    TargetExists {
        key: String,
        target: String,
        existing: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub struct Snapshotter {
    store: Store,
    layout: Layout,
}

impl Snapshotter {
    /// Opens the snapshotter at `root` and removes what a previous run left
    /// half done. The caller must hold the root's lock.
    /// `overlay_options` go into every overlay mount besides its directories.
    pub fn open(root: &Path, overlay_options: Vec<String>) -> Result<Snapshotter> {
        let snapshotter = Snapshotter {
            store: Store::open(&root.join("metadata.redb"))?,
            layout: Layout::open(root, overlay_options, true)?,
        };
        snapshotter.cleanup()?;
        Ok(snapshotter)
    }

    pub fn prepare(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        self.create(Kind::Active, key, parent, labels)
    }

    pub fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        self.create(Kind::View, key, parent, labels)
    }

    fn create(&self, kind: Kind, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        let mut txn = self.store.write()?;
        if let Some(target) = labels.get(SNAPSHOT_REF_LABEL) {
            if let Some(existing) = txn.committed_target(target, parent)? {
                return Err(Error::TargetExists {
                    key: key.to_owned(),
                    target: target.clone(),
                    existing,
                });
            }
        }
        let snap = txn.create(kind, key, parent, labels, SystemTime::now())?;
        // The directory goes in place before the metadata commits (as in
        // containerd): a crash in between leaves an unreferenced directory for
        // cleanup, never metadata without its directory.
        self.layout.create_dir(&snap)?;
        if let Err(err) = txn.commit() {
            self.layout.remove(snap.id);
            return Err(err.into());
        }
        Ok(self.layout.mounts(&snap))
    }

    pub fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let snap = self.store.read()?.snapshot(key)?;
        Ok(self.layout.mounts(&snap))
    }

    pub fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        let (id, _, _) = self.store.read()?.info(key)?;
        // Measured outside the write transaction so a large layer does not hold
        // up every other snapshot operation; commit_active checks that `key`
        // still is the snapshot measured.
        let usage = usage::disk_usage(&self.layout.fs_path(id))?;
        let mut txn = self.store.write()?;
        txn.commit_active(key, name, id, labels, usage, SystemTime::now())?;
        Ok(txn.commit()?)
    }

    pub fn remove(&self, key: &str) -> Result<()> {
        let mut txn = self.store.write()?;
        let id = txn.remove(key)?;
        txn.commit()?;
        self.layout.remove(id);
        Ok(())
    }

    pub fn stat(&self, key: &str) -> Result<Info> {
        Ok(self.store.read()?.info(key)?.1)
    }

    pub fn update(&self, key: &str, labels: &Labels, paths: &[String]) -> Result<Info> {
        let mut txn = self.store.write()?;
        let info = txn.update(key, labels, paths, SystemTime::now())?;
        txn.commit()?;
        Ok(info)
    }

    pub fn list(&self, filter: &Filter) -> Result<Vec<Info>> {
        let mut infos = self.store.read()?.list()?;
        infos.retain(|info| filter.matches(info));
        Ok(infos)
    }

    /// The whole of [`Snapshotter::usage_walk`] at once (the service walks in steps).
    #[cfg(test)]
    pub fn usage(&self, key: &str) -> Result<store::Usage> {
        Ok(self.usage_walk(key)?.finish()?)
    }

    /// A snapshot's usage, as a walk to take in steps: committed and view
    /// snapshots report what was measured at commit (zero for views, which own
    /// no files), a walk already finished; active ones are measured now, by
    /// walking their directory.
    pub fn usage_walk(&self, key: &str) -> Result<usage::Walk> {
        let (id, info, stored) = self.store.read()?.info(key)?;
        if info.kind != Kind::Active {
            return Ok(usage::Walk::finished(stored));
        }
        Ok(usage::Walk::start(&self.layout.fs_path(id))?)
    }

    /// Deletes directories that belong to no snapshot.
    pub fn cleanup(&self) -> Result<()> {
        // The write transaction is only held, never committed: it keeps any
        // snapshot directory from being created while the scan runs.
        let txn = self.store.write()?;
        let garbage = self.layout.detach_garbage(&txn.ids()?)?;
        drop(txn);
        layout::delete_all(&garbage);
        Ok(())
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn open() -> (tempfile::TempDir, Snapshotter) {
        let dir = tempfile::tempdir().unwrap();
        let s = Snapshotter::open(dir.path(), vec!["index=off".into()]).unwrap();
        (dir, s)
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir.join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn unpack_then_run_lifecycle() {
        let (dir, s) = open();
        let m = s.prepare("extract-1", "", Labels::new()).unwrap();
        assert_eq!(m[0].r#type, "bind");
        fs::write(Path::new(&m[0].source).join("file"), b"layer").unwrap();
        s.commit("layer-1", "extract-1", Labels::new()).unwrap();
        assert!(s.usage("layer-1").unwrap().inodes >= 2);

        let m = s.prepare("container", "layer-1", Labels::new()).unwrap();
        assert_eq!(m[0].r#type, "overlay");
        assert_eq!(s.mounts("container").unwrap(), m);
        assert_eq!(
            s.usage("container").unwrap().inodes,
            1,
            "an active snapshot is measured live"
        );

        assert!(matches!(
            s.remove("layer-1"),
            Err(Error::Store(store::Error::HasChildren(_)))
        ));
        s.remove("container").unwrap();
        s.remove("layer-1").unwrap();
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn ref_label_reports_existing_content() {
        let (_dir, s) = open();
        s.prepare("extract", "", Labels::new()).unwrap();
        s.commit("sha256:aaa", "extract", Labels::new()).unwrap();
        let labels = Labels::from([(SNAPSHOT_REF_LABEL.to_owned(), "sha256:aaa".to_owned())]);
        let err = s.prepare("extract-again", "", labels.clone()).unwrap_err();
        assert!(
            matches!(&err, Error::TargetExists { existing, .. } if existing == "sha256:aaa"),
            "{err}"
        );
        assert!(s.stat("extract-again").is_err(), "nothing was created");

        let other = Labels::from([(SNAPSHOT_REF_LABEL.to_owned(), "sha256:bbb".to_owned())]);
        s.prepare("extract-b", "", other).unwrap();
    }

    #[test]
    fn failed_prepare_leaves_no_directory() {
        let (dir, s) = open();
        s.prepare("a", "", Labels::new()).unwrap();
        assert!(s.prepare("a", "", Labels::new()).is_err());
        assert!(
            s.view("v", "a", Labels::new()).is_err(),
            "an active parent is refused"
        );
        assert_eq!(entries(dir.path()), ["1"]);
    }

    #[test]
    fn reopening_collects_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Snapshotter::open(dir.path(), vec!["index=off".into()]).unwrap();
            s.prepare("a", "", Labels::new()).unwrap();
        }
        for leftover in ["new-1-1/fs", "rm-5/fs", "77/fs"] {
            fs::create_dir_all(dir.path().join("snapshots").join(leftover)).unwrap();
        }
        let s = Snapshotter::open(dir.path(), vec!["index=off".into()]).unwrap();
        assert_eq!(entries(dir.path()), ["1"]);
        assert_eq!(s.stat("a").unwrap().kind, Kind::Active);
    }

    #[test]
    fn list_applies_the_filter() {
        let (_dir, s) = open();
        s.prepare("a", "", Labels::new()).unwrap();
        s.commit("c", "a", Labels::new()).unwrap();
        s.view("v", "c", Labels::new()).unwrap();
        let names = |f: &[&str]| -> Vec<String> {
            let f = Filter::parse(&f.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
            s.list(&f).unwrap().into_iter().map(|i| i.name).collect()
        };
        assert_eq!(names(&[]), ["c", "v"]);
        assert_eq!(names(&["kind==view"]), ["v"]);
    }
}
