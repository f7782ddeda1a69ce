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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    fs_proto::process::init_tracing("info,quinn=warn");
    let config = fs_server::ServerConfig::load(&args.config)?;
    fs_server::run(config, fs_proto::process::shutdown_signal()).await.context("file server failed")
}
