//! Pod networking for the CRI tests: by default a CNI plugin that answers ADD
//! with one interface and address and configures nothing; or the real `bridge`
//! plugin with `host-local` addresses, for an Env whose containerd has a
//! network namespace of its own (the bridge lives there, never on the host).
//! Either way next to the real `loopback` plugin the CRI always adds first.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

const PLUGIN: &str = "ferrum-test-cni";
/// The address every pod is given (the plugin configures nothing, so pods
/// never talk to each other through it).
pub const POD_ADDRESS: &str = "10.99.0.2";
/// Where Debian's containernetworking-plugins puts them, then the usual place.
const PLUGIN_DIRS: [&str; 2] = ["/usr/lib/cni", "/opt/cni/bin"];
/// The bridge's subnet; the bridge itself takes .1.
pub const BRIDGE_SUBNET: &str = "10.99.0.0/24";

/// Which network pods get.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Network {
    /// The script below: an address on paper, no interface.
    #[default]
    Stub,
    /// containernetworking-plugins' bridge + host-local: pods reach each other.
    Bridge,
}

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

/// Links the named plugins of containernetworking-plugins into `bin`.
fn link_plugins(bin: &Path, names: &[&str]) -> Result<()> {
    for name in names {
        let Some(found) = PLUGIN_DIRS
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
        else {
            bail!("CNI plugin `{name}` not found in {PLUGIN_DIRS:?} (Debian package `containernetworking-plugins`)");
        };
        symlink(&found, bin.join(name))
            .with_context(|| format!("linking the {name} CNI plugin"))?;
    }
    Ok(())
}

const CONFLIST: &str =
    r#"{"cniVersion":"1.0.0","name":"ferrum-test","plugins":[{"type":"ferrum-test-cni"}]}"#;

pub(crate) struct Cni {
    pub bin: PathBuf,
    pub conf: PathBuf,
}

impl Cni {
    /// Writes the conflist for `network` under `dir`, with the plugins it needs.
    pub fn install(dir: &Path, network: Network) -> Result<Cni> {
        let cni = Cni {
            bin: dir.join("bin"),
            conf: dir.join("conf"),
        };
        for d in [&cni.bin, &cni.conf] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let conflist = match network {
            Network::Stub => {
                let plugin = cni.bin.join(PLUGIN);
                fs::write(&plugin, SCRIPT)
                    .with_context(|| format!("writing {}", plugin.display()))?;
                fs::set_permissions(&plugin, fs::Permissions::from_mode(0o755))?;
                link_plugins(&cni.bin, &["loopback"])?;
                CONFLIST.to_string()
            }
            Network::Bridge => {
                link_plugins(&cni.bin, &["loopback", "bridge", "host-local"])?;
                // No masquerading or port maps: nothing but the pods uses the bridge.
                serde_json::json!({
                    "cniVersion": "1.0.0",
                    "name": "ferrum-bridge",
                    "plugins": [{
                        "type": "bridge",
                        "bridge": "ferrum0",
                        "isGateway": true,
                        "ipMasq": false,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{ "subnet": BRIDGE_SUBNET }]],
                            "dataDir": dir.join("ipam"),
                        },
                    }],
                })
                .to_string()
            }
        };
        let file = cni.conf.join("10-ferrum-test.conflist");
        fs::write(&file, conflist).with_context(|| format!("writing {}", file.display()))?;
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
