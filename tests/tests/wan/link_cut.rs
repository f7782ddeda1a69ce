//! The WAN link cut under a mount in the middle of a copy (issue 13): meta
//! at `a`, the file server and the mount at `b`, 10 ms apart. Files are
//! written into a directory of the mount; after the first part the link
//! between `a` and `b` is cut ([`Wan::cut`]). While it is cut no file
//! operation may wait past the mount's timeout (each either completes
//! locally or fails), an fsync fails instead of hanging; once the link is
//! back the copy is completed and a client at `a` reads every file whole.
//!
//! Gated by `RENKEI_TEST_NETNS=1` and `RENKEI_TEST_FUSE=1`.

use crate::site_mount::{fuse_enabled, SiteMount};
use bench::wan::Wan;
use bench::wanfed::{WanFedSpec, WanFederation};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tests::{pattern, tier_enabled, with_timeout};

const FILES: usize = 300;
/// Files written before the cut.
const BEFORE: usize = 100;
/// Files tried while the link is cut.
const DURING: usize = 20;
/// The mount's timeout (`-o timeout=`), seconds.
const TIMEOUT_S: u64 = 3;

fn contents(i: usize) -> Vec<u8> {
    pattern(1000 + (i * 977) % 30_000, i as u64 + 7)
}

/// Writes files `range` into `dir`; per file: how long it took and its error.
fn write_files(dir: PathBuf, range: std::ops::Range<usize>) -> Vec<(usize, Duration, Option<std::io::Error>)> {
    range
        .map(|i| {
            let t = Instant::now();
            let r = std::fs::write(dir.join(format!("f{i:04}")), contents(i));
            (i, t.elapsed(), r.err())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_link_under_a_copy_bounds_every_wait_and_the_copy_completes_after() {
    if !tier_enabled("RENKEI_TEST_NETNS", true) || !fuse_enabled() {
        return;
    }
    tests::init_logs();
    with_timeout(150, async {
        let wan = Wan::start(bench::wan::preset::pair(10.0, Some(1000.0), 0.0).expect("pair")).expect("WAN");
        let spec = WanFedSpec {
            meta_site: "a".into(),
            server_sites: vec!["b".into()],
            bin_dir: tests::procs::bin_dir(),
            heartbeat_ms: 500,
        };
        let fed = WanFederation::start(&wan, spec).expect("start the federation");
        fed.wait_alive(&wan, "b", Duration::from_secs(30)).await.expect("servers alive");
        let m = SiteMount::new(&fed, &wan, "b", "alice", "/", &format!("timeout={TIMEOUT_S}")).await;
        let dir = m.path.join("copy");
        std::fs::create_dir(&dir).expect("mkdir in the mount");

        let first = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || write_files(dir, 0..BEFORE)
        })
        .await
        .expect("task");
        assert!(first.iter().all(|(_, _, e)| e.is_none()), "before the cut: {first:?}");

        wan.cut("a", "b").expect("cut the link");
        // One system call waits at most the mount's timeout plus one call's
        // (timeout + call_timeout, both TIMEOUT_S here), and a little.
        let bound = Duration::from_secs(TIMEOUT_S * 2 + 1);
        let during = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || {
                // Right after the cut (the lease still held here), then
                // once the mount has noticed (after the fsync below).
                let mut files = write_files(dir.clone(), BEFORE..BEFORE + DURING / 2);
                // fsync must reach the meta server: it fails, it does not hang.
                let t = Instant::now();
                let opened = std::fs::File::open(dir.join(format!("f{:04}", BEFORE)));
                let open_took = t.elapsed();
                let t = Instant::now();
                let synced = opened.map(|f| (open_took, f.sync_all()));
                let sync_took = t.elapsed();
                let t = Instant::now();
                let stat = std::fs::metadata(&dir).map(|_| ());
                let stat_took = t.elapsed();
                files.extend(write_files(dir.clone(), BEFORE + DURING / 2..BEFORE + DURING));
                (files, (sync_took, synced), (stat_took, stat))
            }
        })
        .await
        .expect("task");
        let (files, (sync_took, synced), (stat_took, stat)) = during;
        let failed: Vec<usize> = files.iter().filter(|(_, _, e)| e.is_some()).map(|(i, _, _)| *i).collect();
        let slowest = files.iter().map(|(_, d, _)| *d).max().unwrap_or_default();
        eprintln!(
            "while cut: {} of {DURING} writes failed (slowest {slowest:?}); fsync {synced:?} after {sync_took:?}; \
             stat {stat:?} after {stat_took:?}; counters {:?}",
            failed.len(),
            m.counters.snapshot()
        );
        for (i, took, e) in &files {
            assert!(*took <= bound, "writing f{i:04} waited {took:?} with the link cut ({e:?}), bound {bound:?}");
        }
        let (open_took, synced) = synced.expect("open of a file written while cut");
        assert!(open_took <= bound, "open waited {open_took:?} with the link cut, bound {bound:?}");
        assert!(sync_took <= bound, "fsync waited {sync_took:?} with the link cut, bound {bound:?}");
        assert!(synced.is_err(), "fsync cannot succeed without the meta server");
        assert!(stat_took <= bound, "stat waited {stat_took:?} with the link cut");
        let cut = wan.link_stats("b", "a").expect("link b -> a").drop_cut;
        assert!(cut > 0, "the mount's packets met the cut");

        wan.restore("a", "b").expect("restore the link");
        // The copy completed: every file (re)written, then fsynced.
        let rest = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || {
                let mut redo = write_files(dir.clone(), BEFORE..FILES);
                redo.retain(|(_, _, e)| e.is_some());
                let synced = std::fs::File::open(&dir).and_then(|d| d.sync_all());
                (redo, synced)
            }
        })
        .await
        .expect("task");
        assert!(rest.0.is_empty(), "writes after the link came back failed: {:?}", rest.0);
        rest.1.expect("fsync of the directory after the link came back");
        m.unmount().await;

        let at_a = fed.client(&wan, "a", "alice").await.expect("client at a");
        let listed = at_a.list("/copy").await.expect("list at a");
        assert_eq!(listed.len(), FILES, "files at the meta server");
        for i in 0..FILES {
            let got = at_a.get_bytes(&format!("/copy/f{i:04}")).await.expect("read at a");
            assert!(got == contents(i), "f{i:04} is not whole ({} bytes)", got.len());
        }
    })
    .await
}
