//! Counting the OOM kills in a container's cgroup, for containerd's TaskOOM.
//!
//! The kernel's wakeups are not kills: v1's memory.oom_control eventfd fires
//! for every OOM situation (each failed charge, kill or not) and v2's
//! memory.events changes for "max" and "high" as well — which is why a shim
//! that reports each wakeup reports dozens of OOMs for one kill. Here a wakeup
//! only makes us read the kernel's own `oom_kill` counter (a line of v1's
//! memory.oom_control and of v2's memory.events) and report how much it grew.
//!
//! The watcher is a non-blocking fd (an eventfd on v1, an inotify instance on
//! v2) that a caller's event loop polls for readability: no thread per
//! container.
//!
//! The counter must be read while the cgroup exists, and with the systemd
//! driver it goes as soon as the victim's exit empties the scope — possibly
//! before the caller gets to read it. The kernel counts a kill before it sends
//! the SIGKILL, and on v2 an ancestor's memory.events counts its subtree's
//! kills too: so v2 also watches the parent's counter and keeps how many of
//! its kills are not ours. Once the cgroup is gone, the parent's count minus
//! those is ours — taken once: later growth is a sibling's. (A sibling killed
//! since our last look would be counted as ours too.) v1 has no such ancestor
//! count: there the caller looks again shortly after a wakeup (`settles`).
//!
//! The "not ours" figure only comes from a parent count read while ours held
//! still: memory.events' `oom` line wakes us just before the kill, and a kill
//! between reading ours and the parent's would otherwise pass for a sibling's.

use super::{cg_err, Cgroup};
use crate::error::Result;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub struct OomWatcher {
    /// Readable when the kernel may have counted a kill.
    fd: OwnedFd,
    /// The file with the `oom_kill` line.
    counter: PathBuf,
    /// The counter's value already reported.
    reported: AtomicU64,
    /// v2: the parent's memory.events, and how many of its kills are not ours.
    parent: Option<(PathBuf, AtomicU64)>,
    /// The cgroup was found gone and the parent's count taken.
    gone: AtomicBool,
}

fn last_os_error(path: &Path, what: &str) -> crate::Error {
    cg_err(path, what)(io::Error::last_os_error())
}

/// A new fd returned by a syscall, or the error it set.
fn owned(fd: RawFd, path: &Path, what: &str) -> Result<OwnedFd> {
    if fd < 0 {
        return Err(last_os_error(path, what));
    }
    // SAFETY: a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl OomWatcher {
    /// Watch `cgroup`'s memory controller; None when it has none.
    pub fn new(cgroup: &Cgroup) -> Result<Option<OomWatcher>> {
        let watcher = if let Some(dir) = cgroup.dir_with("memory.oom_control") {
            Self::v1(dir)?
        } else if let Some(dir) = cgroup.dir_with("memory.events") {
            Self::v2(dir)?
        } else {
            return Ok(None);
        };
        // Kills before the watch (a cgroupsPath shared with an earlier container) are not ours.
        watcher.new_kills();
        Ok(Some(watcher))
    }

    /// v1: an eventfd registered for memory.oom_control in cgroup.event_control.
    fn v1(dir: &Path) -> Result<OomWatcher> {
        let counter = dir.join("memory.oom_control");
        // SAFETY: eventfd(2) with flags only.
        let efd = owned(
            unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) },
            dir,
            "eventfd",
        )?;
        // The kernel keeps the registration, not this file, once written.
        let control = std::fs::File::open(&counter).map_err(cg_err(dir, "open memory.oom_control"))?;
        let registration = format!("{} {}", efd.as_raw_fd(), control.as_raw_fd());
        std::fs::write(dir.join("cgroup.event_control"), registration)
            .map_err(cg_err(dir, "register for OOM notifications in cgroup.event_control"))?;
        Ok(Self::with(efd, counter, None))
    }

    /// v2: inotify on memory.events, which the kernel marks modified on each change.
    fn v2(dir: &Path) -> Result<OomWatcher> {
        let counter = dir.join("memory.events");
        // SAFETY: inotify_init1(2) with flags only.
        let ifd = owned(
            unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) },
            dir,
            "inotify_init1",
        )?;
        watch(&ifd, &counter)?;
        // The root cgroup has no memory.events.
        let parent = dir.parent().map(|p| p.join("memory.events")).filter(|p| p.exists());
        if let Some(p) = &parent {
            // Each change there is a look here too, keeping our last look recent.
            watch(&ifd, p)?;
        }
        Ok(Self::with(ifd, counter, parent))
    }

    fn with(fd: OwnedFd, counter: PathBuf, parent: Option<PathBuf>) -> OomWatcher {
        let parent = parent.map(|p| (p, AtomicU64::new(0)));
        OomWatcher { fd, counter, reported: AtomicU64::new(0), parent, gone: AtomicBool::new(false) }
    }

    /// Whether a wakeup may come before the kill is counted, so that the caller
    /// should look again shortly (v1: its eventfd fires as the cgroup hits OOM).
    pub fn settles(&self) -> bool {
        self.counter.ends_with("memory.oom_control")
    }

    /// Consume the pending wakeups and return the kills not reported yet. Safe
    /// to call from several places (an event loop, an exit handler): each kill
    /// is returned once.
    pub fn new_kills(&self) -> u64 {
        self.drain();
        self.look(&mut read_kills)
    }

    /// `new_kills` with the counter files read by `read`.
    fn look(&self, read: &mut dyn FnMut(&Path) -> Option<u64>) -> u64 {
        let Some(mut own) = read(&self.counter) else { return self.last_kills(read) };
        if let Some((path, others)) = &self.parent {
            let parent_now = read(path);
            let Some(again) = read(&self.counter) else { return self.last_kills(read) };
            if let (true, Some(parent_now)) = (again == own, parent_now) {
                others.fetch_max(parent_now.saturating_sub(own), Ordering::AcqRel);
            }
            own = again;
        }
        own.saturating_sub(self.reported.fetch_max(own, Ordering::AcqRel))
    }

    /// The cgroup is gone: its last kills are in the parent's count, once.
    fn last_kills(&self, read: &mut dyn FnMut(&Path) -> Option<u64>) -> u64 {
        let Some((path, others)) = &self.parent else { return 0 };
        if self.gone.swap(true, Ordering::AcqRel) {
            return 0;
        }
        let Some(parent_now) = read(path) else { return 0 };
        let own = parent_now.saturating_sub(others.load(Ordering::Acquire));
        own.saturating_sub(self.reported.fetch_max(own, Ordering::AcqRel))
    }

    /// Read the fd empty, so that it is readable again only on a new wakeup.
    fn drain(&self) {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: reading into a buffer of the given length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return;
            }
        }
    }
}

impl AsFd for OomWatcher {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for OomWatcher {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Cgroup {
    /// The OOM kills the cgroup's memory controller counted so far; None
    /// without one.
    pub(crate) fn oom_kills(&self) -> Option<u64> {
        let file = ["memory.oom_control", "memory.events"]
            .into_iter()
            .find_map(|f| self.dir_with(f).map(|d| d.join(f)))?;
        read_kills(&file)
    }
}

/// The `oom_kill` line of memory.oom_control (v1) or memory.events (v2).
/// Add `file` to the inotify instance, for modifications.
fn watch(ifd: &OwnedFd, file: &Path) -> Result<()> {
    let dir = file.parent().unwrap_or(file);
    let path = std::ffi::CString::new(file.as_os_str().as_encoded_bytes())
        .map_err(|e| cg_err(dir, "watch memory.events")(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: a valid inotify fd and a NUL-terminated path.
    if unsafe { libc::inotify_add_watch(ifd.as_raw_fd(), path.as_ptr(), libc::IN_MODIFY) } < 0 {
        return Err(last_os_error(dir, "watch memory.events"));
    }
    Ok(())
}

fn read_kills(file: &Path) -> Option<u64> {
    parse_kills(&std::fs::read_to_string(file).ok()?)
}

fn parse_kills(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kill_counter_is_found_in_v1_and_v2_files() {
        assert_eq!(parse_kills("oom_kill_disable 0\nunder_oom 1\noom_kill 3\n"), Some(3));
        assert_eq!(
            parse_kills("low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\noom_group_kill 0\n"),
            Some(1)
        );
        assert_eq!(parse_kills("oom_kill_disable 0\n"), None);
    }

    /// A v2 watcher whose files `look` never opens, with `others` kills in
    /// the parent before the watch.
    fn watcher(others: u64) -> OomWatcher {
        let fd = std::fs::File::open("/dev/null").expect("/dev/null").into();
        let watcher = OomWatcher::with(fd, "own".into(), Some("parent".into()));
        watcher.look(&mut |p| Some(if p == Path::new("own") { 0 } else { others }));
        watcher
    }

    /// Plays `reads` (own, parent, own, ...) to one look; None is a gone cgroup.
    fn look(watcher: &OomWatcher, reads: &[Option<u64>]) -> u64 {
        let mut reads = reads.iter();
        let kills = watcher.look(&mut |_| *reads.next().expect("a read more than scripted"));
        assert_eq!(reads.next(), None, "reads left over");
        kills
    }

    /// The interleaving CI met: woken by the `oom` line, we read our count
    /// just before the kill and the parent's just after; then the scope was gone.
    #[test]
    fn a_kill_between_our_read_and_the_parents_is_ours() {
        let w = watcher(2);
        assert_eq!(look(&w, &[Some(0), Some(3), None, Some(3)]), 1, "gone during the look");

        let w = watcher(2);
        assert_eq!(look(&w, &[Some(0), Some(3), Some(1)]), 1, "seen on the second read");
        assert_eq!(look(&w, &[None, Some(3)]), 0, "then gone: no second event");
    }

    #[test]
    fn once_gone_only_the_kills_since_a_steady_look_count_and_once() {
        let w = watcher(2);
        assert_eq!(look(&w, &[Some(1), Some(4), Some(1)]), 1, "a steady look: a sibling killed one more");
        assert_eq!(look(&w, &[None, Some(5)]), 1, "the one since is ours");
        assert_eq!(look(&w, &[None]), 0, "taken once");
    }
}
