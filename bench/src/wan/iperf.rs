//! TCP throughput between two sites measured by iperf3, and the emulator's
//! own forwarding limit measured with it.

use super::{preset, Wan};
use anyhow::Context;
use std::time::Duration;

/// TCP throughput from `client` to `server` measured by iperf3 (bits per
/// second at the receiver); `reverse` makes the server send.
pub fn iperf3_bps(wan: &Wan, client: &str, server: &str, secs: u32, reverse: bool) -> anyhow::Result<f64> {
    let (c, s) = (wan.site(client)?, wan.site(server)?);
    let mut srv = s.command("iperf3");
    srv.args(["-s", "-1", "-B", &s.addr().to_string()]);
    srv.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut srv = srv.spawn().context("starting iperf3 server")?;
    let mut result = None;
    // The server needs a moment to listen; retry the client a few times.
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        let mut cli = c.command("iperf3");
        cli.args(["-c", &s.addr().to_string(), "-t", &secs.to_string(), "-O", "1", "-J"]);
        if reverse {
            cli.arg("-R");
        }
        let out = cli.output().context("running iperf3 client")?;
        if out.status.success() {
            result = Some(out.stdout);
            break;
        }
    }
    let _ = srv.kill();
    let _ = srv.wait();
    let json = result.context("iperf3 client never connected")?;
    let v: serde_json::Value = serde_json::from_slice(&json).context("iperf3 JSON")?;
    v["end"]["sum_received"]["bits_per_second"].as_f64().context("no end.sum_received.bits_per_second")
}

/// The emulator's own limit: one TCP stream through an unlimited, zero-delay
/// link at each MTU, in bits per second.
pub fn forwarding_limit(mtus: &[u32], secs: u32) -> anyhow::Result<Vec<(u32, f64)>> {
    let mut out = Vec::new();
    for &mtu in mtus {
        let mut topo = preset::pair(0.0, None, 0.0)?;
        topo.mtu = mtu;
        let wan = Wan::start(topo)?;
        out.push((mtu, iperf3_bps(&wan, "a", "b", secs, false)?));
    }
    Ok(out)
}
