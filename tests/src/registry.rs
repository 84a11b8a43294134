//! `Registry`: a private OCI distribution registry on loopback (Debian
//! bookworm's docker-registry 2.8, unpacked by scripts/install-registry into
//! FERRUM_REGISTRY_DIR), for tests that need containerd to pull an image by
//! NAME@DIGEST. containerd's CRI restore of a checkpoint archive pulls the
//! checkpoint's base image (config.dump's rootfsImageRef) unconditionally, and
//! tests have no network but loopback: a test pushes its image here first
//! ([`Registry::push`]) and runs its container under the pushed name.
//!
//! The registry listens on 127.0.0.1 of the host's network namespace, so the
//! containerd that pulls or pushes must run there too: not an Env started with
//! `private_network` (the CRI harness's bridge network).
//!
//! Everything it writes (its config, storage and log) is under the directory
//! the test gives it; drop kills it, and the owner of that directory removes it.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::containerd::{log_file, tail};
use crate::Env;

/// From spawn to `GET /v2/` answering 200; the registry is up in well under a second.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connect and read timeout of one readiness probe.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// What the registry logs once it listens, followed by the address.
const LISTENING: &str = "listening on 127.0.0.1:";

/// A running docker-registry serving 127.0.0.1:PORT over plain HTTP, without
/// authentication (see the module doc).
pub struct Registry {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Registry {
    /// Writes `dir/config.yml` (storage in `dir/storage`), starts
    /// `docker-registry serve` on it with its output in `dir/registry.log`, and
    /// waits until `GET /v2/` answers 200.
    ///
    /// The config asks for `127.0.0.1:0`: the registry listens on a port the
    /// kernel picks and logs it (`listening on 127.0.0.1:PORT`), which is read
    /// back from the log. Unlike choosing a free port beforehand, no other
    /// test running in parallel can take the port in between.
    pub fn start(dir: &Path) -> Result<Registry> {
        let binary = registry_binary()?;
        let storage = dir.join("storage");
        fs::create_dir_all(&storage).with_context(|| format!("creating {}", storage.display()))?;
        let config = dir.join("config.yml");
        fs::write(&config, config_yml(&storage)).with_context(|| format!("writing {}", config.display()))?;
        let log_path = dir.join("registry.log");
        let log = log_file(&log_path)?;
        let child = Command::new(&binary)
            .arg("serve")
            .arg(&config)
            .current_dir(dir)
            // REGISTRY_* variables override the config file; the registry
            // needs nothing from the environment.
            .env_clear()
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {} serve {}", binary.display(), config.display()))?;
        // From here on, dropping `registry` on an error kills it.
        let mut registry = Registry { child, port: 0, log: log_path };
        registry.wait_ready()?;
        Ok(registry)
    }

    /// `127.0.0.1:PORT`: the registry host of the names [`Registry::push`] makes.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Tags `image`, already in containerd namespace `namespace` of `env`, as
    /// `HOST/<its repository path>:<its tag>` (`docker.io/library/busybox:local`
    /// becomes `127.0.0.1:PORT/library/busybox:local`), pushes that name with
    /// `ctr images push --plain-http`, and returns it. The manifest is pushed
    /// as it is, so its digest is the one containerd has for `image`.
    pub fn push(&self, env: &Env, namespace: &str, image: &str) -> Result<String> {
        let target = format!("{}/{}", self.host(), repository_and_tag(image));
        let out = env.ctr_in(namespace, &["images", "tag", "--force", image, &target]);
        if !out.success() {
            bail!("tagging {image} as {target} in namespace {namespace} failed\n{out}");
        }
        let out = env.ctr_in(namespace, &["images", "push", "--plain-http", &target]);
        if !out.success() {
            bail!("pushing {target} from namespace {namespace} failed\n{out}\n{}", tail(&self.log));
        }
        Ok(target)
    }

    /// Polls until the log names the port and `GET /v2/` on it answers 200;
    /// fails, with the log's tail, if the registry exits or takes too long.
    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last_try = "(it never logged that it listens)".to_string();
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for docker-registry")? {
                bail!("docker-registry exited with {status} during startup\n{}", tail(&self.log));
            }
            if self.port == 0 {
                self.port = listening_port(&self.log).unwrap_or(0);
            }
            if self.port != 0 {
                match http_get(self.port, "/v2/") {
                    Ok(response) if status_code(&response) == Some(200) => return Ok(()),
                    Ok(response) => last_try = format!("GET /v2/ answered:\n{response}"),
                    Err(e) => last_try = format!("GET /v2/: {e:#}"),
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "docker-registry did not serve /v2/ within {READY_TIMEOUT:?}: {last_try}\n{}",
                    tail(&self.log)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Registry {
    /// SIGKILLs the registry (it keeps nothing worth a clean shutdown, and
    /// forks nothing) and reaps it; its directory is left to its owner.
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", tail(&self.log));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// scripts/install-registry's docker-registry in FERRUM_REGISTRY_DIR, or an
/// error saying how to get it.
fn registry_binary() -> Result<PathBuf> {
    let Some(dir) = std::env::var_os("FERRUM_REGISTRY_DIR").map(PathBuf::from) else {
        bail!(
            "registry test prerequisite missing: FERRUM_REGISTRY_DIR is unset; \
             FERRUM_REGISTRY_DIR=$(scripts/install-registry)"
        );
    };
    let binary = dir.join("usr/bin/docker-registry");
    let executable = binary.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if !executable {
        bail!(
            "registry test prerequisite missing: usr/bin/docker-registry: not an executable file in \
             FERRUM_REGISTRY_DIR={} (run scripts/install-registry)",
            dir.display()
        );
    }
    Ok(binary)
}

/// A minimal distribution 2.x config: filesystem storage in `storage`, plain
/// HTTP on a loopback port of the kernel's choosing, no auth.
fn config_yml(storage: &Path) -> String {
    // A JSON string is a YAML double-quoted scalar: any path is quoted right.
    let storage = serde_json::to_string(&storage.display().to_string()).expect("a string serializes");
    format!(
        "version: 0.1\n\
         log:\n  level: info\n\
         storage:\n  filesystem:\n    rootdirectory: {storage}\n\
         http:\n  addr: 127.0.0.1:0\n"
    )
}

/// The port of the last `listening on 127.0.0.1:PORT` the registry logged.
fn listening_port(log: &Path) -> Option<u16> {
    let text = fs::read_to_string(log).ok()?;
    let (_, rest) = text.rsplit_once(LISTENING)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|&port| port != 0)
}

/// An HTTP/1.0 GET of `path` from 127.0.0.1:`port`: the whole response.
fn http_get(port: u16, path: &str) -> Result<String> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream =
        TcpStream::connect_timeout(&address, HTTP_TIMEOUT).with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).with_context(|| format!("reading the response from {address}"))?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// `200` of `HTTP/1.0 200 OK…`.
fn status_code(response: &str) -> Option<u16> {
    response.split_whitespace().nth(1)?.parse().ok()
}

/// `library/busybox:local` of `docker.io/library/busybox:local`: the name
/// without its registry host (a first component with a `.` or `:`, or
/// `localhost`) or digest, with `:latest` if it has no tag.
fn repository_and_tag(image: &str) -> String {
    let name = image.split_once('@').map_or(image, |(name, _digest)| name);
    let name = match name.split_once('/') {
        Some((host, rest)) if host.contains(['.', ':']) || host == "localhost" => rest,
        _ => name,
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_and_tag_drops_the_host() {
        assert_eq!(repository_and_tag("docker.io/library/busybox:local"), "library/busybox:local");
        assert_eq!(repository_and_tag("localhost:5000/a/b:1"), "a/b:1");
        assert_eq!(repository_and_tag("localhost/a"), "a:latest");
        assert_eq!(repository_and_tag("busybox"), "busybox:latest");
        assert_eq!(repository_and_tag("library/busybox:x"), "library/busybox:x");
        assert_eq!(repository_and_tag("docker.io/library/busybox:1@sha256:ab"), "library/busybox:1");
        assert_eq!(repository_and_tag("127.0.0.1:5000/busybox@sha256:ab"), "busybox:latest");
    }

    #[test]
    fn status_code_parses() {
        assert_eq!(status_code("HTTP/1.0 200 OK\r\n\r\n{}"), Some(200));
        assert_eq!(status_code("HTTP/1.1 401 Unauthorized\r\n"), Some(401));
        assert_eq!(status_code(""), None);
    }
}
