//! The subcommands of `renkei-bench`, one module each; this file only dispatches.

pub mod putget;
pub mod wan;
pub mod wan_serve;

use clap::Subcommand;

/// Top-level subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Emulated multi-site WAN: network namespaces joined by a userspace router.
    Wan(wan::WanArgs),
    /// One large file through renkei put/get vs cp on the same disk (loopback federation).
    Putget(putget::PutGetArgs),
}

/// Run one subcommand.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Wan(args) => wan::run(args),
        Command::Putget(args) => putget::run_cli(args),
    }
}
