//! `renkei-bench meta`: creates, `ls -l`, stat, deletes and a bundled
//! `put -r` on a meta server keeping its namespace in sled, then in a
//! three-member etcd cluster on loopback, side by side (issue 16).

use bench::meta_bench::{run, MetaOptions};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// Arguments of `renkei-bench meta`.
#[derive(Debug, Args)]
pub struct MetaArgs {
    /// Files per phase (created, listed, stat'ed, deleted; and the uploaded
    /// tree's) [default: 10,000, or 1,000 with --quick].
    #[arg(long)]
    files: Option<usize>,
    /// A short run: 1,000 files unless --files says otherwise.
    #[arg(long)]
    quick: bool,
    /// Bound of each phase, seconds (a phase that overruns fails the run).
    #[arg(long, default_value_t = 600)]
    phase_secs: u64,
    /// Scratch directory (removed afterwards).
    #[arg(long, default_value = "/tmp/renkei-bench-meta")]
    dir: PathBuf,
    /// Directory of renkei-meta and renkei-server [default: next to this binary].
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
pub fn run_cli(args: MetaArgs) -> anyhow::Result<()> {
    let opts = MetaOptions {
        files: args.files.unwrap_or(if args.quick { 1_000 } else { 10_000 }),
        phase_bound: Duration::from_secs(args.phase_secs.max(1)),
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
