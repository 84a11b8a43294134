//! Talking to a snapshotter the way containerd's clients do: a blocking client
//! for the `containerd.services.snapshots.v1.Snapshots` gRPC service (on
//! containerd's socket, naming the snapshotter per call, or on a proxy
//! snapshotter's own socket), mounting what it returns, and reading a mounted
//! tree back in a form two snapshotters' results can be compared in.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fmt;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ferrum_protos::snapshots::v1 as api;
use ferrum_protos::snapshots::v1::snapshots_client::SnapshotsClient;
use ferrum_protos::types::Mount;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

/// The gRPC metadata keys containerd reads the namespace and lease from.
const NAMESPACE_HEADER: &str = "containerd-namespace";
const LEASE_HEADER: &str = "containerd-lease";

pub type Labels = HashMap<String, String>;

/// A blocking Snapshots client. Through containerd it names `snapshotter` in
/// every request and sends the namespace; on a proxy snapshotter's own socket
/// neither matters.
pub struct SnapshotClient {
    runtime: tokio::runtime::Runtime,
    client: SnapshotsClient<Channel>,
    snapshotter: String,
    namespace: Option<String>,
    lease: Option<String>,
}

/// What a failed call returned: its gRPC code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    pub code: Code,
    pub message: String,
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for CallError {}

impl From<Status> for CallError {
    fn from(status: Status) -> Self {
        CallError {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

pub type CallResult<T> = std::result::Result<T, CallError>;

impl SnapshotClient {
    /// Connects to the Unix socket `socket`. `namespace` is for containerd's
    /// socket; a proxy snapshotter ignores both it and `snapshotter`.
    pub fn connect(
        socket: &Path,
        snapshotter: &str,
        namespace: Option<&str>,
    ) -> Result<SnapshotClient> {
        let endpoint = Endpoint::from_shared(format!("unix://{}", socket.display()))?;
        SnapshotClient::connect_to(endpoint, socket, snapshotter, namespace)
    }

    /// [`SnapshotClient::connect`] with every call bounded by `timeout`: a
    /// call that takes longer fails with `Cancelled`.
    pub fn connect_with_timeout(socket: &Path, timeout: std::time::Duration) -> Result<SnapshotClient> {
        let endpoint = Endpoint::from_shared(format!("unix://{}", socket.display()))?.timeout(timeout);
        SnapshotClient::connect_to(endpoint, socket, "ferrum", None)
    }

    fn connect_to(
        endpoint: Endpoint,
        socket: &Path,
        snapshotter: &str,
        namespace: Option<&str>,
    ) -> Result<SnapshotClient> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let channel = runtime
            .block_on(endpoint.connect())
            .with_context(|| format!("connecting to {}", socket.display()))?;
        Ok(SnapshotClient {
            runtime,
            client: SnapshotsClient::new(channel),
            snapshotter: snapshotter.to_owned(),
            namespace: namespace.map(str::to_owned),
            lease: None,
        })
    }

    /// Makes every call under containerd lease `id`, which keeps what it
    /// creates from containerd's garbage collector.
    pub fn with_lease(mut self, id: &str) -> SnapshotClient {
        self.lease = Some(id.to_owned());
        self
    }

    pub fn snapshotter(&self) -> &str {
        &self.snapshotter
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(ns) = &self.namespace {
            request
                .metadata_mut()
                .insert(NAMESPACE_HEADER, ns.parse().expect("a namespace is ASCII"));
        }
        if let Some(lease) = &self.lease {
            request
                .metadata_mut()
                .insert(LEASE_HEADER, lease.parse().expect("a lease id is ASCII"));
        }
        request
    }

    pub fn prepare(&mut self, key: &str, parent: &str, labels: Labels) -> CallResult<Vec<Mount>> {
        let request = self.request(api::PrepareSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            key: key.into(),
            parent: parent.into(),
            labels,
        });
        let response = self.runtime.block_on(self.client.prepare(request))?;
        Ok(response.into_inner().mounts)
    }

    pub fn view(&mut self, key: &str, parent: &str, labels: Labels) -> CallResult<Vec<Mount>> {
        let request = self.request(api::ViewSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            key: key.into(),
            parent: parent.into(),
            labels,
        });
        let response = self.runtime.block_on(self.client.view(request))?;
        Ok(response.into_inner().mounts)
    }

    pub fn mounts(&mut self, key: &str) -> CallResult<Vec<Mount>> {
        let request = self.request(api::MountsRequest {
            snapshotter: self.snapshotter.clone(),
            key: key.into(),
        });
        let response = self.runtime.block_on(self.client.mounts(request))?;
        Ok(response.into_inner().mounts)
    }

    pub fn commit(&mut self, name: &str, key: &str, labels: Labels) -> CallResult<()> {
        let request = self.request(api::CommitSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            name: name.into(),
            key: key.into(),
            labels,
        });
        self.runtime.block_on(self.client.commit(request))?;
        Ok(())
    }

    pub fn remove(&mut self, key: &str) -> CallResult<()> {
        let request = self.request(api::RemoveSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            key: key.into(),
        });
        self.runtime.block_on(self.client.remove(request))?;
        Ok(())
    }

    pub fn stat(&mut self, key: &str) -> CallResult<api::Info> {
        let request = self.request(api::StatSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            key: key.into(),
        });
        let response = self.runtime.block_on(self.client.stat(request))?;
        Ok(response.into_inner().info.unwrap_or_default())
    }

    /// Update with field paths (`labels`, `labels.<key>`); none replaces the labels.
    pub fn update(&mut self, key: &str, labels: Labels, paths: &[&str]) -> CallResult<api::Info> {
        let request = self.request(api::UpdateSnapshotRequest {
            snapshotter: self.snapshotter.clone(),
            info: Some(api::Info {
                name: key.into(),
                labels,
                ..api::Info::default()
            }),
            update_mask: (!paths.is_empty()).then(|| prost_types::FieldMask {
                paths: paths.iter().map(|p| p.to_string()).collect(),
            }),
        });
        let response = self.runtime.block_on(self.client.update(request))?;
        Ok(response.into_inner().info.unwrap_or_default())
    }

    /// Every snapshot the filters select, in the order the server streamed them.
    pub fn list(&mut self, filters: &[&str]) -> CallResult<Vec<api::Info>> {
        let request = self.request(api::ListSnapshotsRequest {
            snapshotter: self.snapshotter.clone(),
            filters: filters.iter().map(|f| f.to_string()).collect(),
        });
        let client = &mut self.client;
        self.runtime.block_on(async {
            let mut stream = client.list(request).await?.into_inner();
            let mut infos = Vec::new();
            while let Some(batch) = stream.message().await? {
                infos.extend(batch.info);
            }
            Ok(infos)
        })
    }

    pub fn usage(&mut self, key: &str) -> CallResult<(i64, i64)> {
        let request = self.request(api::UsageRequest {
            snapshotter: self.snapshotter.clone(),
            key: key.into(),
        });
        let response = self
            .runtime
            .block_on(self.client.usage(request))?
            .into_inner();
        Ok((response.size, response.inodes))
    }

    pub fn cleanup(&mut self) -> CallResult<()> {
        let request = self.request(api::CleanupRequest {
            snapshotter: self.snapshotter.clone(),
        });
        self.runtime.block_on(self.client.cleanup(request))?;
        Ok(())
    }
}

/// `labels!{"k" => "v", …}` for the Labels map the calls take.
#[macro_export]
macro_rules! labels {
    ($($k:expr => $v:expr),* $(,)?) => {{
        #[allow(unused_mut)] // labels!{} sets nothing
        let mut map = $crate::snapshots::Labels::new();
        $(map.insert(String::from($k), String::from($v));)*
        map
    }};
}

/// A mount of snapshot mounts on a directory, undone on drop.
pub struct Mounted {
    target: PathBuf,
}

impl Mounted {
    /// Mounts `mounts` (one bind or overlay mount, as overlay snapshotters
    /// return) on `target`, which is created if missing.
    pub fn new(mounts: &[Mount], target: &Path) -> Result<Mounted> {
        let [m] = mounts else {
            bail!("expected exactly one mount, got {mounts:?}");
        };
        fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
        let read_only = m.options.iter().any(|o| o == "ro");
        match m.r#type.as_str() {
            "bind" => {
                let mut flags = MsFlags::MS_BIND;
                if m.options.iter().any(|o| o == "rbind") {
                    flags |= MsFlags::MS_REC;
                }
                mount(
                    Some(m.source.as_str()),
                    target,
                    None::<&str>,
                    flags,
                    None::<&str>,
                )
                .with_context(|| format!("bind-mounting {}", m.source))?;
                let mounted = Mounted {
                    target: target.to_owned(),
                };
                if read_only {
                    mount(
                        None::<&str>,
                        target,
                        None::<&str>,
                        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                        None::<&str>,
                    )
                    .context("remounting read-only")?;
                }
                Ok(mounted)
            }
            "overlay" => {
                let data: Vec<&str> = m
                    .options
                    .iter()
                    .map(String::as_str)
                    .filter(|o| *o != "ro")
                    .collect();
                let flags = if read_only {
                    MsFlags::MS_RDONLY
                } else {
                    MsFlags::empty()
                };
                mount(
                    Some("overlay"),
                    target,
                    Some("overlay"),
                    flags,
                    Some(data.join(",").as_str()),
                )
                .with_context(|| format!("mounting overlay {:?}", m.options))?;
                Ok(Mounted {
                    target: target.to_owned(),
                })
            }
            other => bail!("cannot mount type {other:?}"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(err) = umount2(&self.target, MntFlags::MNT_DETACH) {
            eprintln!("unmounting {}: {err}", self.target.display());
        }
    }
}

/// The directory an overlay mount takes as `name=` (`upperdir`, `workdir`) or
/// the `n`th of its lowerdirs (nearest first).
pub fn overlay_dir(mount: &Mount, name: &str) -> Option<PathBuf> {
    mount
        .options
        .iter()
        .find_map(|o| o.strip_prefix(name)?.strip_prefix('=').map(PathBuf::from))
}

pub fn lower_dirs(mount: &Mount) -> Vec<PathBuf> {
    overlay_dir(mount, "lowerdir")
        .map(|l| l.to_string_lossy().split(':').map(PathBuf::from).collect())
        .unwrap_or_default()
}

/// One entry of a tree as two snapshotters must agree on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `d`, `f`, `l`, `c`, `b`, `p` or `s`, then the permission bits in octal.
    pub kind_mode: String,
    pub uid: u32,
    pub gid: u32,
    /// Files: sha256 of the content; symlinks: the target; devices: major:minor.
    pub content: String,
    /// Files reached by another path first (hard links): that path.
    pub link_of: Option<String>,
    /// Extended attributes in the trusted.overlay.* and user.* namespaces
    /// (values of trusted.overlay.* other than `opaque` only as "(set)").
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}:{} {}",
            self.kind_mode, self.uid, self.gid, self.content
        )?;
        if let Some(first) = &self.link_of {
            write!(f, " =link {first}")?;
        }
        for (k, v) in &self.xattrs {
            write!(f, " {k}={}", String::from_utf8_lossy(v))?;
        }
        Ok(())
    }
}

/// A tree by path relative to its root ("." for the root itself).
pub type Tree = BTreeMap<String, Entry>;

/// Reads the tree under `root` without following symlinks.
pub fn read_tree(root: &Path) -> Result<Tree> {
    let mut tree = Tree::new();
    let mut first_path = HashMap::new();
    let mut pending = vec![PathBuf::from(".")];
    while let Some(rel) = pending.pop() {
        let path = root.join(&rel);
        let meta =
            fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
        let name = rel.to_string_lossy().into_owned();
        let ft = meta.file_type();
        let (kind, content) = if ft.is_dir() {
            let mut children: Vec<PathBuf> = fs::read_dir(&path)?
                .map(|e| e.map(|e| rel.join(e.file_name())))
                .collect::<std::io::Result<_>>()?;
            children.sort();
            pending.extend(children.into_iter().rev());
            ('d', String::new())
        } else if ft.is_symlink() {
            ('l', fs::read_link(&path)?.to_string_lossy().into_owned())
        } else if ft.is_file() {
            ('f', format!("{:x}", Sha256::digest(fs::read(&path)?)))
        } else if ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_char_device() { 'c' } else { 'b' };
            let rdev = meta.rdev();
            (kind, format!("{}:{}", libc::major(rdev), libc::minor(rdev)))
        } else if ft.is_fifo() {
            ('p', String::new())
        } else {
            ('s', String::new())
        };
        let link_of = if !ft.is_dir() && meta.nlink() > 1 {
            let first = first_path
                .entry((meta.dev(), meta.ino()))
                .or_insert_with(|| name.clone());
            (*first != name).then(|| first.clone())
        } else {
            None
        };
        tree.insert(
            name,
            Entry {
                kind_mode: format!("{kind}{:04o}", meta.mode() & 0o7777),
                uid: meta.uid(),
                gid: meta.gid(),
                content,
                link_of,
                xattrs: xattrs(&path)?,
            },
        );
    }
    Ok(tree)
}

fn xattrs(path: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    let mut names = vec![0u8; 64 * 1024];
    // SAFETY: the buffer is valid for its length and the path is NUL-terminated.
    let len = unsafe { libc::llistxattr(c_path.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if len < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOTSUP) {
            return Ok(BTreeMap::new());
        }
        return Err(err).with_context(|| format!("listing xattrs of {}", path.display()));
    }
    names.truncate(len as usize);
    let mut out = BTreeMap::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let text = String::from_utf8_lossy(name).into_owned();
        if !(text.starts_with("trusted.overlay.") || text.starts_with("user.")) {
            continue;
        }
        let c_name = CString::new(name)?;
        let mut value = vec![0u8; 64 * 1024];
        // SAFETY: as above; the name is NUL-terminated.
        let n = unsafe {
            libc::lgetxattr(
                c_path.as_ptr(),
                c_name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("reading xattr {text} of {}", path.display()));
        }
        value.truncate(n as usize);
        // Only the opaque marker's value is the same on every filesystem:
        // origin and the like hold file handles of one particular lower inode.
        if text.starts_with("trusted.overlay.") && text != "trusted.overlay.opaque" {
            value = b"(set)".to_vec();
        }
        out.insert(text, value);
    }
    Ok(out)
}

/// The differences between two trees, one line each; empty when they agree.
pub fn tree_diff(left: &Tree, right: &Tree) -> Vec<String> {
    let mut diff = Vec::new();
    for (path, l) in left {
        match right.get(path) {
            None => diff.push(format!("only left:  {path} {l}")),
            Some(r) if r != l => {
                diff.push(format!("differs:    {path}\n    left  {l}\n    right {r}"))
            }
            Some(_) => {}
        }
    }
    for (path, r) in right {
        if !left.contains_key(path) {
            diff.push(format!("only right: {path} {r}"));
        }
    }
    diff
}
