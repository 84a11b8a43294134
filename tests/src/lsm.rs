//! AppArmor and SELinux for the tests of the guest lanes that boot User-Mode
//! Linux with one of them on (scripts/uml/test-lane, `FERRUM_UML_LSM`):
//! whether it is on, AppArmor profiles loaded for one test and removed on
//! drop, SELinux file labels, a process's label.

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

/// AppArmor's securityfs directory: there only when AppArmor is on and
/// securityfs is mounted, which is what apparmor_parser and containerd need.
const SECURITYFS: &str = "/sys/kernel/security/apparmor";

/// Panics unless AppArmor is on. The tests that need it are `#[ignore]`d, so a
/// plain `cargo test` on a host without AppArmor never runs them; run anywhere
/// else with `--ignored`, they fail rather than pass without testing anything.
#[track_caller]
pub fn require_apparmor() {
    let enabled = fs::read_to_string("/sys/module/apparmor/parameters/enabled").is_ok_and(|s| s.trim() == "Y");
    assert!(
        enabled && Path::new(SECURITYFS).is_dir(),
        "AppArmor is off here (or securityfs is not mounted at /sys/kernel/security): these tests run in \
         the AppArmor guest lane, e.g. FERRUM_UML_LSM=apparmor scripts/uml/run TEST-BINARY --ignored"
    );
}

/// A profile loaded into the kernel for one test, under a name no other test
/// or process uses; removed from the kernel on drop.
pub struct Profile {
    name: String,
}

impl Profile {
    /// Loads `ferrum-<purpose>-<pid>-<n>` with `rules` (AppArmor rules, each
    /// ending in `,`). The profile attaches to disconnected paths, as
    /// containerd's own profile does: a container's paths are its mount
    /// namespace's, after pivot_root.
    pub fn load(purpose: &str, rules: &str) -> Result<Profile> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("ferrum-{purpose}-{}-{n}", std::process::id());
        let text = format!("profile {name} flags=(attach_disconnected,mediate_deleted) {{\n{rules}\n}}\n");
        // No file: apparmor_parser reads the profile from stdin. --skip-cache:
        // nothing is written under /var/cache/apparmor.
        let mut parser = Command::new("apparmor_parser")
            .args(["--replace", "--skip-cache"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running apparmor_parser (Debian package `apparmor`)")?;
        parser.stdin.take().expect("piped stdin").write_all(text.as_bytes())?;
        let out = parser.wait_with_output()?;
        if !out.status.success() {
            bail!("apparmor_parser could not load {name}: {}\n{text}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(Profile { name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        // Writing a name to `.remove` unloads that profile, as `apparmor_parser -R` does.
        if let Err(e) = fs::write(Path::new(SECURITYFS).join(".remove"), &self.name) {
            eprintln!("removing AppArmor profile {}: {e}", self.name);
        }
    }
}

/// Whether a profile called `name` is loaded (by anyone: containerd's CRI
/// plugin loads its default profile itself).
pub fn is_loaded(name: &str) -> bool {
    let profiles = fs::read_to_string(Path::new(SECURITYFS).join("profiles")).unwrap_or_default();
    // One `NAME (MODE)` per line.
    profiles.lines().any(|l| l.rsplit_once(" (").is_some_and(|(n, _)| n == name))
}

/// The label of process `pid` as its major LSM reports it: `NAME (enforce)`
/// or `unconfined` under AppArmor, `user:role:type:level` under SELinux.
pub fn label_of(pid: i32) -> Result<String> {
    let path = format!("/proc/{pid}/attr/current");
    let label = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // AppArmor ends it with a newline, SELinux with a NUL.
    Ok(label.trim_end_matches(['\n', '\0']).to_string())
}

/// Panics unless SELinux enforces a policy: the SELinux guest lane's
/// (`FERRUM_UML_LSM=selinux`), whose test module gives the types
/// `ferrum_test_t` and `ferrum_test_denied_t`.
#[track_caller]
pub fn require_selinux() {
    let enforcing = fs::read_to_string("/sys/fs/selinux/enforce").is_ok_and(|s| s.trim() == "1");
    assert!(
        enforcing,
        "SELinux does not enforce a policy here: these tests run in the SELinux guest lane, e.g. \
         FERRUM_UML_LSM=selinux scripts/uml/run TEST-BINARY --ignored"
    );
}

/// Labels file `path` `context` (`user:role:type:level`), as chcon does.
pub fn set_file_label(path: &Path, context: &str) -> Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: NUL-terminated name and path; the value is a valid slice.
    let rc = unsafe {
        libc::setxattr(c_path.as_ptr(), c"security.selinux".as_ptr(), context.as_ptr().cast(), context.len(), 0)
    };
    if rc != 0 {
        bail!("labelling {} {context}: {}", path.display(), std::io::Error::last_os_error());
    }
    Ok(())
}
