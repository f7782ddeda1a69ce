//! `renkei-bench wanfs`: small-file copies, `ls -l` and one large file
//! across the WAN emulator, side by side (issue 5).

use bench::wanfs_bench::{run, WanFsOptions};
use clap::Args;
use std::path::PathBuf;

/// Arguments of `renkei-bench wanfs`.
#[derive(Debug, Args)]
pub struct WanFsArgs {
    /// Fraction of the Montage-like set (1.0: 6,756 files, ~14 GB; 0.05: 338 files, ~0.7 GB).
    #[arg(long, default_value_t = 0.05)]
    scale: f64,
    /// Dataset seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// RTT between every two of the three sites, ms.
    #[arg(long, default_value_t = 10.0)]
    rtt_ms: f64,
    /// Rate of every link, Mbit/s.
    #[arg(long, default_value_t = 1000.0)]
    rate_mbit: f64,
    /// MTU of the emulated sites.
    #[arg(long, default_value_t = 9000)]
    mtu: u32,
    /// Entries of the directory listed with `ls -l` (0: skip).
    #[arg(long, default_value_t = 10_000)]
    ls_entries: usize,
    /// Size of the large file, MiB (0: skip).
    #[arg(long, default_value_t = 2048)]
    big_mib: u64,
    /// RTT of the large-file link, ms.
    #[arg(long, default_value_t = 50.0)]
    big_rtt_ms: f64,
    /// Skip sshfs (when sshfs or sshd is missing).
    #[arg(long)]
    no_sshfs: bool,
    /// Skip iperf3 beside the large file.
    #[arg(long)]
    no_iperf: bool,
    /// Skip measuring the emulator's own limit.
    #[arg(long)]
    no_limit: bool,
    /// Scratch directory (removed afterwards).
    #[arg(long, default_value = "/tmp/renkei-bench-wanfs")]
    scratch: PathBuf,
    /// Directory of renkei, renkei-meta and renkei-server [default: next to this binary].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Also write the markdown report here.
    #[arg(long)]
    report: Option<PathBuf>,
}

fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Run it.
pub fn run_cli(a: WanFsArgs) -> anyhow::Result<()> {
    let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"].iter().any(|p| std::path::Path::new(p).exists());
    let mut sshfs = !a.no_sshfs;
    if sshfs && !(have("sshfs") && sshd) {
        eprintln!("sshfs or sshd is not installed: skipping sshfs (pass --no-sshfs to silence)");
        sshfs = false;
    }
    let mut iperf = !a.no_iperf;
    if iperf && !have("iperf3") {
        eprintln!("iperf3 is not installed: skipping it");
        iperf = false;
    }
    let limit = !a.no_limit && iperf;
    let o = WanFsOptions {
        scale: a.scale,
        seed: a.seed,
        rtt_ms: a.rtt_ms,
        rate_mbit: a.rate_mbit,
        mtu: a.mtu,
        ls_entries: a.ls_entries,
        big_size: a.big_mib << 20,
        big_rtt_ms: a.big_rtt_ms,
        sshfs,
        iperf,
        limit,
        bin_dir: a.bin_dir.unwrap_or_else(|| fs_client::local::bin_dir(None)),
        scratch: a.scratch.clone(),
    };
    let report = run(&o);
    let _ = std::fs::remove_dir_all(&a.scratch);
    let mut report = report?;
    if !a.no_limit && !limit {
        report.skipped.push("emulator limit (measured with iperf3, which is skipped or missing)".into());
    }
    if !a.no_sshfs && !sshfs {
        report.skipped.push("sshfs (sshfs or sshd not installed)".into());
    }
    let md = report.markdown();
    println!("{md}");
    if let Some(p) = a.report {
        std::fs::write(p, md)?;
    }
    Ok(())
}
