//! ferrum-snapshotter: an overlayfs snapshotter that containerd uses as a
//! proxy plugin (`[proxy_plugins.NAME] type = "snapshot"`), serving the
//! Snapshots gRPC API on a Unix socket.

mod config;
mod filter;
mod layout;
mod overlay;
mod quote;
mod service;
mod snapshotter;
mod spares;
mod store;
mod usage;

use std::ffi::OsString;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use ferrum_protos::snapshots::v1::snapshots_server::SnapshotsServer;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::unistd::{chown, Gid, Group};
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_stream::wrappers::UnixListenerStream;

use crate::service::SnapshotService;
use crate::snapshotter::Snapshotter;

const USAGE: &str = "\
usage: ferrum-snapshotter [--config FILE] [--root DIR] [--address SOCKET]

Serves containerd's Snapshots API (overlayfs snapshots) on a Unix socket.
Point containerd at it with:

  [proxy_plugins.ferrum]
    type = \"snapshot\"
    address = \"SOCKET\"

options:
  --config FILE      TOML settings: root, address, [socket] mode and group,
                     [mount] options (see examples/ferrum-snapshotter.toml)
  --root DIR         where snapshots and their metadata live (created if
                     missing); overrides the config file
  --address SOCKET   Unix socket to listen on (a stale socket file is
                     replaced); overrides the config file
  -h, --help         show this help

SIGTERM or SIGINT stops it once in-flight calls have finished.";

struct Options {
    config: Option<PathBuf>,
    root: Option<PathBuf>,
    address: Option<PathBuf>,
}

enum Command {
    Help,
    Serve(Options),
}

fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut options = Options {
        config: None,
        root: None,
        address: None,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let text = arg.to_string_lossy();
        let (name, inline) = match text.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (name.to_owned(), Some(OsString::from(value)))
            }
            _ => (text.into_owned(), None),
        };
        let slot = match name.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--config" => &mut options.config,
            "--root" => &mut options.root,
            "--address" => &mut options.address,
            _ => return Err(format!("unknown argument {name:?}")),
        };
        let value = inline
            .or_else(|| args.next())
            .ok_or(format!("{name} needs a value"))?;
        if value.is_empty() {
            return Err(format!("{name} must not be empty"));
        }
        *slot = Some(PathBuf::from(value));
    }
    Ok(Command::Serve(options))
}

/// What the daemon runs with: the command line over the config file.
struct Settings {
    root: PathBuf,
    address: PathBuf,
    file: config::File,
}

fn settings(options: &Options) -> anyhow::Result<Settings> {
    let mut file = match &options.config {
        Some(path) => config::File::load(path)?,
        None => config::File::default(),
    };
    let root = options.root.clone().or(file.root.take());
    let address = options.address.clone().or(file.address.take());
    Ok(Settings {
        root: root.context("--root (or root in the config file) is required")?,
        address: address.context("--address (or address in the config file) is required")?,
        file,
    })
}

fn main() -> ExitCode {
    match parse_args(std::env::args_os().skip(1)) {
        Ok(Command::Help) => {
            // Not println!: it panics when stdout is a closed pipe (`--help | head -1`).
            let _ = writeln!(io::stdout(), "{USAGE}");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("ferrum-snapshotter: {msg}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Ok(Command::Serve(options)) => match run(&options) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("ferrum-snapshotter: {err:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(options: &Options) -> anyhow::Result<()> {
    let settings = settings(options)?;
    let root = &settings.root;
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(root)
        .with_context(|| format!("creating root {}", root.display()))?;
    let _lock = lock_root(root)?;
    let overlay_options = overlay_options(root, &settings.file)?;
    eprintln!("ferrum-snapshotter: overlay mount options {overlay_options:?}");
    let snapshotter = Snapshotter::open(root, overlay_options)
        .with_context(|| format!("opening snapshots in {}", root.display()))?;
    let snapshotter = Arc::new(snapshotter);

    // One thread serves gRPC; snapshot operations run on tokio's blocking pool.
    // Locals drop in reverse order: the runtime first, which waits for any
    // blocking call still running, then the store closes, then the lock goes.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(Arc::clone(&snapshotter), &settings))
}

/// What every overlay mount gets besides its directories, in containerd's
/// order: its own `index=off` and `userxattr` first, then the configured ones.
fn overlay_options(root: &Path, file: &config::File) -> anyhow::Result<Vec<String>> {
    let mut options = Vec::new();
    if overlay::supports_index_off() {
        options.push("index=off".to_owned());
    }
    if overlay::needs_userxattr(root).context("checking whether overlay needs userxattr")? {
        options.push("userxattr".to_owned());
    }
    options.extend(file.mount.options.iter().cloned());
    Ok(options)
}

/// Keeps a second instance off the same root: two writers would each believe
/// they own every directory under it.
fn lock_root(root: &Path) -> anyhow::Result<Flock<File>> {
    let path = root.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, Errno::EWOULDBLOCK)) => {
            bail!(
                "{} is in use by another ferrum-snapshotter (it holds {})",
                root.display(),
                path.display()
            )
        }
        Err((_, errno)) => Err(errno).with_context(|| format!("locking {}", path.display())),
    }
}

async fn serve(snapshotter: Arc<Snapshotter>, settings: &Settings) -> anyhow::Result<()> {
    let address = settings.address.as_path();
    let listener = bind(address, &settings.file)?;
    let _socket = RemoveOnDrop(address.to_owned());
    let mut terminate = signal(SignalKind::terminate()).context("watching SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("watching SIGINT")?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    };
    eprintln!("ferrum-snapshotter: serving on {}", address.display());
    tonic::transport::Server::builder()
        .add_service(SnapshotsServer::new(SnapshotService::new(snapshotter)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .context("serving gRPC")
}

fn bind(address: &Path, file: &config::File) -> anyhow::Result<UnixListener> {
    if let Some(dir) = address.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match fs::symlink_metadata(address) {
        Ok(meta) if !meta.file_type().is_socket() => {
            bail!("{} exists and is not a socket", address.display())
        }
        Ok(_) => match UnixStream::connect(address) {
            Ok(_) => bail!(
                "{} is in use: another server answers on it",
                address.display()
            ),
            Err(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
                fs::remove_file(address)
                    .with_context(|| format!("removing stale socket {}", address.display()))?;
            }
            Err(err) => return Err(err).with_context(|| format!("probing {}", address.display())),
        },
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err).with_context(|| format!("inspecting {}", address.display())),
    }
    // Bound under a temporary name and renamed into place once its group and
    // mode are set: nobody can connect to it before they are, and a client
    // that finds the address finds the socket ready.
    let mut staging = address.as_os_str().to_owned();
    staging.push(format!(".{}.tmp", std::process::id()));
    let staging = std::path::PathBuf::from(staging);
    let _ = fs::remove_file(&staging);
    let listener = UnixListener::bind(&staging)
        .with_context(|| format!("listening on {}", staging.display()))?;
    let ready = (|| -> anyhow::Result<()> {
        if let Some(group) = &file.socket.group {
            let gid = group_id(group)?;
            chown(&staging, None, Some(gid))
                .with_context(|| format!("giving {} to group {gid}", address.display()))?;
        }
        fs::set_permissions(&staging, fs::Permissions::from_mode(file.socket_mode()))
            .with_context(|| format!("setting the mode of {}", address.display()))?;
        fs::rename(&staging, address).with_context(|| format!("moving the socket to {}", address.display()))
    })();
    if ready.is_err() {
        let _ = fs::remove_file(&staging);
    }
    ready.map(|()| listener)
}

fn group_id(group: &config::Group) -> anyhow::Result<Gid> {
    match group {
        config::Group::Id(id) => Ok(Gid::from_raw(*id)),
        config::Group::Name(name) => Group::from_name(name)
            .with_context(|| format!("looking up group {name:?}"))?
            .map(|g| g.gid)
            .with_context(|| format!("socket.group: no group named {name:?}")),
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_file(&self.0) {
            eprintln!(
                "ferrum-snapshotter: warning: removing {}: {err}",
                self.0.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn parses_both_value_forms() {
        let Ok(Command::Serve(o)) = parse(&["--root", "/r", "--address=/s.sock", "--config", "/c"])
        else {
            panic!()
        };
        assert_eq!(
            (o.root, o.address, o.config),
            (
                Some(PathBuf::from("/r")),
                Some(PathBuf::from("/s.sock")),
                Some(PathBuf::from("/c"))
            )
        );
        assert!(matches!(
            parse(&["--root", "/r", "--help"]),
            Ok(Command::Help)
        ));
    }

    #[test]
    fn explains_bad_arguments() {
        let err = |args: &[&str]| parse(args).err().unwrap();
        assert_eq!(err(&["--root"]), "--root needs a value");
        assert_eq!(err(&["--root="]), "--root must not be empty");
        assert_eq!(err(&["--rot", "/r"]), "unknown argument \"--rot\"");
    }

    #[test]
    fn command_line_overrides_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        fs::write(&path, "root = \"/from-file\"\naddress = \"/file.sock\"\n").unwrap();
        let Ok(Command::Serve(o)) = parse(&["--config", path.to_str().unwrap(), "--root", "/cli"])
        else {
            panic!()
        };
        let s = settings(&o).unwrap();
        assert_eq!(
            (s.root, s.address),
            (PathBuf::from("/cli"), PathBuf::from("/file.sock"))
        );

        let Ok(Command::Serve(o)) = parse(&["--root", "/r"]) else {
            panic!()
        };
        let err = settings(&o).err().unwrap().to_string();
        assert_eq!(err, "--address (or address in the config file) is required");
    }
}
