//! The test image: the host's busybox-static with one symlink per applet and
//! just enough of a root filesystem (passwd, group, mount points) for runtimes.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};

use super::{ImageBuilder, Layer};
use crate::elf::needs_interpreter;

/// Where Debian's busybox-static installs it.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";

const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnobody:x:65534:\n";

/// A one-layer busybox image whose default command is `sh`.
pub fn busybox_image(name: &str, busybox: &Path) -> Result<ImageBuilder> {
    Ok(ImageBuilder::new(name)
        .layer(busybox_layer(busybox)?)
        .cmd(&["sh"]))
}

pub fn busybox_layer(busybox: &Path) -> Result<Layer> {
    let binary = fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?;
    ensure!(
        !needs_interpreter(&binary),
        "{} is dynamically linked; the image has no libc, install busybox-static",
        busybox.display()
    );
    let mut layer = Layer::new();
    for dir in ["bin", "dev", "etc", "proc", "run", "sys"] {
        layer = layer.dir(dir, 0o755);
    }
    layer = layer
        .dir("root", 0o700)
        .dir("tmp", 0o1777)
        .file("bin/busybox", binary, 0o755);
    for applet in applets(busybox)? {
        layer = layer.symlink(&format!("bin/{applet}"), "busybox");
    }
    Ok(layer
        .file("etc/passwd", PASSWD, 0o644)
        .file("etc/group", GROUP, 0o644))
}

/// `busybox --list`, sorted so the layer (and its digest) does not depend on
/// the order busybox prints them in.
fn applets(busybox: &Path) -> Result<Vec<String>> {
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .with_context(|| format!("running {} --list", busybox.display()))?;
    if !out.status.success() {
        bail!(
            "{} --list: {}: {}",
            busybox.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let list = String::from_utf8(out.stdout).context("busybox --list printed non-UTF-8")?;
    let mut applets: Vec<String> = list
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
        .map(String::from)
        .collect();
    if let Some(bad) = applets.iter().find(|a| a.contains('/')) {
        bail!("busybox --list gave a path, not an applet name: {bad}");
    }
    applets.sort();
    applets.dedup();
    ensure!(
        applets.iter().any(|a| a == "sh"),
        "{} has no sh applet",
        busybox.display()
    );
    Ok(applets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_has_applets_and_rootfs_skeleton() {
        let tar = busybox_layer(Path::new(DEFAULT_BUSYBOX))
            .unwrap()
            .to_tar()
            .unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut seen = std::collections::BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let path = entry
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string();
            let link = entry
                .link_name()
                .unwrap()
                .map(|l| l.to_string_lossy().into_owned());
            seen.insert(path, (entry.header().mode().unwrap(), link));
        }
        for applet in ["sh", "echo", "sleep", "cat", "true"] {
            assert_eq!(
                seen[&format!("bin/{applet}")].1.as_deref(),
                Some("busybox"),
                "{applet}"
            );
        }
        assert_eq!(seen["tmp"].0, 0o1777);
        for dir in [
            "proc",
            "dev",
            "sys",
            "etc",
            "root",
            "run",
            "bin/busybox",
            "etc/passwd",
            "etc/group",
        ] {
            assert!(seen.contains_key(dir), "{dir} missing");
        }
    }
}
