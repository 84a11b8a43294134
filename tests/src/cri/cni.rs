//! Pod networking for the CRI tests without a real network: a CNI plugin that
//! answers ADD with one interface and address and configures nothing, next to
//! the real `loopback` plugin the CRI always adds first.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

const PLUGIN: &str = "ferrum-test-cni";
/// The address every pod is given (the plugin configures nothing, so pods
/// never talk to each other through it).
pub const POD_ADDRESS: &str = "10.99.0.2";
/// Where Debian's containernetworking-plugins puts them, then the usual place.
const LOOPBACK_DIRS: [&str; 2] = ["/usr/lib/cni", "/opt/cni/bin"];

/// One line per call (`ADD <container id>`) goes to `calls.log` in the bin dir,
/// so tests can see that a pod's network was torn down.
const SCRIPT: &str = r#"#!/bin/sh
# Test CNI plugin (ferrum's CRI tests): one interface, one fixed address, no real network.
echo "$CNI_COMMAND $CNI_CONTAINERID" >> "$(dirname "$0")/calls.log"
case "$CNI_COMMAND" in
ADD)
  cat >/dev/null
  printf '{"cniVersion":"1.0.0","interfaces":[{"name":"%s","sandbox":"%s"}],"ips":[{"address":"10.99.0.2/24","interface":0}]}' "$CNI_IFNAME" "$CNI_NETNS"
  ;;
VERSION)
  printf '{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]}'
  ;;
*)
  cat >/dev/null
  ;;
esac
"#;

const CONFLIST: &str =
    r#"{"cniVersion":"1.0.0","name":"ferrum-test","plugins":[{"type":"ferrum-test-cni"}]}"#;

pub(crate) struct Cni {
    pub bin: PathBuf,
    pub conf: PathBuf,
}

impl Cni {
    /// Writes the plugin, its conflist and a link to `loopback` under `dir`.
    pub fn install(dir: &Path) -> Result<Cni> {
        let cni = Cni {
            bin: dir.join("bin"),
            conf: dir.join("conf"),
        };
        for d in [&cni.bin, &cni.conf] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let plugin = cni.bin.join(PLUGIN);
        fs::write(&plugin, SCRIPT).with_context(|| format!("writing {}", plugin.display()))?;
        fs::set_permissions(&plugin, fs::Permissions::from_mode(0o755))?;
        let conflist = cni.conf.join("10-ferrum-test.conflist");
        fs::write(&conflist, CONFLIST)
            .with_context(|| format!("writing {}", conflist.display()))?;
        let Some(loopback) = LOOPBACK_DIRS
            .iter()
            .map(|d| Path::new(d).join("loopback"))
            .find(|p| p.is_file())
        else {
            bail!("CNI plugin `loopback` not found in {LOOPBACK_DIRS:?} (Debian package `containernetworking-plugins`)");
        };
        symlink(&loopback, cni.bin.join("loopback")).context("linking the loopback CNI plugin")?;
        Ok(cni)
    }

    /// The plugin's calls so far, e.g. `["ADD abc…", "DEL abc…"]` (VERSION omitted).
    pub fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.bin.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with("VERSION"))
            .map(String::from)
            .collect()
    }
}
