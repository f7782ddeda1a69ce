//! renkei across the WAN emulator (issue 4, acceptance 3): the meta server
//! at one emulated site, file servers at two others, real processes in
//! network namespaces; put/get across them, and the time of a small-file
//! operation is the number of round trips it makes times the RTT. Issue 5:
//! `ls -l` of 10,000 entries through a mount 10 ms from the meta server
//! ([`listing`]) and small files read at a third site in bundles
//! ([`small_reads`]), mounts whose sockets live in a site ([`site_mount`]).
//! Issue 13: the link cut under a mount mid-copy ([`link_cut`]).
//!
//! Gated by `RENKEI_TEST_NETNS=1` (root); the mount tests also by
//! `RENKEI_TEST_FUSE=1`.

mod link_cut;
mod listing;
mod site_mount;
mod small_reads;

use bench::wan::{preset, LinkParams, SiteSpec, Topology, Wan};
use bench::wanfed::{WanFedSpec, WanFederation};
use std::time::{Duration, Instant};
use tests::{pattern, tier_enabled, with_timeout};

const RTT_MS: f64 = 20.0;

fn three_sites() -> Topology {
    let mut t = preset::pair(RTT_MS, Some(200.0), 0.0).expect("pair");
    t.sites = ["a", "b", "c"].iter().map(|n| SiteSpec { name: n.to_string() }).collect();
    t.links.clear();
    t.default_link = Some(LinkParams::new(Duration::from_secs_f64(RTT_MS / 2000.0), Some(200.0)));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_file_operations_cost_round_trips_across_sites() {
    if !tier_enabled("RENKEI_TEST_NETNS", true) {
        return;
    }
    with_timeout(180, async {
        let wan = Wan::start(three_sites()).expect("start the WAN emulator");
        let spec = WanFedSpec {
            meta_site: "a".into(),
            server_sites: vec!["b".into(), "c".into()],
            bin_dir: tests::procs::bin_dir(),
            heartbeat_ms: 500,
        };
        let fed = WanFederation::start(&wan, spec).expect("start the federation");
        fed.wait_alive(&wan, "b", Duration::from_secs(30)).await.expect("servers alive");
        let at_b = fed.client(&wan, "b", "alice").await.expect("client at b");
        let at_c = fed.client(&wan, "c", "alice").await.expect("client at c");
        at_b.mkdir("/w", false, 0o755).await.expect("mkdir");
        at_c.stat("/").await.expect("warm up c");
        let rtt = Duration::from_secs_f64(RTT_MS / 1000.0);

        // A warm stat is one round trip to the meta server.
        let before = at_b.counters().meta_requests();
        let t = Instant::now();
        at_b.stat("/w").await.expect("stat");
        let stat = t.elapsed();
        assert_eq!(at_b.counters().meta_requests() - before, 1);

        // A small put from b: resolve, create and open-write from the client
        // to meta, the bytes to b's own server (no WAN), and the server's
        // registration at meta: four WAN round trips.
        let small = pattern(1000, 1);
        let before = at_b.counters().meta_requests();
        let t = Instant::now();
        let attr = at_b.put_bytes(&small, "/w/small").await.expect("small put");
        let put = t.elapsed();
        assert_eq!(at_b.counters().meta_requests() - before, 3, "resolve, create, open_write");
        eprintln!("RTT {rtt:?}: warm stat {stat:?}, small put {put:?}");
        assert!(stat >= rtt.mul_f64(0.9) && stat < rtt.mul_f64(2.5), "stat took {stat:?} at RTT {rtt:?}");
        assert!(put >= rtt.mul_f64(3.6) && put < rtt.mul_f64(7.0), "small put took {put:?}, about 4 RTT expected");
        let (_, reps) = at_b.where_is("/w/small").await.expect("where");
        assert_eq!(reps.iter().map(|r| r.server.site.as_str()).collect::<Vec<_>>(), vec!["b"]);
        assert_eq!(attr.size, 1000);

        // Read at c what b wrote: bytes travel b -> c over the emulated link.
        let big = pattern(5 << 20, 2);
        at_b.put_bytes(&big, "/w/big").await.expect("big put");
        assert!(at_c.get_bytes("/w/big").await.expect("get at c") == big);
        assert_eq!(at_c.get_bytes("/w/small").await.expect("small get at c"), small);
        let ab = wan.link_stats("b", "c").expect("b->c link");
        eprintln!("b->c link carried {ab:?}");
    })
    .await
}
