//! `renkei-bench rep`: replicating the Montage-like set between two sites,
//! beside one tar stream and per-file replication.

use bench::rep_bench::{run, Link, RepBenchOptions};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `renkei-bench rep`.
#[derive(Debug, Args)]
pub struct RepArgs {
    /// Fraction of the Montage-like set (0.25: 1,689 files, ~3.4 GB).
    #[arg(long, default_value_t = 0.1)]
    scale: f64,
    /// Dataset seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run across the WAN emulator (two sites) instead of loopback.
    #[arg(long)]
    wan: bool,
    /// Round-trip time of the emulated link, ms.
    #[arg(long, default_value_t = 10.0)]
    rtt_ms: f64,
    /// Rate of the emulated link, Mbit/s.
    #[arg(long, default_value_t = 1000.0)]
    rate_mbit: f64,
    /// MTU of the emulated sites.
    #[arg(long, default_value_t = 9000)]
    mtu: u32,
    /// Parallel streams of `renkei rep -j`.
    #[arg(short = 'j', long, default_value_t = 8)]
    parallel: usize,
    /// Skip the per-file (unbundled) runs.
    #[arg(long)]
    no_per_file: bool,
    /// Scratch directory (removed afterwards).
    #[arg(long, default_value = "/tmp/renkei-bench-rep")]
    scratch: PathBuf,
    /// Directory of renkei-meta and renkei-server [default: next to this binary].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Also write the markdown report here.
    #[arg(long)]
    report: Option<PathBuf>,
}

/// Run it.
pub fn run_cli(a: RepArgs) -> anyhow::Result<()> {
    let o = RepBenchOptions {
        scale: a.scale,
        seed: a.seed,
        link: a.wan.then_some(Link { rtt_ms: a.rtt_ms, rate_mbit: a.rate_mbit, mtu: a.mtu }),
        parallel: a.parallel.max(1),
        per_file: !a.no_per_file,
        bin_dir: a.bin_dir.unwrap_or_else(|| fs_client::local::bin_dir(None)),
        scratch: a.scratch.clone(),
    };
    let rt = tokio::runtime::Runtime::new()?;
    let report = rt.block_on(run(&o));
    drop(rt);
    let _ = std::fs::remove_dir_all(&a.scratch);
    let md = report?.markdown();
    println!("{md}");
    if let Some(p) = a.report {
        std::fs::write(p, md)?;
    }
    Ok(())
}
