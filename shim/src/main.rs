//! containerd-shim-ferrum-v2: containerd's runtime v2 shim for ferrum.
//!
//! One binary, four roles: `start`, `delete` and `-info` (called by
//! containerd, see manager), the long-running daemon serving the Task API (see daemon), and —
//! through runtime-core — the init of every container it creates.

mod args;
mod checkpoint;
mod daemon;
mod errors;
mod events;
mod idle;
mod logger;
mod manager;
mod metrics;
mod oom;
mod options;
mod process;
mod reaper;
mod service;
mod stdio;

use args::{Action, Flags};

/// The runtime name containerd knows this shim by.
pub const RUNTIME_NAME: &str = "io.containerd.ferrum.v2";

fn main() {
    // A container's init must not run any of the shim's code.
    runtime_core::init::run_if_init();

    let flags = match Flags::parse(std::env::args().skip(1)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("containerd-shim-ferrum-v2: {e}");
            std::process::exit(2);
        }
    };
    let result = match flags.action {
        Action::Version => {
            println!("containerd-shim-ferrum-v2:\n  Version:  {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Action::Info => manager::info(),
        Action::Start => manager::start(&flags),
        Action::Delete => manager::delete(&flags),
        Action::Serve => daemon::run(&flags),
    };
    if let Err(e) = result {
        // For start and delete, containerd shows this text to the user.
        eprintln!("containerd-shim-ferrum-v2: {e:#}");
        std::process::exit(1);
    }
}
