//! The subcommands of `renkei-bench`, one module each; this file only dispatches.

pub mod wan;
pub mod wan_serve;

use clap::Subcommand;

/// Top-level subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Emulated multi-site WAN: network namespaces joined by a userspace router.
    Wan(wan::WanArgs),
}

/// Run one subcommand.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Wan(args) => wan::run(args),
    }
}
