//! `renkei netcheck`: measure round trips and throughput between every pair
//! of file servers (server to server, like the original's Table 4) and fill
//! the status page's site-to-site matrix.

use super::output::print_json;
use crate::Client;
use clap::Args;
use fs_proto::monitor::{NetMatrix, NetcheckRequest};

/// `netcheck` arguments.
#[derive(Args, Debug)]
pub struct NetcheckArgs {
    /// Only these file servers (default: every live one).
    #[arg(long = "host", value_name = "HOST")]
    hosts: Vec<String>,
    /// Pings per path for the round trip (the smallest is reported).
    #[arg(long, default_value_t = 10)]
    pings: u32,
    /// Time to spend moving bytes per path, in seconds (0: round trips only).
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Show the last measurement instead of measuring again.
    #[arg(long)]
    last: bool,
}

pub(crate) async fn netcheck(client: &Client, a: &NetcheckArgs, json: bool) -> anyhow::Result<()> {
    let m = if a.last {
        crate::monitor::matrix(client).await?.ok_or_else(|| anyhow::anyhow!("no netcheck has run yet"))?
    } else {
        anyhow::ensure!(a.seconds.is_finite() && a.seconds >= 0.0, "--seconds must be a non-negative number");
        let req = NetcheckRequest {
            hosts: a.hosts.clone(),
            pings: a.pings.max(1),
            transfer_ms: (a.seconds * 1000.0).round().min(u32::MAX as f64) as u32,
        };
        let servers =
            if a.hosts.is_empty() { client.hosts().await?.iter().filter(|h| h.alive).count() } else { a.hosts.len() };
        let bound = crate::monitor::netcheck_bound(servers, &req);
        if !json {
            eprintln!("measuring {} path(s) between {servers} file server(s)...", servers * servers.saturating_sub(1));
        }
        crate::monitor::netcheck(client, req, bound).await?
    };
    if json {
        return print_json(&m);
    }
    print_matrix(&m);
    Ok(())
}

fn print_matrix(m: &NetMatrix) {
    println!("{:<14} {:<14} {:>10} {:>10} {:>12}  note", "from", "to", "rtt ms", "median ms", "MB/s");
    for p in &m.paths {
        let ms = |us: Option<u64>| us.map(|u| format!("{:.2}", u as f64 / 1000.0)).unwrap_or_else(|| "-".into());
        let rate = p.rate_bytes_per_s.map(|r| format!("{:.1}", r as f64 / 1e6)).unwrap_or_else(|| "-".into());
        println!(
            "{:<14} {:<14} {:>10} {:>10} {:>12}  {}",
            format!("{} ({})", p.from.host, p.from.site),
            format!("{} ({})", p.to.host, p.to.site),
            ms(p.rtt_us),
            ms(p.rtt_median_us),
            rate,
            p.error.as_deref().unwrap_or("")
        );
    }
    let secs = m.finished_ms.saturating_sub(m.started_ms) as f64 / 1000.0;
    println!("{} path(s) in {secs:.1} s; the status page shows the matrix.", m.paths.len());
}
