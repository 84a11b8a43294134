//! Containers from a whole config.json (`ctr run --config`): for what ctr has
//! no flag for (hooks, a custom user, any field). containerd then takes the
//! spec as it is, with no image and no snapshot: the rootfs is a busybox
//! directory of our own under the Env's temp dir.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::{CtrOutput, Env};

/// A config.json for container `id`, starting from containerd's default spec.
pub struct SpecFile {
    pub id: String,
    /// The spec; edit freely before `run`.
    pub spec: Value,
    /// The container's rootfs directory on the host.
    pub rootfs: PathBuf,
}

impl SpecFile {
    /// containerd's default spec (`ctr oci spec`) running `args`, in the Env's
    /// namespace's cgroup (as ctr does), on a fresh busybox rootfs.
    pub fn new(env: &Env, id: &str, args: &[&str]) -> Result<SpecFile> {
        let out = env.ctr(&["oci", "spec"]);
        anyhow::ensure!(out.success(), "ctr oci spec: {out}");
        let mut spec: Value = serde_json::from_str(&out.stdout).context("parse ctr oci spec")?;
        let rootfs = env.root_dir().join("rootfs").join(id);
        busybox_rootfs(env.busybox_path(), &rootfs)?;
        spec["root"] = json!({ "path": rootfs, "readonly": false });
        spec["process"]["args"] = json!(args);
        // `ctr oci spec` has no env; an image would bring PATH (runc needs it).
        spec["process"]["env"] =
            json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]);
        spec["linux"]["cgroupsPath"] = json!(format!("/{}/{id}", env.namespace()));
        Ok(SpecFile {
            id: id.into(),
            spec,
            rootfs,
        })
    }

    /// `ctr run --rm --runtime RUNTIME --config <file> … ID`, waiting up to a minute.
    pub fn run(&self, env: &Env, runtime: &str, flags: &[&str]) -> Result<CtrOutput> {
        let file = env
            .root_dir()
            .join(format!("{}-{}.json", self.id, runtime.replace('.', "_")));
        std::fs::write(&file, serde_json::to_vec_pretty(&self.spec)?)?;
        let file = file.to_string_lossy().into_owned();
        let mut args = vec!["run", "--runtime", runtime, "--config", &file];
        args.extend_from_slice(flags);
        args.push(&self.id);
        Ok(env.ctr_timeout(&args, Duration::from_secs(60)))
    }
}

/// The busybox image's own layer (busybox with every applet, passwd, group,
/// the usual directories), unpacked: the same filesystem as `ctr run` of the image.
pub(crate) fn busybox_rootfs(busybox: &Path, rootfs: &Path) -> Result<()> {
    let layer = crate::image::busybox_layer(busybox)?
        .to_tar()
        .context("busybox layer")?;
    tar::Archive::new(&layer[..])
        .unpack(rootfs)
        .with_context(|| format!("unpack busybox into {}", rootfs.display()))
}
