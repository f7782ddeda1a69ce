//! `renkei-meta`: parse arguments, load the config, start tracing, serve.

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;

/// The metadata server of a renkei federation (one per federation).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Configuration file (TOML); see fs-meta/meta.toml for every field.
    #[arg(short, long, env = "RENKEI_META_CONFIG")]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    fs_proto::process::init_tracing("info,quinn=warn");
    let config = fs_meta::MetaConfig::load(&args.config)?;
    fs_meta::run(config, fs_proto::process::shutdown_signal()).await.context("meta server failed")
}
