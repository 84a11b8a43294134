//! Snapshot metadata (keys, ids, parents, kinds, labels, usage) in redb.
//!
//! Changes go through a [`Writer`], one redb write transaction: the caller does
//! its filesystem work while the transaction is open and commits only once that
//! work succeeded, as containerd's `snapshots/storage` does with bolt. Dropping
//! a `Writer` without [`Writer::commit`] rolls everything back. redb allows one
//! writer at a time, so holding a `Writer` also keeps every other change out.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableTable, TableDefinition};

use crate::quote::Quoted;
use serde::{Deserialize, Serialize};

/// Snapshot key -> JSON [`Record`].
const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
/// (parent id, child id): lets Remove refuse a parent without scanning every record.
const CHILDREN: TableDefinition<(u64, u64), ()> = TableDefinition::new("children");
/// Counters. Ids are never reused, so a directory left behind by a crash can
/// never be taken for a newer snapshot's.
const SEQUENCES: TableDefinition<&str, u64> = TableDefinition::new("sequences");
/// (parent, `containerd.io/snapshot.ref` target, name) of committed snapshots
/// carrying that label: lets a Prepare for an unpack find existing content
/// without reading every record. Derived from SNAPSHOTS, rebuilt at open.
const REFS: TableDefinition<(&str, &str, &str), ()> = TableDefinition::new("refs");
const LAST_ID: &str = "last_id";

/// redb reserves up to this much memory for its page cache; snapshot metadata
/// is small and the default (1 GiB) is far more than it ever needs.
const CACHE_BYTES: usize = 16 << 20;

/// Set by containerd's unpacker on the Prepare of an image layer, to the
/// layer's chain id; a snapshotter that already holds that content answers
/// AlreadyExists and containerd skips the unpack.
pub const SNAPSHOT_REF_LABEL: &str = "containerd.io/snapshot.ref";

pub type Labels = BTreeMap<String, String>;

/// containerd's limit on one label, key and value together (its
/// `labels.Validate`); its own metadata store refuses bigger ones, so a
/// snapshotter called directly must too.
const MAX_LABEL_BYTES: usize = 4096;
/// How much of an oversized label's key the error quotes.
const QUOTED_KEY_BYTES: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    View,
    Active,
    Committed,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        })
    }
}

/// A snapshot as clients see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    pub name: String,
    /// Empty for a snapshot without parent, as in containerd's API.
    pub parent: String,
    pub kind: Kind,
    pub labels: Labels,
    pub created: SystemTime,
    pub updated: SystemTime,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub size: i64,
    pub inodes: i64,
}

/// What the filesystem layer needs to know about a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub id: u64,
    pub kind: Kind,
    /// Ids of the parent chain, nearest parent first.
    pub parent_ids: Vec<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("snapshot {} does not exist", Quoted(.0))]
    NotFound(String),
    #[error("snapshot {} already exists", Quoted(.0))]
    AlreadyExists(String),
    #[error("a snapshot key must not be empty")]
    EmptyKey,
    #[error("parent {} of snapshot {} is not a committed snapshot", Quoted(parent), Quoted(key))]
    ParentNotCommitted { key: String, parent: String },
    #[error("snapshot {} is {kind}, only an active snapshot can be committed", Quoted(key))]
    NotActive { key: String, kind: Kind },
    #[error("snapshot {} is committed: only active and view snapshots have mounts", Quoted(.0))]
    NoMounts(String),
    #[error("snapshot {} has children and cannot be removed", Quoted(.0))]
    HasChildren(String),
    #[error("field {} of snapshot {} cannot be updated (only labels can)", Quoted(path), Quoted(key))]
    Immutable { key: String, path: String },
    #[error("label {key:?}: key and value are {size} bytes, over containerd's limit of {MAX_LABEL_BYTES}")]
    LabelTooLarge { key: String, size: usize },
    #[error("snapshot {} was replaced while it was being committed", Quoted(.0))]
    Replaced(String),
    #[error("metadata of snapshot {} is unreadable: {source}", Quoted(key))]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
    /// Boxed: redb's error is large and every call returns this type.
    #[error("metadata store: {0}")]
    Db(Box<redb::Error>),
}

// redb has one error type per operation; all of them fold into redb::Error.
macro_rules! from_redb {
    ($($ty:ident),*) => {$(
        impl From<redb::$ty> for Error {
            fn from(err: redb::$ty) -> Self {
                Error::Db(Box::new(err.into()))
            }
        }
    )*};
}
from_redb!(
    DatabaseError,
    TransactionError,
    TableError,
    StorageError,
    CommitError
);

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    id: u64,
    kind: Kind,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    parent: String,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    labels: Labels,
    /// Unix time in nanoseconds.
    created: u64,
    updated: u64,
    /// Measured at commit; zero for active and view snapshots.
    #[serde(default)]
    usage: Usage,
}

impl Record {
    fn info(&self, name: &str) -> Info {
        Info {
            name: name.to_owned(),
            parent: self.parent.clone(),
            kind: self.kind,
            labels: self.labels.clone(),
            created: from_nanos(self.created),
            updated: from_nanos(self.updated),
        }
    }
}

fn to_nanos(t: SystemTime) -> u64 {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

fn from_nanos(n: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(n)
}

fn validate(labels: &Labels) -> Result<()> {
    match labels
        .iter()
        .find(|(k, v)| k.len() + v.len() > MAX_LABEL_BYTES)
    {
        None => Ok(()),
        Some((key, value)) => {
            let mut end = key.len().min(QUOTED_KEY_BYTES);
            while !key.is_char_boundary(end) {
                end -= 1;
            }
            Err(Error::LabelTooLarge {
                key: key[..end].to_owned(),
                size: key.len() + value.len(),
            })
        }
    }
}

/// containerd stores no label with an empty value: setting one to "" deletes it.
fn drop_empty(labels: &mut Labels) {
    labels.retain(|_, v| !v.is_empty());
}

fn load<T>(table: &T, key: &str) -> Result<Option<Record>>
where
    T: ReadableTable<&'static str, &'static [u8]>,
{
    match table.get(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(bytes.value())
            .map(Some)
            .map_err(|source| Error::Corrupt {
                key: key.to_owned(),
                source,
            }),
    }
}

fn require<T>(table: &T, key: &str) -> Result<Record>
where
    T: ReadableTable<&'static str, &'static [u8]>,
{
    load(table, key)?.ok_or_else(|| Error::NotFound(key.to_owned()))
}

/// Ids of `parent` and its ancestors, nearest first.
fn parent_ids<T>(table: &T, parent: &str) -> Result<Vec<u64>>
where
    T: ReadableTable<&'static str, &'static [u8]>,
{
    let mut ids = Vec::new();
    let mut next = parent.to_owned();
    while !next.is_empty() {
        let record = require(table, &next)?;
        ids.push(record.id);
        next = record.parent;
    }
    Ok(ids)
}

fn all<T>(table: &T) -> Result<Vec<(String, Record)>>
where
    T: ReadableTable<&'static str, &'static [u8]>,
{
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (key, bytes) = entry?;
        let key = key.value().to_owned();
        let record = serde_json::from_slice(bytes.value()).map_err(|source| Error::Corrupt {
            key: key.clone(),
            source,
        })?;
        out.push((key, record));
    }
    Ok(out)
}

pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the metadata file. redb locks the file itself, so a
    /// second process gets an error rather than a corrupt store.
    pub fn open(path: &Path) -> Result<Store> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)?;
        // Create the tables up front so readers never meet a missing table.
        let txn = db.begin_write()?;
        txn.open_table(SNAPSHOTS)?;
        txn.open_table(CHILDREN)?;
        txn.open_table(SEQUENCES)?;
        // Rebuilt rather than trusted: a store written before the index
        // existed has none.
        txn.delete_table(REFS)?;
        let writer = Writer { txn };
        let records = all(&writer.txn.open_table(SNAPSHOTS)?)?;
        for (name, record) in &records {
            writer.index_ref(name, record, true)?;
        }
        writer.commit()?;
        Ok(Store { db })
    }

    pub fn write(&self) -> Result<Writer> {
        Ok(Writer {
            txn: self.db.begin_write()?,
        })
    }

    pub fn read(&self) -> Result<Reader> {
        Ok(Reader {
            txn: self.db.begin_read()?,
        })
    }
}

/// A consistent read-only view of the metadata.
pub struct Reader {
    txn: redb::ReadTransaction,
}

impl Reader {
    /// The snapshot's id, info and stored usage (measured at commit).
    pub fn info(&self, key: &str) -> Result<(u64, Info, Usage)> {
        let table = self.txn.open_table(SNAPSHOTS)?;
        let record = require(&table, key)?;
        Ok((record.id, record.info(key), record.usage))
    }

    /// An active or view snapshot with its parent chain, for building mounts.
    pub fn snapshot(&self, key: &str) -> Result<Snapshot> {
        let table = self.txn.open_table(SNAPSHOTS)?;
        let record = require(&table, key)?;
        if record.kind == Kind::Committed {
            return Err(Error::NoMounts(key.to_owned()));
        }
        Ok(Snapshot {
            id: record.id,
            kind: record.kind,
            parent_ids: parent_ids(&table, &record.parent)?,
        })
    }

    pub fn list(&self) -> Result<Vec<Info>> {
        let table = self.txn.open_table(SNAPSHOTS)?;
        Ok(all(&table)?
            .iter()
            .map(|(key, record)| record.info(key))
            .collect())
    }
}

/// One write transaction; see the module docs.
pub struct Writer {
    txn: redb::WriteTransaction,
}

impl Writer {
    /// Records a new active or view snapshot on top of the committed `parent`
    /// ("" for none) and returns its fresh id and parent chain.
    pub fn create(
        &mut self,
        kind: Kind,
        key: &str,
        parent: &str,
        mut labels: Labels,
        now: SystemTime,
    ) -> Result<Snapshot> {
        debug_assert!(
            kind != Kind::Committed,
            "snapshots are committed by commit_active"
        );
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        validate(&labels)?;
        let mut table = self.txn.open_table(SNAPSHOTS)?;
        let parent_ids = if parent.is_empty() {
            Vec::new()
        } else {
            let record = load(&table, parent)?.ok_or_else(|| Error::NotFound(parent.to_owned()))?;
            if record.kind != Kind::Committed {
                return Err(Error::ParentNotCommitted {
                    key: key.to_owned(),
                    parent: parent.to_owned(),
                });
            }
            parent_ids(&table, parent)?
        };
        if load(&table, key)?.is_some() {
            return Err(Error::AlreadyExists(key.to_owned()));
        }

        let id = self.next_id()?;
        drop_empty(&mut labels);
        let now = to_nanos(now);
        let record = Record {
            id,
            kind,
            parent: parent.to_owned(),
            labels,
            created: now,
            updated: now,
            usage: Usage::default(),
        };
        put(&mut table, key, &record)?;
        if let Some(&parent_id) = parent_ids.first() {
            self.txn.open_table(CHILDREN)?.insert((parent_id, id), ())?;
        }
        Ok(Snapshot {
            id,
            kind,
            parent_ids,
        })
    }

    /// The name of a committed snapshot that already holds the content a
    /// Prepare labelled `containerd.io/snapshot.ref = target` on `parent` would
    /// unpack: one named `target`, or one committed with that same label on
    /// the same parent (containerd namespaces names, so a layer shared by two
    /// namespaces is only found by its label).
    pub fn committed_target(&self, target: &str, parent: &str) -> Result<Option<String>> {
        let table = self.txn.open_table(SNAPSHOTS)?;
        if let Some(record) = load(&table, target)? {
            if record.kind == Kind::Committed {
                return Ok(Some(target.to_owned()));
            }
        }
        let refs = self.txn.open_table(REFS)?;
        let first = refs.range((parent, target, "")..)?.next().transpose()?;
        Ok(first.and_then(|(entry, _)| {
            let (p, t, name) = entry.value();
            (p == parent && t == target).then(|| name.to_owned())
        }))
    }

    /// Adds a committed snapshot's `containerd.io/snapshot.ref` to REFS, or
    /// takes it out; other snapshots are not indexed.
    fn index_ref(&self, name: &str, record: &Record, present: bool) -> Result<()> {
        let target = match record.labels.get(SNAPSHOT_REF_LABEL) {
            Some(target) if record.kind == Kind::Committed => target,
            _ => return Ok(()),
        };
        let mut refs = self.txn.open_table(REFS)?;
        let key = (record.parent.as_str(), target.as_str(), name);
        if present {
            refs.insert(key, ())?;
        } else {
            refs.remove(key)?;
        }
        Ok(())
    }

    /// Turns the active snapshot `key` into the committed snapshot `name`,
    /// keeping its id (and so its directory). `id` is what the caller measured
    /// `usage` for; if `key` meanwhile names another snapshot, nothing changes.
    pub fn commit_active(
        &mut self,
        key: &str,
        name: &str,
        id: u64,
        mut labels: Labels,
        usage: Usage,
        now: SystemTime,
    ) -> Result<()> {
        if name.is_empty() {
            return Err(Error::EmptyKey);
        }
        validate(&labels)?;
        let mut table = self.txn.open_table(SNAPSHOTS)?;
        let mut record = require(&table, key)?;
        if load(&table, name)?.is_some() {
            return Err(Error::AlreadyExists(name.to_owned()));
        }
        if record.kind != Kind::Active {
            return Err(Error::NotActive {
                key: key.to_owned(),
                kind: record.kind,
            });
        }
        if record.id != id {
            return Err(Error::Replaced(key.to_owned()));
        }
        drop_empty(&mut labels);
        // Like containerd: a commit replaces the labels, it does not inherit them.
        record.kind = Kind::Committed;
        record.labels = labels;
        record.created = to_nanos(now);
        record.updated = record.created;
        record.usage = usage;
        table.remove(key)?;
        put(&mut table, name, &record)?;
        self.index_ref(name, &record, true)
    }

    /// Forgets `key` and returns its id, whose directory the caller removes.
    pub fn remove(&mut self, key: &str) -> Result<u64> {
        let mut table = self.txn.open_table(SNAPSHOTS)?;
        let record = require(&table, key)?;
        let mut children = self.txn.open_table(CHILDREN)?;
        if children
            .range((record.id, 0)..=(record.id, u64::MAX))?
            .next()
            .is_some()
        {
            return Err(Error::HasChildren(key.to_owned()));
        }
        if !record.parent.is_empty() {
            if let Some(parent) = load(&table, &record.parent)? {
                children.remove((parent.id, record.id))?;
            }
        }
        self.index_ref(key, &record, false)?;
        table.remove(key)?;
        Ok(record.id)
    }

    /// Applies containerd's Update: with no `paths` the labels are replaced;
    /// otherwise each path is `labels` (replace all) or `labels.<key>` (set or,
    /// when absent or empty in `labels`, delete that one label).
    pub fn update(
        &mut self,
        key: &str,
        labels: &Labels,
        paths: &[String],
        now: SystemTime,
    ) -> Result<Info> {
        let mut table = self.txn.open_table(SNAPSHOTS)?;
        let mut record = require(&table, key)?;
        self.index_ref(key, &record, false)?;
        if paths.is_empty() {
            record.labels = labels.clone();
        }
        for path in paths {
            if path == "labels" {
                record.labels = labels.clone();
            } else if let Some(label) = path.strip_prefix("labels.") {
                match labels.get(label) {
                    Some(value) => record.labels.insert(label.to_owned(), value.clone()),
                    None => record.labels.remove(label),
                };
            } else {
                return Err(Error::Immutable {
                    key: key.to_owned(),
                    path: path.clone(),
                });
            }
        }
        drop_empty(&mut record.labels);
        validate(&record.labels)?;
        record.updated = to_nanos(now);
        put(&mut table, key, &record)?;
        self.index_ref(key, &record, true)?;
        Ok(record.info(key))
    }

    /// Ids of every snapshot. Cleanup reads them inside a write transaction so
    /// that no snapshot directory can be installed while it scans.
    pub fn ids(&self) -> Result<HashSet<u64>> {
        let table = self.txn.open_table(SNAPSHOTS)?;
        Ok(all(&table)?.into_iter().map(|(_, r)| r.id).collect())
    }

    pub fn commit(self) -> Result<()> {
        Ok(self.txn.commit()?)
    }

    fn next_id(&self) -> Result<u64> {
        let mut table = self.txn.open_table(SEQUENCES)?;
        let id = table.get(LAST_ID)?.map_or(0, |v| v.value()) + 1;
        table.insert(LAST_ID, id)?;
        Ok(id)
    }
}

fn put(
    table: &mut redb::Table<'_, &'static str, &'static [u8]>,
    key: &str,
    record: &Record,
) -> Result<()> {
    let bytes = serde_json::to_vec(record).expect("a Record always serialises");
    table.insert(key, bytes.as_slice())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("metadata.redb")).unwrap();
        (dir, store)
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn now() -> SystemTime {
        SystemTime::now()
    }

    fn create(store: &Store, kind: Kind, key: &str, parent: &str) -> Result<Snapshot> {
        let mut w = store.write()?;
        let snap = w.create(kind, key, parent, Labels::new(), now())?;
        w.commit()?;
        Ok(snap)
    }

    fn commit(store: &Store, key: &str, name: &str) -> Result<()> {
        let (id, _, _) = store.read()?.info(key)?;
        let mut w = store.write()?;
        w.commit_active(
            key,
            name,
            id,
            Labels::new(),
            Usage {
                size: 4096,
                inodes: 3,
            },
            now(),
        )?;
        w.commit()
    }

    /// Builds committed layers l1 <- l2 <- ... and returns their ids.
    fn chain(store: &Store, depth: usize) -> Vec<u64> {
        let mut ids = Vec::new();
        let mut parent = String::new();
        for i in 1..=depth {
            let name = format!("l{i}");
            let snap = create(store, Kind::Active, &format!("extract-{i}"), &parent).unwrap();
            commit(store, &format!("extract-{i}"), &name).unwrap();
            ids.push(snap.id);
            parent = name;
        }
        ids
    }

    #[test]
    fn prepare_commit_and_stat() {
        let (_dir, store) = store();
        let snap = create(&store, Kind::Active, "a", "").unwrap();
        assert_eq!(
            snap,
            Snapshot {
                id: 1,
                kind: Kind::Active,
                parent_ids: vec![]
            }
        );

        commit(&store, "a", "base").unwrap();
        assert!(matches!(store.read().unwrap().info("a"), Err(Error::NotFound(k)) if k == "a"));
        let (id, info, usage) = store.read().unwrap().info("base").unwrap();
        assert_eq!(id, 1, "a commit keeps the id and so the directory");
        assert_eq!(info.kind, Kind::Committed);
        assert_eq!(info.parent, "");
        assert_eq!(
            usage,
            Usage {
                size: 4096,
                inodes: 3
            }
        );
    }

    #[test]
    fn parent_chain_is_nearest_first() {
        let (_dir, store) = store();
        let ids = chain(&store, 3);
        let snap = create(&store, Kind::Active, "ctr", "l3").unwrap();
        assert_eq!(snap.parent_ids, vec![ids[2], ids[1], ids[0]]);
        assert_eq!(store.read().unwrap().snapshot("ctr").unwrap(), snap);
        assert_eq!(store.read().unwrap().info("ctr").unwrap().1.parent, "l3");
    }

    #[test]
    fn create_checks_key_and_parent() {
        let (_dir, store) = store();
        create(&store, Kind::Active, "a", "").unwrap();
        assert!(matches!(
            create(&store, Kind::Active, "a", ""),
            Err(Error::AlreadyExists(_))
        ));
        assert!(matches!(
            create(&store, Kind::View, "", ""),
            Err(Error::EmptyKey)
        ));
        assert!(
            matches!(create(&store, Kind::Active, "b", "missing"), Err(Error::NotFound(p)) if p == "missing")
        );
        assert!(matches!(
            create(&store, Kind::View, "b", "a"),
            Err(Error::ParentNotCommitted { parent, .. }) if parent == "a"
        ));
    }

    #[test]
    fn commit_checks() {
        let (_dir, store) = store();
        chain(&store, 1);
        create(&store, Kind::Active, "a", "l1").unwrap();
        create(&store, Kind::View, "v", "l1").unwrap();
        assert!(matches!(
            commit(&store, "nope", "x"),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(commit(&store, "a", "l1"), Err(Error::AlreadyExists(n)) if n == "l1"));
        assert!(matches!(
            commit(&store, "v", "x"),
            Err(Error::NotActive {
                kind: Kind::View,
                ..
            })
        ));

        let mut w = store.write().unwrap();
        assert!(matches!(
            w.commit_active("a", "x", 999, Labels::new(), Usage::default(), now()),
            Err(Error::Replaced(_))
        ));
    }

    #[test]
    fn commit_replaces_labels() {
        let (_dir, store) = store();
        let mut w = store.write().unwrap();
        let snap = w
            .create(Kind::Active, "a", "", labels(&[("old", "1")]), now())
            .unwrap();
        w.commit_active(
            "a",
            "c",
            snap.id,
            labels(&[("new", "2"), ("empty", "")]),
            Usage::default(),
            now(),
        )
        .unwrap();
        w.commit().unwrap();
        assert_eq!(
            store.read().unwrap().info("c").unwrap().1.labels,
            labels(&[("new", "2")])
        );
    }

    #[test]
    fn committed_snapshots_have_no_mounts() {
        let (_dir, store) = store();
        chain(&store, 1);
        assert!(matches!(
            store.read().unwrap().snapshot("l1"),
            Err(Error::NoMounts(_))
        ));
    }

    #[test]
    fn remove_refuses_parents_until_children_go() {
        let (_dir, store) = store();
        chain(&store, 2);
        create(&store, Kind::View, "v", "l2").unwrap();

        let remove = |key: &str| -> Result<u64> {
            let mut w = store.write()?;
            let id = w.remove(key)?;
            w.commit()?;
            Ok(id)
        };
        assert!(matches!(remove("l2"), Err(Error::HasChildren(k)) if k == "l2"));
        assert!(matches!(remove("l1"), Err(Error::HasChildren(_))));
        assert!(matches!(remove("nope"), Err(Error::NotFound(_))));
        remove("v").unwrap();
        assert_eq!(remove("l2").unwrap(), 2);
        assert_eq!(remove("l1").unwrap(), 1);
        assert!(store.read().unwrap().list().unwrap().is_empty());
    }

    #[test]
    fn ids_are_not_reused() {
        let (_dir, store) = store();
        create(&store, Kind::Active, "a", "").unwrap();
        let mut w = store.write().unwrap();
        w.remove("a").unwrap();
        w.commit().unwrap();
        assert_eq!(create(&store, Kind::Active, "a", "").unwrap().id, 2);
    }

    #[test]
    fn dropped_writer_rolls_back() {
        let (_dir, store) = store();
        {
            let mut w = store.write().unwrap();
            w.create(Kind::Active, "a", "", Labels::new(), now())
                .unwrap();
        }
        assert!(store.read().unwrap().list().unwrap().is_empty());
        assert_eq!(
            create(&store, Kind::Active, "a", "").unwrap().id,
            1,
            "the id was rolled back too"
        );
    }

    #[test]
    fn update_labels_by_path() {
        let (_dir, store) = store();
        let mut w = store.write().unwrap();
        w.create(
            Kind::Active,
            "a",
            "",
            labels(&[("keep", "1"), ("drop", "2")]),
            now(),
        )
        .unwrap();
        w.commit().unwrap();

        let update = |l: Labels, paths: &[&str]| -> Result<Info> {
            let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
            let mut w = store.write()?;
            let info = w.update("a", &l, &paths, now())?;
            w.commit()?;
            Ok(info)
        };

        let info = update(
            labels(&[("add", "3"), ("ignored", "4")]),
            &["labels.add", "labels.drop"],
        )
        .unwrap();
        assert_eq!(info.labels, labels(&[("keep", "1"), ("add", "3")]));
        assert!(info.updated >= info.created);

        let info = update(labels(&[("only", "5")]), &[]).unwrap();
        assert_eq!(info.labels, labels(&[("only", "5")]));
        assert_eq!(store.read().unwrap().info("a").unwrap().1, info);

        assert!(
            matches!(update(Labels::new(), &["parent"]), Err(Error::Immutable { path, .. }) if path == "parent")
        );
        let mut w = store.write().unwrap();
        assert!(matches!(
            w.update("nope", &Labels::new(), &[], now()),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn labels_over_containerds_limit_are_refused() {
        let (_dir, store) = store();
        let at_limit = labels(&[("k", &"v".repeat(MAX_LABEL_BYTES - 1))]);
        let key = "k".repeat(100);
        let over = labels(&[(key.as_str(), &"v".repeat(MAX_LABEL_BYTES - 99))]);
        let mut w = store.write().unwrap();
        let snap = w
            .create(Kind::Active, "a", "", at_limit.clone(), now())
            .unwrap();
        let err = w
            .create(Kind::Active, "b", "", over.clone(), now())
            .unwrap_err();
        assert!(
            matches!(&err, Error::LabelTooLarge { key, size: 4097 } if key.len() == QUOTED_KEY_BYTES),
            "{err}"
        );
        assert!(matches!(
            w.update("a", &over, &[], now()),
            Err(Error::LabelTooLarge { .. })
        ));
        assert!(matches!(
            w.commit_active("a", "c", snap.id, over, Usage::default(), now()),
            Err(Error::LabelTooLarge { .. })
        ));
        w.commit_active("a", "c", snap.id, at_limit, Usage::default(), now())
            .unwrap();
    }

    #[test]
    fn committed_target_by_name_or_label() {
        let (_dir, store) = store();
        chain(&store, 1);
        let mut w = store.write().unwrap();
        let snap = w
            .create(Kind::Active, "ns/2/extract", "l1", Labels::new(), now())
            .unwrap();
        let ref_label = labels(&[(SNAPSHOT_REF_LABEL, "sha256:abc")]);
        w.commit_active(
            "ns/2/extract",
            "ns/3/sha256:abc",
            snap.id,
            ref_label,
            Usage::default(),
            now(),
        )
        .unwrap();

        assert_eq!(w.committed_target("l1", "").unwrap().as_deref(), Some("l1"));
        assert_eq!(
            w.committed_target("sha256:abc", "l1").unwrap().as_deref(),
            Some("ns/3/sha256:abc")
        );
        assert_eq!(
            w.committed_target("sha256:abc", "").unwrap(),
            None,
            "another parent is other content"
        );
        assert_eq!(w.committed_target("sha256:def", "l1").unwrap(), None);
    }

    #[test]
    fn ref_index_follows_commits_updates_removals_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.redb");
        let target =
            |store: &Store, t: &str| store.write().unwrap().committed_target(t, "").unwrap();
        let ref_label = |t: &str| labels(&[(SNAPSHOT_REF_LABEL, t)]);
        {
            let store = Store::open(&path).unwrap();
            for (key, name) in [("k1", "ns/1/a"), ("k2", "ns/2/a")] {
                let mut w = store.write().unwrap();
                let snap = w
                    .create(Kind::Active, key, "", Labels::new(), now())
                    .unwrap();
                w.commit_active(
                    key,
                    name,
                    snap.id,
                    ref_label("sha256:a"),
                    Usage::default(),
                    now(),
                )
                .unwrap();
                w.commit().unwrap();
            }
            assert_eq!(target(&store, "sha256:a").as_deref(), Some("ns/1/a"));
            let mut w = store.write().unwrap();
            w.remove("ns/1/a").unwrap();
            w.commit().unwrap();
            assert_eq!(
                target(&store, "sha256:a").as_deref(),
                Some("ns/2/a"),
                "the other copy"
            );
            let mut w = store.write().unwrap();
            let paths = [format!("labels.{SNAPSHOT_REF_LABEL}")];
            w.update("ns/2/a", &ref_label("sha256:b"), &paths, now())
                .unwrap();
            w.commit().unwrap();
            assert_eq!(target(&store, "sha256:a"), None);
            assert_eq!(target(&store, "sha256:b").as_deref(), Some("ns/2/a"));
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(
            target(&store, "sha256:b").as_deref(),
            Some("ns/2/a"),
            "rebuilt at open"
        );
        assert_eq!(target(&store, "sha256:a"), None);
    }

    #[test]
    fn metadata_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.redb");
        {
            let store = Store::open(&path).unwrap();
            chain(&store, 2);
        }
        let store = Store::open(&path).unwrap();
        let mut names: Vec<String> = store
            .read()
            .unwrap()
            .list()
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        names.sort();
        assert_eq!(names, ["l1", "l2"]);
        assert_eq!(store.write().unwrap().ids().unwrap(), HashSet::from([1, 2]));
        assert_eq!(create(&store, Kind::Active, "c", "l2").unwrap().id, 3);
    }
}
