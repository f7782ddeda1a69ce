//! `renkei-bench`: renkei's benchmark and test-bed tool. Each subcommand lives in `cli/`.

mod cli;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// renkei benchmarks and the WAN test bed.
#[derive(Debug, Parser)]
#[command(name = "renkei-bench", version, about)]
struct Args {
    #[command(subcommand)]
    command: cli::Command,
}

fn main() -> anyhow::Result<()> {
    // Like any Unix filter: `renkei-bench wan status | head` ends quietly instead of panicking.
    // SAFETY: setting a signal disposition to its default before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    cli::run(args.command)
}
