//! `renkei-meta`: parse arguments, load the config, start tracing, serve.

use anyhow::Context;
use clap::{CommandFactory, Parser};
use std::path::PathBuf;

/// The metadata server of a renkei federation (one per federation).
///
/// `renkei-meta --config meta.toml` serves; `--check` only validates the
/// configuration (the line and field of a fault, exit status 1).
#[derive(Parser, Debug)]
#[command(
    name = "renkei-meta",
    version,
    about,
    long_about,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
struct Args {
    /// Configuration file (TOML); see fs-meta/meta.toml for every field.
    #[arg(short, long, env = "RENKEI_META_CONFIG", required = true)]
    config: Option<PathBuf>,
    /// Check the configuration and exit: 0 if it is valid, else 1 with the
    /// line and field at fault.
    #[arg(long)]
    check: bool,
    /// Log to this file (appended) instead of stderr; SIGHUP reopens it,
    /// for logrotate's `postrotate` (default: stderr, which journald
    /// keeps under systemd).
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
    #[command(subcommand)]
    doc: Option<fs_proto::clidoc::DocCommand>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(doc) = &args.doc {
        return exit(fs_proto::clidoc::run(doc, Args::command(), &[]).map_err(anyhow::Error::from), false);
    }
    let path = args.config.expect("clap requires --config without a subcommand");
    if args.check {
        return exit(
            fs_meta::MetaConfig::load(&path).map(|_| {
                println!("{}: valid renkei-meta configuration", path.display());
            }),
            false,
        );
    }
    if let Err(e) = fs_proto::process::init_tracing_to("info,quinn=warn", args.log_file.as_deref()) {
        return exit(Err(anyhow::anyhow!("log file: {e}")), false);
    }
    exit(
        async {
            let config = fs_meta::MetaConfig::load(&path)?;
            fs_meta::run(config, fs_proto::process::shutdown_signal()).await.context("meta server failed")
        }
        .await,
        true,
    )
}

fn exit(r: anyhow::Result<()>, serving: bool) -> std::process::ExitCode {
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The form `renkei local up` looks for in a service's log (`Error: `
        // and the causes).
        Err(e) if serving => {
            eprintln!("Error: {e:?}");
            std::process::ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("renkei-meta: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
