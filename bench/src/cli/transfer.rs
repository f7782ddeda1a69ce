//! `renkei-bench transfer`: one large file over an emulated long fat pipe.

use bench::wan_transfer::{run, TransferOptions};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `renkei-bench transfer`.
#[derive(Debug, Args)]
pub struct TransferArgs {
    /// Round-trip time, ms.
    #[arg(long, default_value_t = 50.0)]
    rtt_ms: f64,
    /// Link rate, Mbit/s.
    #[arg(long, default_value_t = 1000.0)]
    rate_mbit: f64,
    /// File size, MiB.
    #[arg(long, default_value_t = 2048)]
    size_mib: u64,
    /// MTU of the emulated sites.
    #[arg(long, default_value_t = 9000)]
    mtu: u32,
    /// Skip the iperf3 TCP baseline.
    #[arg(long)]
    no_tcp: bool,
    /// Scratch directory.
    #[arg(long, default_value = "/tmp/renkei-bench-transfer")]
    scratch: PathBuf,
    /// Directory of renkei-meta and renkei-server [default: next to this binary].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Also write the markdown report here.
    #[arg(long)]
    report: Option<PathBuf>,
}

/// Run it.
pub fn run_cli(a: TransferArgs) -> anyhow::Result<()> {
    let o = TransferOptions {
        rtt_ms: a.rtt_ms,
        rate_mbit: a.rate_mbit,
        size: a.size_mib << 20,
        mtu: a.mtu,
        bin_dir: a.bin_dir.unwrap_or_else(|| fs_client::local::bin_dir(None)),
        scratch: a.scratch.clone(),
        tcp_baseline: !a.no_tcp,
    };
    let rt = tokio::runtime::Runtime::new()?;
    let report = rt.block_on(run(&o))?;
    let _ = std::fs::remove_dir_all(&a.scratch);
    let md = report.markdown();
    println!("{md}");
    if let Some(p) = a.report {
        std::fs::write(p, md)?;
    }
    Ok(())
}
