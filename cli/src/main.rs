//! `ferrum`: runc's command line over runtime-core, for the callers that
//! drive an OCI runtime binary — containerd's runc shims (go-runc), conmon
//! (Podman, CRI-O), Docker's added runtimes. The library's second front end
//! beside the shim: each command loads the container from its state under
//! `--root`, does one thing and exits; between `create` and `start` the
//! container's init waits on its exec FIFO (runtime-core's `detach`).

mod args;
mod checkpoint;
mod console;
mod events;
mod fds;
mod lifecycle;
mod log;
mod process;
mod query;
mod time;

use anyhow::{bail, Context, Result};
use args::{parse, Spec};
use log::{Format, Logger};
use runtime_core::cgroup::CgroupDriver;
use runtime_core::Container;
use std::path::{Path, PathBuf};

/// What every command gets from the global flags.
pub struct Global {
    pub root: PathBuf,
    pub cgroup_driver: CgroupDriver,
    pub log: Logger,
    /// CRIU's program (`--criu`), `criu` on PATH by default.
    pub criu: PathBuf,
}

impl Global {
    /// The container `id` as its state describes it, or runc's error.
    pub fn load(&self, id: &str) -> Result<Container> {
        match Container::load(&self.root, id) {
            Err(runtime_core::Error::NotFound { .. }) => bail!("container does not exist"),
            other => Ok(other?),
        }
    }
}

const GLOBAL: Spec = Spec {
    bools: &[&["debug"], &["systemd-cgroup"], &["help", "h"], &["version", "v"]],
    values: &[&["root"], &["log"], &["log-format"], &["criu"], &["rootless"]],
};

const USAGE: &str = "usage: ferrum [global flags] COMMAND [flags] [arguments]

A runc-compatible OCI runtime over ferrum's runtime-core.

commands: create, start, run, state, kill, delete, exec, ps, list, pause,
resume, update, events, features, spec, checkpoint, restore
global flags: --root DIR, --log FILE, --log-format text|json,
--systemd-cgroup, --criu PATH, --debug";

fn main() {
    // A container's init must not run any of the CLI's code.
    runtime_core::init::run_if_init();

    let argv: Vec<String> = std::env::args().skip(1).collect();
    let command_at = global_end(&argv);
    let mut logger = Logger::stderr();
    let result = (|| {
        let global = parse(&argv[..command_at], &GLOBAL)?;
        if global.has("version") {
            println!("ferrum version {}\nspec: 1.2.1", env!("CARGO_PKG_VERSION"));
            return Ok(0);
        }
        let format = match global.value("log-format").unwrap_or("text") {
            "text" => Format::Text,
            "json" => Format::Json,
            other => bail!("invalid log-format: {other}"),
        };
        // --debug is accepted (callers pass it); ferrum has nothing more to say.
        logger = Logger::open(global.value("log"), format).context("open the log")?;
        let Some(command) = argv.get(command_at) else {
            println!("{USAGE}");
            return Ok(if global.has("help") { 0 } else { 1 });
        };
        let mut g = Global {
            root: global.value("root").map(PathBuf::from).unwrap_or_else(default_root),
            cgroup_driver: if global.has("systemd-cgroup") { CgroupDriver::Systemd } else { CgroupDriver::Cgroupfs },
            log: std::mem::replace(&mut logger, Logger::stderr()),
            criu: PathBuf::from(global.value("criu").unwrap_or("criu")),
        };
        let rest = &argv[command_at + 1..];
        let outcome = run(&mut g, command, rest);
        logger = g.log;
        outcome
    })();
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            logger.error(&format!("{e:#}"));
            std::process::exit(1);
        }
    }
}

/// Global flags end at the command: the first argument that is neither a
/// flag nor a global flag's value.
fn global_end(argv: &[String]) -> usize {
    let mut i = 0;
    while i < argv.len() {
        let a = &argv[i];
        let name = a.trim_start_matches('-');
        if !a.starts_with('-') {
            return i;
        }
        let takes_value = GLOBAL.values.iter().any(|names| names.contains(&name));
        i += if takes_value && !a.contains('=') { 2 } else { 1 };
    }
    argv.len()
}

/// runc's default, ours: /run/ferrum-runtime; rootless, in XDG_RUNTIME_DIR.
fn default_root() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if runtime_core::is_rootless() && Path::new(&dir).is_absolute() => Path::new(&dir).join("ferrum-runtime"),
        _ => PathBuf::from("/run/ferrum-runtime"),
    }
}

/// Run one command; Ok is the exit status.
fn run(g: &mut Global, command: &str, args: &[String]) -> Result<i32> {
    match command {
        "create" => lifecycle::create(g, args).map(|()| 0),
        "start" => lifecycle::start(g, args).map(|()| 0),
        "run" => lifecycle::run(g, args),
        "delete" => lifecycle::delete(g, args).map(|()| 0),
        "kill" => lifecycle::kill(g, args).map(|()| 0),
        "pause" => lifecycle::pause(g, args, true).map(|()| 0),
        "resume" => lifecycle::pause(g, args, false).map(|()| 0),
        "update" => lifecycle::update(g, args).map(|()| 0),
        "events" => events::events(g, args).map(|()| 0),
        "exec" => process::exec(g, args),
        "state" => query::state(g, args).map(|()| 0),
        "list" => query::list(g, args).map(|()| 0),
        "ps" => query::ps(g, args).map(|()| 0),
        "features" => query::features(args).map(|()| 0),
        "spec" => query::spec(args).map(|()| 0),
        "checkpoint" => checkpoint::checkpoint(g, args).map(|()| 0),
        "restore" => checkpoint::restore(g, args),
        other => bail!("No help topic for '{other}'"),
    }
}

/// The one container id a command takes, as runc checks it.
pub fn one_id<'a>(command: &str, positional: &'a [String]) -> Result<&'a str> {
    match positional {
        [id] => Ok(id),
        _ => bail!("{command}: \"{command}\" requires exactly 1 argument(s)"),
    }
}
