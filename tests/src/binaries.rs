//! Finding the programs a test Env runs, and saying exactly what is missing.

use std::env;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::image::DEFAULT_BUSYBOX;

/// Directory with ferrum's own binaries when FERRUM_BIN_DIR is unset.
const WORKSPACE_BIN_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/debug");
/// Searched after the caller's PATH: root's usual directories, in case the caller's
/// PATH lacks the sbin ones.
pub(crate) const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(crate) const SNAPSHOTTER: &str = "ferrum-snapshotter";

/// Where ferrum's own binaries are: FERRUM_BIN_DIR, else the workspace's target/debug.
fn ferrum_bin_dir() -> PathBuf {
    env::var_os("FERRUM_BIN_DIR").map_or_else(|| PathBuf::from(WORKSPACE_BIN_DIR), PathBuf::from)
}

/// One of ferrum's own binaries.
pub fn ferrum_binary(name: &str) -> PathBuf {
    ferrum_bin_dir().join(name)
}

#[derive(Debug)]
pub(crate) struct Binaries {
    pub containerd: PathBuf,
    pub ctr: PathBuf,
    pub busybox: PathBuf,
    /// Holds containerd-shim-ferrum-v2 and ferrum-snapshotter.
    pub ferrum_dir: PathBuf,
    /// FERRUM_CONTAINERD_DIR: a containerd build other than the system's, whose
    /// containerd-shim-runc-v2 must win over the system's too.
    pub containerd_dir: Option<PathBuf>,
    pub snapshotter: Option<PathBuf>,
}

impl Binaries {
    /// Everything the Env needs, or one error listing every missing piece.
    pub fn locate(want_snapshotter: bool) -> Result<Binaries> {
        let mut missing = Vec::new();
        let euid = nix::unistd::geteuid();
        if !euid.is_root() {
            missing.push(format!(
                "root: running as uid {euid}; containerd, mounts and cgroups need root"
            ));
        }

        let containerd_dir = env::var_os("FERRUM_CONTAINERD_DIR").map(PathBuf::from);
        let mut containerd_tool = |name: &str| {
            match &containerd_dir {
                Some(dir) => executable(&dir.join(name)).ok_or_else(|| {
                    format!(
                        "{name}: not an executable file in FERRUM_CONTAINERD_DIR={}",
                        dir.display()
                    )
                }),
                None => on_path(name)
                    .ok_or_else(|| format!("{name}: not on PATH (Debian package `containerd`)")),
            }
            .map_err(|e| missing.push(e))
            .ok()
        };
        let containerd = containerd_tool("containerd");
        let ctr = containerd_tool("ctr");

        let busybox = executable(Path::new(DEFAULT_BUSYBOX)).or_else(|| on_path("busybox"));
        if busybox.is_none() {
            missing.push(format!(
                "busybox: neither {DEFAULT_BUSYBOX} nor on PATH (Debian package `busybox-static`)"
            ));
        }

        let ferrum_dir = ferrum_bin_dir();
        let ferrum_dir = ferrum_dir.canonicalize().unwrap_or(ferrum_dir);
        let snapshotter = if want_snapshotter {
            let found = executable(&ferrum_dir.join(SNAPSHOTTER));
            if found.is_none() {
                missing.push(format!(
                    "{SNAPSHOTTER}: not in {} (run `cargo build -p ferrum-snapshotter`, set FERRUM_BIN_DIR, \
                     or start the Env with ferrum_snapshotter: false)",
                    ferrum_dir.display()
                ));
            }
            found
        } else {
            None
        };

        match (containerd, ctr, busybox) {
            (Some(containerd), Some(ctr), Some(busybox)) if missing.is_empty() => Ok(Binaries {
                containerd,
                ctr,
                busybox,
                ferrum_dir,
                containerd_dir,
                snapshotter,
            }),
            _ => bail!(
                "test prerequisites missing:\n  - {}",
                missing.join("\n  - ")
            ),
        }
    }

    /// containerd's PATH: ferrum's binaries first so `io.containerd.ferrum.v2`
    /// resolves to the shim under test, then the chosen containerd build.
    pub fn containerd_path(&self) -> String {
        let mut dirs = vec![self.ferrum_dir.display().to_string()];
        dirs.extend(self.containerd_dir.iter().map(|d| d.display().to_string()));
        dirs.extend(env::var("PATH").ok().filter(|p| !p.is_empty()));
        dirs.push(SYSTEM_PATH.to_string());
        dirs.join(":")
    }
}

/// The directory of scripts/install-criu's `criu` (FERRUM_CRIU_DIR): sid's
/// CRIU, as Debian bookworm's fails `criu check` on this kernel.
pub fn criu_dir() -> Result<PathBuf> {
    let Some(dir) = env::var_os("FERRUM_CRIU_DIR").map(PathBuf::from) else {
        bail!("CRIU test prerequisite missing: FERRUM_CRIU_DIR is unset; FERRUM_CRIU_DIR=$(scripts/install-criu)");
    };
    if executable(&dir.join("criu")).is_none() {
        bail!("CRIU test prerequisite missing: no executable criu in FERRUM_CRIU_DIR={} (run scripts/install-criu)", dir.display());
    }
    Ok(dir)
}

pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    let path = env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(SYSTEM_PATH.split(':'))
        .filter(|dir| !dir.is_empty())
        .find_map(|dir| executable(&Path::new(dir).join(name)))
}

fn executable(path: &Path) -> Option<PathBuf> {
    let meta = path.metadata().ok()?;
    (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then(|| path.to_path_buf())
}

/// The programs a [`crate::docker::Docker`] runs: sid's Docker as
/// scripts/install-docker unpacks it (FERRUM_DOCKER_DIR), the nginx tree
/// unpacked beside it, and the host tools dockerd runs inside its network
/// namespace.
#[derive(Debug, Clone)]
pub(crate) struct DockerBinaries {
    pub dockerd: PathBuf,
    pub docker: PathBuf,
    pub docker_proxy: PathBuf,
    pub docker_init: PathBuf,
    /// The unpacked nginx and nginx-common packages with the libraries nginx
    /// links, for the nginx image.
    pub nginx_tree: PathBuf,
}

impl DockerBinaries {
    /// Everything, or one error listing every missing piece. The Docker tests
    /// run on containerd 2.x only (its Task API v3 and image store are what
    /// Docker 28's containerd integration is written for): a 1.x containerd is
    /// one of the missing pieces.
    pub fn locate(containerd_schema: crate::containerd::Schema) -> Result<DockerBinaries> {
        let mut missing = Vec::new();
        if containerd_schema != crate::containerd::Schema::V3 {
            missing.push(
                "containerd 2.x: the Docker tests run on the containerd 2.1 lane, \
                 FERRUM_CONTAINERD_DIR=$(scripts/install-containerd2)"
                    .to_string(),
            );
        }
        let (mut tree, mut binaries) = Self::unpacked("FERRUM_DOCKER_DIR", "scripts/install-docker", missing)?;
        // The unpacked nginx and nginx-common packages with their libraries.
        let nginx = tree.find("nginx/usr/sbin/nginx");
        binaries.nginx_tree = nginx.ancestors().nth(3).expect("nginx/usr/sbin/nginx has three parents").into();
        tree.check("Docker", binaries)
    }

    /// Docker 20.10 (scripts/install-docker20), for the `ferrum` CLI as an
    /// added runtime on containerd 1.6. It has no nginx tree.
    pub fn locate_20() -> Result<DockerBinaries> {
        let (tree, binaries) = Self::unpacked("FERRUM_DOCKER20_DIR", "scripts/install-docker20", Vec::new())?;
        tree.check("Docker 20.10", binaries)
    }

    /// Docker's programs in the tree `$var` names, which `script` unpacks,
    /// and the tree, which keeps what is missing for `check`.
    fn unpacked(var: &'static str, script: &'static str, mut missing: Vec<String>) -> Result<(Unpacked, DockerBinaries)> {
        for tool in ["iptables", "ip"] {
            if on_path(tool).is_none() {
                missing.push(format!(
                    "{tool}: not on PATH (Debian package `{}`); dockerd runs it in its network namespace",
                    if tool == "ip" { "iproute2" } else { tool }
                ));
            }
        }
        let Some(dir) = env::var_os(var).map(PathBuf::from) else {
            missing.push(format!("{var}: unset; {var}=$({script})"));
            bail!("Docker test prerequisites missing:\n  - {}", missing.join("\n  - "));
        };
        let mut tree = Unpacked { dir, var, script, missing };
        let binaries = DockerBinaries {
            dockerd: tree.find("usr/sbin/dockerd"),
            docker: tree.find("usr/bin/docker"),
            docker_proxy: tree.find("usr/sbin/docker-proxy"),
            docker_init: tree.find("usr/bin/docker-init"),
            nginx_tree: PathBuf::new(),
        };
        Ok((tree, binaries))
    }
}

/// An unpacked Docker tree being looked through: what it has, what it lacks.
struct Unpacked {
    dir: PathBuf,
    var: &'static str,
    script: &'static str,
    missing: Vec<String>,
}

impl Unpacked {
    fn find(&mut self, relative: &str) -> PathBuf {
        let path = self.dir.join(relative);
        if executable(&path).is_none() {
            self.missing.push(format!(
                "{relative}: not an executable file in {}={} (run {})",
                self.var,
                self.dir.display(),
                self.script
            ));
        }
        path
    }

    /// `binaries`, found in this tree, or one error listing what it lacks.
    fn check(self, what: &str, binaries: DockerBinaries) -> Result<DockerBinaries> {
        if !self.missing.is_empty() {
            bail!("{what} test prerequisites missing:\n  - {}", self.missing.join("\n  - "));
        }
        Ok(binaries)
    }
}
