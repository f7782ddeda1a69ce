//! `renkei-bench tools`: tar, rsync, cp -a, chmod -R, chown -R, mv, rm -rf,
//! git and make on a tree of small files, in a renkei mount beside local
//! disk and sshfs (loopback), or beside one tar stream and sshfs across the
//! WAN emulator (`--wan`).

use bench::tools_bench::{run, ToolsOptions};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `renkei-bench tools`.
#[derive(Debug, Args)]
pub struct ToolsArgs {
    /// Files in the tree (~1.5 KB each).
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// Directories they are spread over.
    #[arg(long, default_value_t = 40)]
    dirs: usize,
    /// Entries of the directory listed warm with `ls -l` (0: skip).
    #[arg(long, default_value_t = 10_000)]
    ls_entries: usize,
    /// Across the WAN emulator (meta at site a; file server, mount and
    /// tools at site b) instead of loopback.
    #[arg(long)]
    wan: bool,
    /// RTT between the sites, ms (with --wan).
    #[arg(long, default_value_t = 10.0)]
    rtt_ms: f64,
    /// Link rate, Mbit/s (with --wan).
    #[arg(long, default_value_t = 1000.0)]
    rate_mbit: f64,
    /// Leave sshfs out.
    #[arg(long)]
    no_sshfs: bool,
    /// Scratch directory (removed afterwards).
    #[arg(long, default_value = "/tmp/renkei-bench-tools")]
    dir: PathBuf,
    /// Directory of renkei, renkei-meta and renkei-server [default: next to this binary].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Also write the markdown report to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Also write every measurement as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Run it.
pub fn run_cli(args: ToolsArgs) -> anyhow::Result<()> {
    let opts = ToolsOptions {
        files: args.files.max(1),
        dirs: args.dirs.max(1),
        ls_entries: args.ls_entries,
        wan: args.wan,
        rtt_ms: args.rtt_ms,
        rate_mbit: args.rate_mbit,
        sshfs: !args.no_sshfs,
        bin_dir: args.bin_dir.unwrap_or_else(|| fs_client::local::bin_dir(None)),
        scratch: args.dir.clone(),
    };
    let report = run(&opts);
    let _ = std::fs::remove_dir_all(&args.dir);
    let report = report?;
    let md = report.markdown();
    println!("{md}");
    if let Some(p) = args.report {
        std::fs::write(&p, &md)?;
    }
    if let Some(p) = args.json {
        std::fs::write(&p, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
