//! Measured against configured: RTT by ping, TCP rate by iperf3, random loss by 10,000 pings, and
//! asymmetric rates.

use std::time::Duration;

use bench::wan::{preset, LinkParams, LinkSpec, SiteSpec, Topology, Wan};

use crate::common::{gate, iperf3_bps, median, ping_counts, ping_rtts, within};

fn two_sites(ab: LinkParams, ba: LinkParams, mtu: u32) -> Topology {
    Topology {
        mtu,
        seed: None,
        rate_scale: 1.0,
        sites: vec![SiteSpec { name: "a".into() }, SiteSpec { name: "b".into() }],
        links: vec![LinkSpec::new("a", "b", ab, false), LinkSpec::new("b", "a", ba, false)],
        default_link: None,
    }
}

#[test]
fn ping_rtt_matches_configured_rtt() -> anyhow::Result<()> {
    let Some(_serial) = gate("ping_rtt_matches_configured_rtt") else { return Ok(()) };
    for rtt in [1.0, 10.0, 50.0] {
        let wan = Wan::start(preset::pair(rtt, None, 0.0)?)?;
        let interval = Duration::from_millis(if rtt < 20.0 { 10 } else { 25 });
        let rtts = ping_rtts(&wan.site("a")?, &wan.site("b")?, 100, interval)?;
        let got = median(rtts.clone());
        let tol = (rtt * 0.10).max(0.3);
        eprintln!("configured RTT {rtt} ms: median {got:.3} ms over {} replies (tolerance {tol} ms)", rtts.len());
        assert!(rtts.len() >= 95, "lost pings on a lossless link: {} of 100 replied", rtts.len());
        assert!((got - rtt).abs() <= tol, "RTT {rtt} ms configured, {got:.3} ms measured");
    }
    Ok(())
}

#[test]
fn iperf3_tcp_rate_matches_configured_rate() -> anyhow::Result<()> {
    let Some(_serial) = gate("iperf3_tcp_rate_matches_configured_rate") else { return Ok(()) };
    // 1 Gbit/s both at the usual MTU and at the largest: the emulator forwards about 3 Gbit/s of
    // TCP at 1500 bytes here (see bench/README.md), so both must be accurate.
    for (rate, mtu) in [(100.0, 1500), (1000.0, 1500), (1000.0, 65535)] {
        let mut topo = preset::pair(10.0, Some(rate), 0.0)?;
        topo.mtu = mtu;
        let wan = Wan::start(topo)?;
        let bps = iperf3_bps(&wan, "a", "b", 6, false)?;
        let got = bps / 1e6;
        let stats = wan.link_stats("a", "b");
        eprintln!("configured {rate} Mbit/s, MTU {mtu}, RTT 10 ms: iperf3 {got:.1} Mbit/s; link a->b {stats:?}");
        assert!(within(got, rate, 0.10), "{rate} Mbit/s configured, {got:.1} Mbit/s measured");
    }
    Ok(())
}

#[test]
fn one_percent_loss_shows_in_10000_pings() -> anyhow::Result<()> {
    let Some(_serial) = gate("one_percent_loss_shows_in_10000_pings") else { return Ok(()) };
    // Loss on the request direction only, so each lost ping is exactly one dropped packet.
    let half_ms = Duration::from_micros(500);
    let mut lossy = LinkParams::new(half_ms, None);
    lossy.loss_percent = 1.0;
    let wan = Wan::start(two_sites(lossy, LinkParams::new(half_ms, None), 1500))?;
    let (sent, received) = ping_counts(&wan.site("a")?, &wan.site("b")?, 10_000, Duration::from_millis(1))?;
    let loss = 100.0 * (sent - received) as f64 / sent as f64;
    let stats = wan.link_stats("a", "b");
    eprintln!("1 % configured: {sent} sent, {received} received, {loss:.2} % lost; link a->b {stats:?}");
    assert_eq!(sent, 10_000);
    assert!((loss - 1.0).abs() <= 0.5, "1 % loss configured, {loss:.2} % measured");
    Ok(())
}

#[test]
fn asymmetric_rates_differ_by_direction() -> anyhow::Result<()> {
    let Some(_serial) = gate("asymmetric_rates_differ_by_direction") else { return Ok(()) };
    let delay = Duration::from_millis(5);
    let wan = Wan::start(two_sites(LinkParams::new(delay, Some(200.0)), LinkParams::new(delay, Some(50.0)), 1500))?;
    let forward = iperf3_bps(&wan, "a", "b", 5, false)? / 1e6;
    let backward = iperf3_bps(&wan, "a", "b", 5, true)? / 1e6;
    eprintln!("a->b 200 Mbit/s configured: {forward:.1}; b->a 50 Mbit/s configured: {backward:.1}");
    assert!(within(forward, 200.0, 0.10), "a->b {forward:.1} Mbit/s, want 200");
    assert!(within(backward, 50.0, 0.10), "b->a {backward:.1} Mbit/s, want 50");
    Ok(())
}

#[test]
fn sockets_made_in_a_site_cross_the_emulated_link() -> anyhow::Result<()> {
    let Some(_serial) = gate("sockets_made_in_a_site_cross_the_emulated_link") else { return Ok(()) };
    let wan = Wan::start(preset::pair(40.0, None, 0.0)?)?;
    let (a, b) = (wan.site("a")?, wan.site("b")?);
    let tx = a.run_in(|| std::net::UdpSocket::bind((a.addr(), 0)))?;
    let rx = b.run_in(|| std::net::UdpSocket::bind((b.addr(), 0)))?;
    rx.set_read_timeout(Some(Duration::from_secs(5)))?;
    let sent = std::time::Instant::now();
    tx.send_to(b"over the WAN", rx.local_addr()?)?;
    let mut buf = [0u8; 64];
    let (n, from) = rx.recv_from(&mut buf)?;
    let one_way = sent.elapsed();
    assert_eq!(&buf[..n], b"over the WAN");
    assert_eq!(from.ip(), std::net::IpAddr::V4(a.addr()));
    assert!(one_way >= Duration::from_millis(20), "one-way delay 20 ms configured, took {one_way:?}");
    assert!(one_way < Duration::from_millis(30), "one-way delay 20 ms configured, took {one_way:?}");
    Ok(())
}

#[test]
fn wan_can_be_shared_between_threads() {
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Wan>();
    is_send_sync::<bench::wan::Site>();
}
