//! Table 4 on the emulated topology: for every directed path between the six PoPs, renkei's own
//! transport (the file server at `to` pulling probe bytes from the one at `from`, as
//! `renkei netcheck` does), one untuned TCP stream (iperf3 with the kernel's defaults) and the
//! paper's iperf value scaled like the emulated link.

use super::{PaperOptions, ADMIN_USER, META_SITE};
use crate::wan::iperf::iperf3_bps;
use crate::wan::preset::{renkei2011_rate_mbyte, Tuning, RENKEI2011_RATES_MBYTE};
use crate::wan::Wan;
use crate::wanfed::WanFederation;
use anyhow::Context;
use fs_proto::monitor::NetcheckRequest;
use serde::Serialize;
use tracing::info;

/// One directed path.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Sending PoP.
    pub from: String,
    /// Receiving PoP.
    pub to: String,
    /// The paper's Table 4, after tuning, MB/s (unscaled).
    pub paper_mb_s: f64,
    /// The paper's Table 4, before tuning, MB/s (unscaled).
    pub paper_before_mb_s: f64,
    /// The emulated link's rate (paper x scale), MB/s of IP packets.
    pub link_mb_s: f64,
    /// renkei's server-to-server pull, MB/s of payload.
    pub renkei_mb_s: Option<f64>,
    /// renkei's request round trip on the path (smallest of the pings), ms.
    pub renkei_rtt_ms: Option<f64>,
    /// One iperf3 TCP stream with kernel defaults, MB/s of payload.
    pub tcp_untuned_mb_s: Option<f64>,
    /// Why a column is missing.
    pub error: Option<String>,
}

impl Row {
    /// renkei's rate as a fraction of the emulated link.
    pub fn renkei_of_link(&self) -> Option<f64> {
        self.renkei_mb_s.map(|r| r / self.link_mb_s)
    }
}

/// The paths to measure: `o.paths`, or all 30 of Table 4.
fn paths(o: &PaperOptions) -> Vec<(String, String)> {
    if o.paths.is_empty() {
        RENKEI2011_RATES_MBYTE.iter().map(|r| (r.0.to_string(), r.1.to_string())).collect()
    } else {
        o.paths.clone()
    }
}

/// Measure the paths: one netcheck of the file servers on them, then iperf3 path by path.
pub fn run(rt: &tokio::runtime::Runtime, wan: &Wan, fed: &WanFederation, o: &PaperOptions) -> anyhow::Result<Vec<Row>> {
    let paths = paths(o);
    let mut rows = Vec::with_capacity(paths.len());
    for (from, to) in &paths {
        let paper = renkei2011_rate_mbyte(from, to, Tuning::After)
            .with_context(|| format!("{from}->{to} is not a path of Table 4"))?;
        let before = renkei2011_rate_mbyte(from, to, Tuning::Before).unwrap_or(f64::NAN);
        rows.push(Row {
            from: from.clone(),
            to: to.clone(),
            paper_mb_s: paper,
            paper_before_mb_s: before,
            link_mb_s: paper * o.scale,
            renkei_mb_s: None,
            renkei_rtt_ms: None,
            tcp_untuned_mb_s: None,
            error: None,
        });
    }

    let mut hosts: Vec<String> =
        paths.iter().flat_map(|(a, b)| [a, b]).map(|s| WanFederation::server_name(s)).collect();
    hosts.sort();
    hosts.dedup();
    info!(servers = hosts.len(), secs = o.netcheck_secs, "renkei netcheck between the PoPs' file servers");
    let req =
        NetcheckRequest { hosts: hosts.clone(), pings: 5, transfer_ms: (o.netcheck_secs * 1000.0).round() as u32 };
    let bound = fs_client::monitor::netcheck_bound(hosts.len(), &req);
    let matrix = rt
        .block_on(async {
            let c = fed.client(wan, META_SITE, ADMIN_USER).await?;
            anyhow::Ok(fs_client::monitor::netcheck(&c, req, bound).await?)
        })
        .context("renkei netcheck")?;
    for p in &matrix.paths {
        let Some(row) = rows.iter_mut().find(|r| r.from == p.from.site && r.to == p.to.site) else { continue };
        row.renkei_mb_s = p.rate_bytes_per_s.map(|b| b as f64 / 1e6);
        row.renkei_rtt_ms = p.rtt_us.map(|us| us as f64 / 1000.0);
        row.error = p.error.clone();
    }

    if o.iperf_secs > 0 {
        for row in &mut rows {
            let _span = tracing::info_span!("iperf3", from = %row.from, to = %row.to).entered();
            match iperf3_bps(wan, &row.from, &row.to, o.iperf_secs, false) {
                Ok(bps) => row.tcp_untuned_mb_s = Some(bps / 8e6),
                Err(e) => {
                    let e = format!("iperf3: {e:#}");
                    row.error = Some(row.error.take().map_or(e.clone(), |old| format!("{old}; {e}")));
                }
            }
            info!(
                renkei_mb_s = row.renkei_mb_s,
                tcp_untuned_mb_s = row.tcp_untuned_mb_s,
                link_mb_s = row.link_mb_s,
                "path measured"
            );
        }
    }
    Ok(rows)
}
