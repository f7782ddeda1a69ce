//! `renkei-bench mount`: one large file read and written through the FUSE
//! mount, beside `renkei put/get` and sshfs on localhost.

use bench::mount_bench::{run, MountBenchOptions};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `renkei-bench mount`.
#[derive(Debug, Args)]
pub struct MountArgs {
    /// File size in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Rounds (medians are reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Scratch directory (removed afterwards).
    #[arg(long, default_value = "/tmp/renkei-bench-mount")]
    dir: PathBuf,
    /// Directory of renkei, renkei-meta and renkei-server [default: next to this binary].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Leave sshfs out (when sshfs or sshd is not installed).
    #[arg(long)]
    no_sshfs: bool,
    /// Also write the markdown report to this file.
    #[arg(long)]
    report: Option<PathBuf>,
}

/// Run it.
pub fn run_cli(args: MountArgs) -> anyhow::Result<()> {
    let bin_dir = args.bin_dir.unwrap_or_else(|| fs_client::local::bin_dir(None));
    let opts = MountBenchOptions {
        size: args.size_mib << 20,
        rounds: args.rounds.max(1),
        dir: args.dir.clone(),
        bin_dir,
        no_sshfs: args.no_sshfs,
    };
    let rt = tokio::runtime::Runtime::new()?;
    let report = rt.block_on(run(&opts));
    let _ = std::fs::remove_dir_all(&args.dir);
    let md = report?.markdown();
    println!("{md}");
    if let Some(p) = args.report {
        std::fs::write(&p, &md)?;
    }
    Ok(())
}
