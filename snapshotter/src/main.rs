//! ferrum-snapshotter: an overlayfs snapshotter that containerd uses as a
//! proxy plugin (`[proxy_plugins.NAME] type = "snapshot"`), serving the
//! Snapshots gRPC API on a Unix socket.

mod filter;
mod layout;
mod service;
mod snapshotter;
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
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_stream::wrappers::UnixListenerStream;

use crate::service::SnapshotService;
use crate::snapshotter::Snapshotter;

const USAGE: &str = "\
usage: ferrum-snapshotter --root DIR --address SOCKET

Serves containerd's Snapshots API (overlayfs snapshots) on a Unix socket.
Point containerd at it with:

  [proxy_plugins.ferrum]
    type = \"snapshot\"
    address = \"SOCKET\"

options:
  --root DIR         where snapshots and their metadata live (created if missing)
  --address SOCKET   Unix socket to listen on (a stale socket file is replaced)
  -h, --help         show this help

SIGTERM or SIGINT stops it once in-flight calls have finished.";

struct Options {
    root: PathBuf,
    address: PathBuf,
}

enum Command {
    Help,
    Serve(Options),
}

fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut root = None;
    let mut address = None;
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
            "--root" => &mut root,
            "--address" => &mut address,
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
    Ok(Command::Serve(Options {
        root: root.ok_or("--root is required")?,
        address: address.ok_or("--address is required")?,
    }))
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
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&options.root)
        .with_context(|| format!("creating root {}", options.root.display()))?;
    let _lock = lock_root(&options.root)?;
    let index_off = layout::overlay_supports_index_off();
    let snapshotter = Snapshotter::open(&options.root, index_off)
        .with_context(|| format!("opening snapshots in {}", options.root.display()))?;
    let snapshotter = Arc::new(snapshotter);

    // One thread serves gRPC; snapshot operations run on tokio's blocking pool.
    // Locals drop in reverse order: the runtime first, which waits for any
    // blocking call still running, then the store closes, then the lock goes.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(Arc::clone(&snapshotter), &options.address))
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

async fn serve(snapshotter: Arc<Snapshotter>, address: &Path) -> anyhow::Result<()> {
    let listener = bind(address)?;
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

fn bind(address: &Path) -> anyhow::Result<UnixListener> {
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
    let listener = UnixListener::bind(address)
        .with_context(|| format!("listening on {}", address.display()))?;
    fs::set_permissions(address, fs::Permissions::from_mode(0o660))
        .with_context(|| format!("setting the mode of {}", address.display()))?;
    Ok(listener)
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
        let Ok(Command::Serve(o)) = parse(&["--root", "/r", "--address=/s.sock"]) else {
            panic!()
        };
        assert_eq!(
            (o.root, o.address),
            (PathBuf::from("/r"), PathBuf::from("/s.sock"))
        );
        assert!(matches!(
            parse(&["--root", "/r", "--help"]),
            Ok(Command::Help)
        ));
    }

    #[test]
    fn explains_bad_arguments() {
        let err = |args: &[&str]| parse(args).err().unwrap();
        assert_eq!(err(&["--root", "/r"]), "--address is required");
        assert_eq!(err(&["--address", "/s"]), "--root is required");
        assert_eq!(err(&["--root"]), "--root needs a value");
        assert_eq!(err(&["--root="]), "--root must not be empty");
        assert_eq!(err(&["--rot", "/r"]), "unknown argument \"--rot\"");
    }
}
