//! Reading a directory of small files through a mount at a third site
//! (issue 5, small-file prefetch on read): meta at `a`, the file server at
//! `b`, the mount at `c`, 10 ms between each. Side by side in one run:
//! one read per file (`-o noprefetch`), bundles with an open per file
//! (`-o noopenlease`), and bundles with leased opens (the default).
//!
//! Gated by `RENKEI_TEST_NETNS=1` and `RENKEI_TEST_FUSE=1`.

use crate::site_mount::{fuse_enabled, SiteMount};
use bench::wan::{LinkParams, SiteSpec, Topology, Wan};
use bench::wanfed::{WanFedSpec, WanFederation};
use fs_client::mount::prefetch::BUNDLE_FILES;
use std::time::{Duration, Instant};
use tests::{pattern, tier_enabled, with_timeout};

const RTT_MS: f64 = 10.0;
const FILES: usize = 150;

fn contents(i: usize) -> Vec<u8> {
    pattern(2000 + (i * 613) % 20_000, i as u64 + 1)
}

fn three_sites() -> Topology {
    let mut t = bench::wan::preset::pair(RTT_MS, Some(1000.0), 0.0).expect("pair");
    t.sites = ["a", "b", "c"].iter().map(|n| SiteSpec { name: n.to_string() }).collect();
    t.links.clear();
    t.default_link = Some(LinkParams::new(Duration::from_secs_f64(RTT_MS / 2000.0), Some(1000.0)));
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_files_read_at_a_third_site_in_bundles() {
    if !tier_enabled("RENKEI_TEST_NETNS", true) || !fuse_enabled() {
        return;
    }
    with_timeout(300, async {
        let wan = Wan::start(three_sites()).expect("start the WAN emulator");
        let spec = WanFedSpec {
            meta_site: "a".into(),
            server_sites: vec!["b".into()],
            bin_dir: tests::procs::bin_dir(),
            heartbeat_ms: 500,
        };
        let fed = WanFederation::start(&wan, spec).expect("start the federation");
        fed.wait_alive(&wan, "b", Duration::from_secs(30)).await.expect("servers alive");
        let at_b = fed.client(&wan, "b", "alice").await.expect("client at b");
        at_b.mkdir("/small", false, 0o755).await.expect("mkdir");
        for i in 0..FILES {
            at_b.put_bytes(&contents(i), &format!("/small/f{i:04}")).await.expect("put");
        }
        let rtt = Duration::from_secs_f64(RTT_MS / 1000.0);
        let mut took = Vec::new();
        for opts in ["noprefetch", "noopenlease", ""] {
            let m = SiteMount::new(&fed, &wan, "c", "alice", "/", opts).await;
            let d = m.path.join("small");
            let listed = tokio::task::spawn_blocking({
                let d = d.clone();
                move || std::fs::read_dir(d).map(|r| r.count())
            })
            .await
            .expect("task")
            .expect("list");
            assert_eq!(listed, FILES);
            let before = m.counters.snapshot();
            let t = Instant::now();
            let got = tokio::task::spawn_blocking(move || {
                (0..FILES).map(|i| std::fs::read(d.join(format!("f{i:04}")))).collect::<Vec<_>>()
            })
            .await
            .expect("task");
            let elapsed = t.elapsed();
            for (i, g) in got.into_iter().enumerate() {
                assert!(g.expect("read") == contents(i), "f{i:04} read wrong with -o {opts:?}");
            }
            let after = m.counters.snapshot();
            let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
            let (meta, data) = (delta("open_read") + delta("batch"), delta("data.read") + delta("data.read_many"));
            eprintln!(
                "-o {opts:?}: {FILES} files in {elapsed:?} ({:.2} RTT per file), {meta} meta and {data} data requests",
                elapsed.as_secs_f64() / rtt.as_secs_f64() / FILES as f64
            );
            let bundles = FILES.div_ceil(BUNDLE_FILES) as u64;
            match opts {
                "noprefetch" => assert!(meta == FILES as u64 && data == FILES as u64, "{after:?}"),
                "noopenlease" => assert!(meta == FILES as u64 && data <= bundles + 2, "{after:?}"),
                _ => assert!(meta <= bundles + 2 && data <= bundles + 2, "{after:?}"),
            }
            took.push(elapsed);
            m.unmount().await;
        }
        // Two round trips per file, one, and one per bundle: asserted
        // loosely (a shared machine), the counts above are the facts.
        assert!(took[1] < took[0].mul_f64(0.8), "bundles did not save the per-file read: {took:?}");
        assert!(took[2] < took[1].mul_f64(0.5), "leased opens did not save the per-file open: {took:?}");
    })
    .await
}
