//! An idle shim lets go of the memory it needed only while working.
//!
//! Creating, starting and deleting a container runs most of the shim's code
//! (ttrpc, protobuf, serde, the runtime); waiting for the next request runs
//! almost none of it. Yet every page of code once run stays mapped, and with
//! the kernel's fault-around each page run maps its neighbours too: an idle
//! shim's resident set was mostly code it no longer runs (4.7 of 7.1 MB our
//! own binary, 1.3 MB libc). Those pages are page cache, shared with every
//! other process mapping the same files, so unmapping them costs nothing but a
//! few minor faults when work comes again.
//!
//! So once the shim has been quiet for a moment after work, it drops its page
//! table entries for read-only file mappings that hold no private copy of a page
//! (`MADV_DONTNEED` leaves the page cache alone and the next access maps the
//! page back; a mapping with private pages — relocated data — is never
//! touched), and returns free heap to the kernel (`malloc_trim`).

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// How long the shim must be quiet before it trims.
const QUIET: Duration = Duration::from_secs(1);

/// Reports work to the trimmer; cheap enough for every request.
#[derive(Clone)]
pub struct Activity(Arc<Notify>);

impl Activity {
    /// Start the trimmer task.
    pub fn start() -> Activity {
        let notify = Arc::new(Notify::new());
        tokio::spawn(trim_when_quiet(notify.clone()));
        // Start-up itself is work.
        notify.notify_one();
        Activity(notify)
    }

    pub fn busy(&self) {
        self.0.notify_one();
    }
}

async fn trim_when_quiet(notify: Arc<Notify>) {
    loop {
        notify.notified().await;
        // Work keeps coming: wait for a quiet moment.
        while tokio::time::timeout(QUIET, notify.notified()).await.is_ok() {}
        trim();
    }
}

fn trim() {
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe { libc::malloc_trim(0) };
    // Unmapping last: code run after it (malloc_trim's too) would be mapped again.
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else { return };
    for (start, end) in droppable(&smaps) {
        // SAFETY: the range is a whole mapping of a file, read-only and with
        // no private page: dropping its page table entries loses nothing.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

/// Address ranges of file mappings that are not writable and hold no
/// anonymous (copied-on-write) page, from /proc/self/smaps.
fn droppable(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut candidate: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if let Some((start, end)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            let perms = fields.next().unwrap_or_default();
            let inode = fields.nth(2).unwrap_or("0");
            let range = usize::from_str_radix(start, 16).ok().zip(usize::from_str_radix(end, 16).ok());
            candidate = range.filter(|_| inode != "0" && !perms.contains('w'));
        } else if first == "Anonymous:" {
            let private = fields.next().unwrap_or("1") != "0";
            if let Some(range) = candidate.take().filter(|_| !private) {
                out.push(range);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0a0000000-55d0a0100000 r--p 00000000 08:01 1234 /usr/bin/shim
Rss:                 100 kB
Anonymous:             0 kB
55d0a0100000-55d0a0500000 r-xp 00100000 08:01 1234 /usr/bin/shim
Anonymous:             0 kB
55d0a0500000-55d0a0600000 r--p 00500000 08:01 1234 /usr/bin/shim
Anonymous:            48 kB
55d0a0600000-55d0a0610000 rw-p 00600000 08:01 1234 /usr/bin/shim
Anonymous:            16 kB
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 
Anonymous:           132 kB
7ffc00000000-7ffc00002000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
";

    #[test]
    fn only_clean_read_only_file_mappings() {
        // Not the relocated (private) one, the writable one, anonymous memory or the vdso.
        assert_eq!(droppable(SMAPS), [(0x55d0a0000000, 0x55d0a0100000), (0x55d0a0100000, 0x55d0a0500000)]);
    }

    #[test]
    fn trimming_our_own_mappings_is_harmless() {
        trim();
        // Code and read-only data come back on use.
        assert_eq!(format!("{}", 6 * 7), "42");
        assert!(!droppable(&std::fs::read_to_string("/proc/self/smaps").unwrap()).is_empty());
    }
}
