//! OCI image layout tars (oci-layout, index.json, blobs/sha256/…) for
//! `ctr images import`. Built in-process because CI has no registry; every
//! timestamp is fixed so the same inputs always give the same digests.

mod busybox;
mod layer;
mod nginx;

use std::collections::BTreeSet;
use std::io;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

pub use busybox::{busybox_image, busybox_layer, DEFAULT_BUSYBOX};
pub use layer::{Entry, EntryKind, Layer};
pub use nginx::{nginx_image, NGINX_IMAGE, NGINX_WELCOME};

/// The reference the harness imports the busybox image under.
pub const DEFAULT_IMAGE: &str = "docker.io/library/busybox:local";

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// 2024-01-01T00:00:00Z: the mtime of every tar entry and the image's `created`.
pub(crate) const EPOCH: u64 = 1_704_067_200;
const CREATED: &str = "2024-01-01T00:00:00Z";

const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// `ImageBuilder::new(name).layer(…).layer(…).cmd(&["sh"]).write_tar(path)`.
/// Layers apply bottom first. The image is for the host's platform.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    name: String,
    layers: Vec<Layer>,
    env: Vec<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
}

impl ImageBuilder {
    /// `name` is a full reference (`docker.io/library/busybox:local`); it becomes
    /// the `io.containerd.image.name` annotation, its tag `org.opencontainers.image.ref.name`.
    pub fn new(name: &str) -> ImageBuilder {
        ImageBuilder {
            name: name.to_string(),
            layers: Vec::new(),
            env: vec![DEFAULT_PATH.to_string()],
            entrypoint: Vec::new(),
            cmd: Vec::new(),
        }
    }

    pub fn layer(mut self, layer: Layer) -> ImageBuilder {
        self.layers.push(layer);
        self
    }

    /// Adds `KEY=value` to the config's Env (which starts with the usual PATH).
    pub fn env(mut self, var: &str) -> ImageBuilder {
        self.env.push(var.to_string());
        self
    }

    pub fn entrypoint(mut self, args: &[&str]) -> ImageBuilder {
        self.entrypoint = args.iter().map(|a| a.to_string()).collect();
        self
    }

    pub fn cmd(mut self, args: &[&str]) -> ImageBuilder {
        self.cmd = args.iter().map(|a| a.to_string()).collect();
        self
    }

    pub fn write_tar(&self, path: &Path) -> Result<()> {
        let bytes = self.to_tar()?;
        std::fs::write(path, bytes).with_context(|| format!("writing image tar {}", path.display()))
    }

    /// The whole OCI layout as one tar, in memory (a busybox image is ~2 MB).
    pub fn to_tar(&self) -> Result<Vec<u8>> {
        let arch = host_arch()?;
        let mut layers = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let bytes = layer
                .to_tar()
                .with_context(|| format!("building layer {i} of {}", self.name))?;
            layers.push(Blob::new(MEDIA_LAYER, bytes));
        }
        // Layers are uncompressed, so each diff_id is the layer's own digest.
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
        let mut process = json!({ "Env": self.env });
        if !self.entrypoint.is_empty() {
            process["Entrypoint"] = json!(self.entrypoint);
        }
        if !self.cmd.is_empty() {
            process["Cmd"] = json!(self.cmd);
        }
        let config = Blob::json(
            MEDIA_CONFIG,
            &json!({
                "created": CREATED,
                "architecture": arch,
                "os": "linux",
                "config": process,
                "rootfs": { "type": "layers", "diff_ids": diff_ids },
            }),
        );
        let manifest = Blob::json(
            MEDIA_MANIFEST,
            &json!({
                "schemaVersion": 2,
                "mediaType": MEDIA_MANIFEST,
                "config": config.descriptor(),
                "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
            }),
        );
        let mut manifest_entry = manifest.descriptor();
        manifest_entry["platform"] = json!({ "architecture": arch, "os": "linux" });
        manifest_entry["annotations"] = json!({
            "io.containerd.image.name": self.name,
            "org.opencontainers.image.ref.name": tag_of(&self.name),
        });
        let index = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [manifest_entry],
        });

        // docker-archive's manifest.json beside the layout: Docker 20.10's
        // `docker load` reads only that; containerd and Docker 28 read the
        // OCI index and take this one as the same image.
        let blob_path = |b: &Blob| format!("blobs/sha256/{}", b.digest.trim_start_matches("sha256:"));
        let docker_manifest = json!([{
            "Config": blob_path(&config),
            "RepoTags": [self.name],
            "Layers": layers.iter().map(blob_path).collect::<Vec<_>>(),
        }]);
        let blobs = layers.iter().chain([&config, &manifest]);
        write_layout(&index, &docker_manifest, blobs).with_context(|| format!("writing OCI layout of {}", self.name))
    }
}

struct Blob {
    media_type: &'static str,
    digest: String,
    bytes: Vec<u8>,
}

impl Blob {
    fn new(media_type: &'static str, bytes: Vec<u8>) -> Blob {
        Blob {
            media_type,
            digest: sha256_digest(&bytes),
            bytes,
        }
    }

    fn json(media_type: &'static str, value: &Value) -> Blob {
        Blob::new(
            media_type,
            serde_json::to_vec(value).expect("serialising a json! value"),
        )
    }

    fn descriptor(&self) -> Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len() })
    }
}

fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn write_layout<'a>(index: &Value, docker_manifest: &Value, blobs: impl Iterator<Item = &'a Blob>) -> io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    append_file(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    append_file(&mut tar, "index.json", &serde_json::to_vec(index)?)?;
    append_file(&mut tar, "manifest.json", &serde_json::to_vec(docker_manifest)?)?;
    append_dir(&mut tar, "blobs/")?;
    append_dir(&mut tar, "blobs/sha256/")?;
    // Two identical layers share one blob.
    let mut written = BTreeSet::new();
    for blob in blobs {
        if written.insert(blob.digest.as_str()) {
            let hex = blob.digest.trim_start_matches("sha256:");
            append_file(&mut tar, &format!("blobs/sha256/{hex}"), &blob.bytes)?;
        }
    }
    tar.into_inner()
}

fn append_file(tar: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) -> io::Result<()> {
    let mut header = layout_header(EntryType::Regular, 0o644);
    header.set_size(data.len() as u64);
    tar.append_data(&mut header, path, data)
}

fn append_dir(tar: &mut tar::Builder<Vec<u8>>, path: &str) -> io::Result<()> {
    let mut header = layout_header(EntryType::Directory, 0o755);
    tar.append_data(&mut header, path, io::empty())
}

fn layout_header(kind: EntryType, mode: u32) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_mtime(EPOCH);
    header.set_size(0);
    header
}

/// The tag of a reference: what follows the last `:` of its last path element.
fn tag_of(name: &str) -> &str {
    let last = name.rsplit('/').next().unwrap_or(name);
    last.split_once(':').map_or("latest", |(_, tag)| tag)
}

/// GOARCH spelling of the host's architecture, as OCI configs use it.
fn host_arch() -> Result<&'static str> {
    Ok(match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        other => bail!("no OCI architecture name known for {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Read;

    /// Every regular file of a tar, by path.
    fn files(tar_bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
        let mut archive = tar::Archive::new(tar_bytes);
        let mut out = BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.header().entry_type() == EntryType::Regular {
                let path = entry.path().unwrap().to_string_lossy().into_owned();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                out.insert(path, data);
            }
        }
        out
    }

    fn blob<'a>(files: &'a BTreeMap<String, Vec<u8>>, descriptor: &Value) -> &'a [u8] {
        let digest = descriptor["digest"].as_str().unwrap();
        let bytes = &files[&format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))];
        assert_eq!(
            sha256_digest(bytes),
            digest,
            "blob content matches its name"
        );
        assert_eq!(descriptor["size"].as_u64().unwrap(), bytes.len() as u64);
        bytes
    }

    fn two_layer_image() -> ImageBuilder {
        ImageBuilder::new("example.com/ns/app:v1")
            .layer(Layer::new().dir("etc", 0o755).file("etc/a", "1", 0o644))
            .layer(Layer::new().whiteout("etc/a").file("etc/b", "2", 0o644))
            .entrypoint(&["/bin/sleep"])
            .cmd(&["2147483647"])
            .env("A=b")
    }

    #[test]
    fn layout_is_consistent() {
        let tar = two_layer_image().to_tar().unwrap();
        let files = files(&tar);
        assert_eq!(files["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);

        let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(index["mediaType"], MEDIA_INDEX);
        let entry = &index["manifests"][0];
        assert_eq!(entry["mediaType"], MEDIA_MANIFEST);
        assert_eq!(
            entry["annotations"]["io.containerd.image.name"],
            "example.com/ns/app:v1"
        );
        assert_eq!(
            entry["annotations"]["org.opencontainers.image.ref.name"],
            "v1"
        );
        assert_eq!(entry["platform"]["os"], "linux");

        let manifest: Value = serde_json::from_slice(blob(&files, entry)).unwrap();
        assert_eq!(manifest["mediaType"], MEDIA_MANIFEST);
        assert_eq!(manifest["config"]["mediaType"], MEDIA_CONFIG);
        let config: Value = serde_json::from_slice(blob(&files, &manifest["config"])).unwrap();
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 2);
        for (layer, diff_id) in layers
            .iter()
            .zip(config["rootfs"]["diff_ids"].as_array().unwrap())
        {
            assert_eq!(layer["mediaType"], MEDIA_LAYER);
            blob(&files, layer);
            assert_eq!(layer["digest"], *diff_id);
        }
        let layer2 = files_of_layer(blob(&files, &layers[1]));
        assert!(layer2.contains(&"etc/.wh.a".to_string()));

        assert_eq!(config["architecture"], host_arch().unwrap());
        assert_eq!(config["os"], "linux");
        assert_eq!(config["created"], CREATED);
        assert_eq!(config["rootfs"]["type"], "layers");
        assert_eq!(config["config"]["Entrypoint"], json!(["/bin/sleep"]));
        assert_eq!(config["config"]["Cmd"], json!(["2147483647"]));
        assert_eq!(config["config"]["Env"], json!([DEFAULT_PATH, "A=b"]));
    }

    fn files_of_layer(tar_bytes: &[u8]) -> Vec<String> {
        files(tar_bytes).into_keys().collect()
    }

    #[test]
    fn same_input_same_bytes() {
        assert_eq!(
            two_layer_image().to_tar().unwrap(),
            two_layer_image().to_tar().unwrap()
        );
    }

    #[test]
    fn identical_layers_are_stored_once() {
        let layer = Layer::new().file("x", "y", 0o644);
        let tar = ImageBuilder::new("a:b")
            .layer(layer.clone())
            .layer(layer)
            .to_tar()
            .unwrap();
        let blobs = files(&tar)
            .keys()
            .filter(|p| p.starts_with("blobs/"))
            .count();
        assert_eq!(blobs, 3, "one layer, config, manifest");
    }

    #[test]
    fn tags() {
        assert_eq!(tag_of("docker.io/library/busybox:local"), "local");
        assert_eq!(tag_of("localhost:5000/busybox"), "latest");
        assert_eq!(tag_of("busybox"), "latest");
    }
}
