//! Helpers for unit tests that need privileges.

/// True when the test may go on. Without root, a test is skipped with a note —
/// except under CI (CI=true), where a missing prerequisite is a failure.
pub(crate) fn have_root(why: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "this test needs root ({why}) and CI runs as root"
    );
    eprintln!("skipped: needs root ({why})");
    false
}
