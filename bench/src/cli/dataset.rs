//! `renkei-bench dataset`: write the Montage-like set to a directory.

use bench::dataset::{plan, total_bytes, write};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `renkei-bench dataset`.
#[derive(Debug, Args)]
pub struct DatasetArgs {
    /// Fraction of the 6,756 files to keep (0.25: 1,689 files, ~3.5 GB).
    #[arg(long, default_value_t = 0.25)]
    scale: f64,
    /// Seed of sizes and contents.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Only print the plan's size; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Directory to write into (created).
    #[arg(long)]
    out: PathBuf,
}

/// Run it.
pub fn run(a: DatasetArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.scale > 0.0 && a.scale <= 1.0, "--scale must be in (0, 1]");
    let files = plan(a.scale, a.seed);
    let total = total_bytes(&files);
    eprintln!(
        "Montage-like set, scale {}: {} files, {:.2} GB, mean {:.2} MB",
        a.scale,
        files.len(),
        total as f64 / 1e9,
        total as f64 / files.len() as f64 / 1e6
    );
    if !a.dry_run {
        let n = write(&a.out, &files)?;
        eprintln!("wrote {:.2} GB into {}", n as f64 / 1e9, a.out.display());
    }
    Ok(())
}
