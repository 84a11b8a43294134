//! Snapshot directories built ahead of the Prepare that takes one.
//!
//! An active snapshot's directory is three mkdirs (itself, `fs`, `work`). On
//! ext4 without a journal (this project's VMs, and many nodes' local disks)
//! a new inode is searched for past every inode freed in the last minute, so
//! on a node where containers come and go each mkdir costs 0.1–0.3 ms, most of
//! a Prepare (containerd's overlayfs pays the same). A Prepare that finds a
//! spare renames it into place, and a background thread builds the next.
//!
//! Spares live in `<root>/spares/`, beside the snapshots, so no listing or
//! cleanup of snapshots ever sees one. Only this process makes and takes them;
//! what a previous process left there (a crash may leave one half built) is
//! deleted when they are opened, and the ready ones when they are dropped.

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Spares kept ready. An image unpack prepares one layer after another with
/// a layer's extraction in between, which gives the thread time to refill.
const READY: usize = 2;

pub struct Spares {
    shared: Arc<Shared>,
    builder: Option<JoinHandle<()>>,
}

/// Builds one spare at the path given (`layout::make_spare`).
type Build = fn(&Path) -> Result<(), crate::layout::Error>;

struct Shared {
    dir: PathBuf,
    build: Build,
    state: Mutex<State>,
    taken: Condvar,
}

#[derive(Default)]
struct State {
    ready: Vec<PathBuf>,
    next: u64,
    stopping: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Spares {
    /// Empties `dir` (made if missing) and starts building spares in it with
    /// `build`.
    pub fn open(dir: PathBuf, build: Build) -> io::Result<Spares> {
        match DirBuilder::new().mode(0o700).create(&dir) {
            Err(err) if err.kind() != io::ErrorKind::AlreadyExists => return Err(err),
            _ => {}
        }
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            match entry.file_type()?.is_dir() {
                true => fs::remove_dir_all(entry.path())?,
                false => fs::remove_file(entry.path())?,
            }
        }
        let shared = Arc::new(Shared { dir, build, state: Mutex::default(), taken: Condvar::new() });
        let worker = Arc::clone(&shared);
        let builder = std::thread::Builder::new()
            .name("spares".into())
            .spawn(move || keep_ready(&worker))?;
        Ok(Spares { shared, builder: Some(builder) })
    }

    /// A ready directory, if one is: the caller renames it into place.
    pub fn take(&self) -> Option<PathBuf> {
        let spare = self.shared.lock().ready.pop();
        self.shared.taken.notify_one();
        spare
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.taken.notify_one();
        if let Some(builder) = self.builder.take() {
            let _ = builder.join();
        }
        for spare in self.shared.lock().ready.drain(..) {
            let _ = fs::remove_dir_all(spare);
        }
    }
}

/// The builder thread: keeps READY spares, sleeping until one is taken. A
/// spare it cannot build (a full or read-only disk) is reported once and
/// tried again at the next take; the Prepare meanwhile builds its own
/// directory and reports the error to containerd.
fn keep_ready(shared: &Shared) {
    let mut failing = false;
    let mut state = shared.lock();
    loop {
        while !state.stopping && (state.ready.len() >= READY || failing) {
            state = shared.taken.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
            failing = false;
        }
        if state.stopping {
            return;
        }
        let path = shared.dir.join(state.next.to_string());
        state.next += 1;
        drop(state);
        let built = (shared.build)(&path);
        state = shared.lock();
        match built {
            Ok(()) => state.ready.push(path),
            Err(err) => {
                eprintln!("ferrum-snapshotter: warning: building a spare directory: {err}");
                let _ = fs::remove_dir_all(&path);
                failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    fn ready(spares: &Spares, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while spares.shared.lock().ready.len() < n {
            assert!(Instant::now() < deadline, "{n} spares were not built");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn spares_are_refilled_and_gone_when_dropped() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("spares");
        let spares = Spares::open(dir.clone(), crate::layout::make_spare).unwrap();
        ready(&spares, READY);
        let spare = spares.take().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!((mode(&spare), mode(&spare.join("fs")), mode(&spare.join("work"))), (0o700, 0o755, 0o711));
        fs::rename(&spare, root.path().join("taken")).unwrap();
        ready(&spares, READY);
        drop(spares);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "ready spares are removed");
        assert!(root.path().join("taken/work").is_dir(), "a taken one is the caller's");
    }

    #[test]
    fn what_an_earlier_process_left_is_deleted() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("spares");
        fs::create_dir_all(dir.join("7/fs/half")).unwrap();
        fs::write(dir.join("stray"), b"").unwrap();
        let spares = Spares::open(dir.clone(), crate::layout::make_spare).unwrap();
        ready(&spares, READY);
        assert!(!dir.join("7").exists() && !dir.join("stray").exists());
        drop(spares);
    }
}
