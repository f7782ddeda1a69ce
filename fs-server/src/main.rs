//! `renkei-server`: parse arguments, load the config, start tracing, serve.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;

/// The file server of one PoP (one per site or more).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Configuration file (TOML); see fs-server/server.toml for every field.
    #[arg(short, long, env = "RENKEI_SERVER_CONFIG")]
    config: PathBuf,
    /// Join the configured meta server even though it serves another
    /// namespace than the one this spool's replicas belong to, deleting
    /// them. Without it the server refuses to start in that case.
    #[arg(long)]
    forget_spool: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    fs_proto::process::init_tracing("info,quinn=warn");
    let mut config = fs_server::ServerConfig::load(&args.config)?;
    config.forget_spool |= args.forget_spool;
    fs_server::run(config, fs_proto::process::shutdown_signal()).await.context("file server failed")
}
