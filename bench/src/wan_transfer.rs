//! One large file across an emulated long fat pipe, with default settings:
//! `renkei put` from a client at site `b` to the file server at site `a`
//! and `renkei get` back, reported as a fraction of the link rate (and of
//! what untuned TCP, iperf3, gets on the same link).

use crate::putget::make_file;
use crate::wan::{iperf::iperf3_bps, preset, Wan};
use crate::wanfed::{WanFedSpec, WanFederation, SERVER_PORT};
use fs_proto::rpc::PeerAddr;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct TransferOptions {
    /// Round-trip time of the link, ms.
    pub rtt_ms: f64,
    /// Link rate, Mbit/s.
    pub rate_mbit: f64,
    /// File size in bytes.
    pub size: u64,
    /// MTU of the emulated sites.
    pub mtu: u32,
    /// Directory of renkei-meta and renkei-server.
    pub bin_dir: PathBuf,
    /// Scratch directory for the local file.
    pub scratch: PathBuf,
    /// Also measure untuned TCP with iperf3.
    pub tcp_baseline: bool,
}

/// Results, in Mbit/s of file bytes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TransferReport {
    /// The options' link.
    pub rtt_ms: f64,
    /// Link rate.
    pub rate_mbit: f64,
    /// MTU.
    pub mtu: u32,
    /// File size.
    pub size: u64,
    /// put (client at b -> server at a).
    pub put_mbit: f64,
    /// get (server at a -> client at b).
    pub get_mbit: f64,
    /// iperf3, one TCP stream, default kernel buffers.
    pub tcp_mbit: Option<f64>,
    /// The client's QUIC path during the put (it is the sender then).
    pub put_path: Option<PathNote>,
}

/// What the sender's QUIC path saw: where the time went.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PathNote {
    /// Smoothed RTT at the end, ms.
    pub rtt_ms: f64,
    /// Congestion window at the end, bytes.
    pub cwnd: u64,
    /// Congestion events (loss episodes).
    pub congestion_events: u64,
    /// Packets declared lost.
    pub lost_packets: u64,
    /// Packets sent.
    pub sent_packets: u64,
    /// Path MTU reached.
    pub mtu: u16,
}

impl PathNote {
    fn of(before: &quinn::ConnectionStats, after: &quinn::ConnectionStats) -> Self {
        PathNote {
            rtt_ms: after.path.rtt.as_secs_f64() * 1e3,
            cwnd: after.path.cwnd,
            congestion_events: after.path.congestion_events - before.path.congestion_events,
            lost_packets: after.path.lost_packets - before.path.lost_packets,
            sent_packets: after.path.sent_packets - before.path.sent_packets,
            mtu: after.path.current_mtu,
        }
    }

    /// One line for the report.
    pub fn line(&self) -> String {
        format!(
            "sender's QUIC path: {} packets sent, {} lost ({:.3} %), {} congestion events, final cwnd {:.1} MB, \
             smoothed RTT {:.1} ms, path MTU {}",
            self.sent_packets,
            self.lost_packets,
            100.0 * self.lost_packets as f64 / self.sent_packets.max(1) as f64,
            self.congestion_events,
            self.cwnd as f64 / 1e6,
            self.rtt_ms,
            self.mtu
        )
    }
}

impl TransferReport {
    /// A markdown table.
    pub fn markdown(&self) -> String {
        let row = |name: &str, v: f64| format!("| {name} | {v:.0} | {:.0} % |\n", 100.0 * v / self.rate_mbit);
        let mut s = format!(
            "## One {} MiB file over {} ms RTT at {} Mbit/s (MTU {}), default settings\n\n| work | Mbit/s | of link rate |\n|---|---|---|\n",
            self.size >> 20,
            self.rtt_ms,
            self.rate_mbit,
            self.mtu
        );
        s += &row("renkei put", self.put_mbit);
        s += &row("renkei get", self.get_mbit);
        if let Some(t) = self.tcp_mbit {
            s += &row("TCP (iperf3, untuned)", t);
        }
        if let Some(p) = &self.put_path {
            s += &format!("\nDuring the put, the {}.\n", p.line());
        }
        s
    }
}

/// Run the measurement.
pub async fn run(o: &TransferOptions) -> anyhow::Result<TransferReport> {
    let mut topo = preset::pair(o.rtt_ms, Some(o.rate_mbit), 0.0)?;
    topo.mtu = o.mtu;
    let wan = Wan::start(topo)?;
    let spec = WanFedSpec {
        meta_site: "a".into(),
        server_sites: vec!["a".into()],
        bin_dir: o.bin_dir.clone(),
        heartbeat_ms: 1000,
    };
    let fed = WanFederation::start(&wan, spec)?;
    fed.wait_alive(&wan, "b", Duration::from_secs(30)).await?;
    std::fs::create_dir_all(&o.scratch)?;
    let src = o.scratch.join("big.bin");
    make_file(&src, o.size)?;
    let client = fed.client(&wan, "b", "bench").await?;
    client.stat("/").await?;
    let server =
        PeerAddr { addr: SocketAddr::from((wan.addr_of("a")?, SERVER_PORT)), name: WanFederation::server_name("a") };
    let conn = client.data().dialer().connect(&server).await?;
    let before = conn.stats();

    // RENKEI_BENCH_TRACE=1: the sender's path every second, to see where
    // the time goes (window, loss, RTT, MTU).
    let tracer = std::env::var_os("RENKEI_BENCH_TRACE").map(|_| {
        let conn = conn.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let mut last = conn.stats();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = conn.stats();
                let sent = now.udp_tx.bytes - last.udp_tx.bytes;
                eprintln!(
                    "t={:>5.1}s sent {:>7.1} Mbit/s, {}; probes lost {}, black holes {}, ios {}",
                    start.elapsed().as_secs_f64(),
                    sent as f64 * 8.0 / 1e6,
                    PathNote::of(&last, &now).line(),
                    now.path.lost_plpmtud_probes,
                    now.path.black_holes_detected,
                    now.udp_tx.ios - last.udp_tx.ios,
                );
                last = now;
            }
        })
    });
    let t = Instant::now();
    client.put_file(&src, "/big.bin", &|_| {}).await?;
    if let Some(t) = tracer {
        t.abort();
        eprintln!("emulator: {:?}", wan.stats());
    }
    let put = o.size as f64 * 8.0 / 1e6 / t.elapsed().as_secs_f64();
    let put_path = Some(PathNote::of(&before, &conn.stats()));
    let _ = std::fs::remove_file(&src);

    let out = o.scratch.join("back.bin");
    let t = Instant::now();
    client.get_file("/big.bin", &out, &|_| {}).await?;
    let get = o.size as f64 * 8.0 / 1e6 / t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&out);
    drop(client);
    drop(fed);

    let tcp = if o.tcp_baseline { Some(iperf3_bps(&wan, "b", "a", 10, false)? / 1e6) } else { None };
    Ok(TransferReport {
        rtt_ms: o.rtt_ms,
        rate_mbit: o.rate_mbit,
        mtu: o.mtu,
        size: o.size,
        put_mbit: put,
        get_mbit: get,
        tcp_mbit: tcp,
        put_path,
    })
}
