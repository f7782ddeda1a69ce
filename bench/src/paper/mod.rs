//! `renkei-bench paper`: the RENKEI-PoP paper's experiments (`../shared/PAPER.md`) re-run on its
//! own topology, the `renkei2011` preset of the WAN emulator, with renkei and the baselines side
//! by side in one run:
//!
//! - [`table4`]: every directed path between the six PoPs: renkei's own transport (a
//!   `renkei netcheck` pull between the PoPs' file servers), untuned TCP (iperf3, kernel
//!   defaults) and the paper's iperf value scaled like the emulated link.
//! - [`fig6`]: the Montage-like set copied to titech1 from titech2, osaka, nii1, kek and tkb (meta
//!   server at titech1): `renkei rep`, `cp -r` out of a mount at titech1 and per-file replication,
//!   beside one tar stream over the same path and the path's rate, and Gfarm itself
//!   ([`gfarm`]: gfmd at titech1, a gfsd per source) doing the paper's gfrep and a per-file copy.
//!
//! One federation of real processes serves both: the meta server at titech1, a file server at
//! each of Table 4's PoPs. [`report`] renders the markdown; the JSON is [`PaperReport`] itself.
//! Table 5 (VM start) is not measured here; the report says so.

pub mod fig6;
pub mod gfarm;
pub mod report;
pub mod table4;

use crate::wan::preset::{self, RENKEI2011_SITES};
use crate::wan::{iperf, Wan};
use crate::wanfed::{WanFedSpec, WanFederation};
use anyhow::Context;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;
use tracing::info;

/// The federation user that runs `netcheck` (an admin).
pub const ADMIN_USER: &str = "paper-admin";
/// The federation user that owns and copies the data.
pub const DATA_USER: &str = "paper";
/// Where the meta server runs: the paper's management server was at Tokyo Tech.
pub const META_SITE: &str = "titech1";

/// What to run.
#[derive(Debug, Clone)]
pub struct PaperOptions {
    /// The small-scale run (`--quick`).
    pub quick: bool,
    /// Rate scale of the emulated links (1 = the paper's rates).
    pub scale: f64,
    /// Table 4's directed paths to measure (empty: all 30).
    pub paths: Vec<(String, String)>,
    /// Seconds of `netcheck` transfer per path.
    pub netcheck_secs: f64,
    /// Seconds of iperf3 per path (0: skip untuned TCP).
    pub iperf_secs: u32,
    /// Figure 6's source PoPs (empty: skip Figure 6).
    pub fig6_from: Vec<String>,
    /// Fraction of the Montage-like set for Figure 6.
    pub dataset_scale: f64,
    /// Dataset seed.
    pub seed: u64,
    /// Parallel streams of `renkei rep -j`.
    pub parallel: usize,
    /// Measure the emulator's own limit at the end.
    pub limit: bool,
    /// Run Gfarm beside renkei in Figure 6 (`--no-gfarm` clears it).
    pub gfarm: bool,
    /// Directory of renkei, renkei-meta and renkei-server.
    pub bin_dir: PathBuf,
    /// Scratch directory.
    pub scratch: PathBuf,
}

/// Everything measured; serialised as `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct PaperReport {
    /// Rate scale of every emulated link (link = paper x scale).
    pub scale: f64,
    /// MTU of the emulated sites (the paper's Table 3: 1500).
    pub mtu: u32,
    /// `quick` or `full`.
    pub mode: String,
    /// UTC date and time of the start.
    pub started: String,
    /// /proc/loadavg (1, 5, 15 min) before and after.
    pub load: (String, String),
    /// The emulator's own limit: one TCP stream through an unlimited link at this MTU, Mbit/s.
    pub emulator_limit_mbit: Option<f64>,
    /// Seconds of netcheck transfer and of iperf3 per path.
    pub table4_secs: (f64, u32),
    /// Table 4, one row per directed path.
    pub table4: Vec<table4::Row>,
    /// The Figure 6 dataset, if Figure 6 ran.
    pub fig6_dataset: Option<fig6::Dataset>,
    /// Figure 6, one row per source PoP.
    pub fig6: Vec<fig6::Row>,
    /// Table 5 is not measured by this command.
    pub table5: Vec<serde_json::Value>,
    /// What was not measured, and why.
    pub notes: Vec<String>,
}

/// Run the experiments.
pub fn run(o: &PaperOptions) -> anyhow::Result<PaperReport> {
    let started = report::now_utc();
    let load_before = report::loadavg();
    std::fs::create_dir_all(&o.scratch)?;
    let rt = tokio::runtime::Runtime::new()?;
    let topo = preset::renkei2011(o.scale)?;
    let mtu = topo.mtu;
    info!(scale = o.scale, mtu, "starting the renkei2011 topology (every paper rate x scale)");
    let mut notes = Vec::new();
    let (table4, fig6_dataset, fig6) = {
        let wan = Wan::start(topo).context("starting the WAN emulator")?;
        let spec = WanFedSpec {
            meta_site: META_SITE.into(),
            server_sites: RENKEI2011_SITES.iter().map(|s| s.to_string()).collect(),
            bin_dir: o.bin_dir.clone(),
            heartbeat_ms: 1000,
        };
        let fed = WanFederation::start_with_admin(&wan, spec, Some(ADMIN_USER))?;
        rt.block_on(fed.wait_alive(&wan, META_SITE, Duration::from_secs(60)))?;
        let table4 = {
            let _span = tracing::info_span!("table4").entered();
            table4::run(&rt, &wan, &fed, o)?
        };
        let (dataset, fig6) = if o.fig6_from.is_empty() {
            (None, Vec::new())
        } else {
            let _span = tracing::info_span!("fig6").entered();
            let (d, rows) = fig6::run(&rt, &wan, &fed, o, &mut notes)?;
            (Some(d), rows)
        };
        (table4, dataset, fig6)
    };
    let emulator_limit_mbit = if o.limit {
        info!(mtu, "the emulator's own limit");
        iperf::forwarding_limit(&[mtu], 3)?.first().map(|(_, bps)| bps / 1e6)
    } else {
        None
    };
    notes.push("table5: not measured by this command (VM start with vpe at titech1, titech2, nii1, nii2, hkd)".into());
    if o.iperf_secs == 0 {
        notes.push("tcp_untuned_mb_s: iperf3 skipped".into());
    }
    if o.fig6_from.is_empty() {
        notes.push("fig6: skipped".into());
    }
    Ok(PaperReport {
        scale: o.scale,
        mtu,
        mode: if o.quick { "quick" } else { "full" }.into(),
        started,
        load: (load_before, report::loadavg()),
        emulator_limit_mbit,
        table4_secs: (o.netcheck_secs, o.iperf_secs),
        table4,
        fig6_dataset,
        fig6,
        table5: Vec::new(),
        notes,
    })
}
