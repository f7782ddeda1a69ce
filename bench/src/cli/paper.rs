//! `renkei-bench paper`: the RENKEI-PoP paper's Table 4 and Figure 6 on its own emulated topology,
//! renkei beside untuned TCP, one tar stream and per-file copies (issue 14).

use bench::paper::{run, PaperOptions};
use bench::wan::preset::{RENKEI2011_DEFAULT_SCALE, RENKEI2011_SITES};
use clap::Args;
use std::path::PathBuf;

/// Figure 6's sources in the paper.
const FIG6_FROM: [&str; 5] = ["titech2", "osaka", "nii1", "kek", "tkb"];

/// Arguments of `renkei-bench paper`.
#[derive(Debug, Args)]
pub struct PaperArgs {
    /// Small-scale run of a few minutes: 1 s per path, dataset factor 0.01.
    #[arg(long)]
    quick: bool,
    /// Rate scale of the emulated links (the paper's rates x this).
    #[arg(long, default_value_t = RENKEI2011_DEFAULT_SCALE)]
    scale: f64,
    /// Only these Table 4 paths, `FROM:TO,...` [default: all 30].
    #[arg(long, value_delimiter = ',')]
    paths: Vec<String>,
    /// Figure 6's source PoPs [default: titech2,osaka,nii1,kek,tkb]; `none` skips Figure 6.
    #[arg(long, value_delimiter = ',')]
    fig6_from: Vec<String>,
    /// Fraction of the Montage-like set [default: 0.1, or 0.01 with --quick].
    #[arg(long)]
    dataset_scale: Option<f64>,
    /// Seconds of renkei transfer per path [default: 3, or 1 with --quick]; iperf3 runs one second
    /// more and omits its first.
    #[arg(long)]
    secs: Option<u32>,
    /// Skip iperf3 (untuned TCP).
    #[arg(long)]
    no_iperf: bool,
    /// Skip measuring the emulator's own limit.
    #[arg(long)]
    no_limit: bool,
    /// Skip Gfarm (gfmd, gfsd, gfrep) in Figure 6.
    #[arg(long)]
    no_gfarm: bool,
    /// Parallel streams of `renkei rep -j`.
    #[arg(short = 'j', long, default_value_t = 8)]
    parallel: usize,
    /// Dataset seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Scratch directory (removed afterwards).
    #[arg(long, default_value = "/tmp/renkei-bench-paper")]
    scratch: PathBuf,
    /// Directory of renkei, renkei-meta and renkei-server [default: $RENKEI_BIN_DIR, else next to this binary].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Also write the markdown report here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write the measurements as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn parse_paths(paths: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    paths
        .iter()
        .map(|p| {
            let (a, b) = p.split_once(':').ok_or_else(|| anyhow::anyhow!("path {p:?}: write FROM:TO"))?;
            anyhow::ensure!(
                RENKEI2011_SITES.contains(&a) && RENKEI2011_SITES.contains(&b) && a != b,
                "path {p:?}: both ends must be different PoPs of Table 4 ({})",
                RENKEI2011_SITES.join(", ")
            );
            Ok((a.to_string(), b.to_string()))
        })
        .collect()
}

/// Run it.
pub fn run_cli(a: PaperArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.scale.is_finite() && a.scale > 0.0, "--scale must be positive");
    let secs = a.secs.unwrap_or(if a.quick { 1 } else { 3 }).max(1);
    let fig6_from = match a.fig6_from.as_slice() {
        [] => FIG6_FROM.iter().map(|s| s.to_string()).collect(),
        [none] if none == "none" => Vec::new(),
        list => list.to_vec(),
    };
    let o = PaperOptions {
        quick: a.quick,
        scale: a.scale,
        paths: parse_paths(&a.paths)?,
        netcheck_secs: secs as f64,
        iperf_secs: if a.no_iperf { 0 } else { secs + 1 },
        fig6_from,
        dataset_scale: a.dataset_scale.unwrap_or(if a.quick { 0.01 } else { 0.1 }),
        seed: a.seed,
        parallel: a.parallel.max(1),
        limit: !a.no_limit,
        gfarm: !a.no_gfarm,
        bin_dir: a.bin_dir.unwrap_or_else(|| fs_client::local::bin_dir(None)),
        scratch: a.scratch.clone(),
    };
    eprintln!(
        "renkei2011 topology, every paper rate x {} (printed in the report); scratch {}",
        o.scale,
        o.scratch.display()
    );
    let report = run(&o);
    let _ = std::fs::remove_dir_all(&a.scratch);
    let report = report?;
    let md = report.markdown();
    println!("{md}");
    if let Some(p) = a.report {
        std::fs::write(&p, &md).map_err(|e| anyhow::anyhow!("writing {}: {e}", p.display()))?;
    }
    if let Some(p) = a.json {
        std::fs::write(&p, serde_json::to_string_pretty(&report)?)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", p.display()))?;
    }
    Ok(())
}
