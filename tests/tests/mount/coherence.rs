//! Two mounts of one federation as different clients (acceptance 3):
//! close-to-open for contents, and callbacks that make a change at one
//! appear in the other's cached listing within a bound far below the lease.

use crate::common::{blocking, enabled, TestMount};
use std::time::{Duration, Instant};
use tests::procs::ProcFederation;
use tests::with_timeout;

/// How soon a change at one mount must show in the other's cached listing.
/// The lease is 60 s and the kernel does not cache listings, so only a
/// callback can make this.
const CALLBACK_BOUND: Duration = Duration::from_secs(2);

/// Wait (at most `bound`) for `m` to apply a callback after the `heard`
/// first ones, and count it heard: what the caller checks again can only
/// have changed through one.
async fn next_callback(m: &TestMount, heard: &mut u64, bound: Duration) {
    let since = *heard;
    m.counters.wait_until(bound, |c| c.get("cache.invalidations") > since).await;
    *heard = m.counters.get("cache.invalidations");
}

fn names(dir: std::path::PathBuf) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn close_to_open_and_callbacks_between_two_mounts() {
    if !enabled("close_to_open_and_callbacks_between_two_mounts") {
        return;
    }
    with_timeout(180, async {
        let fed = ProcFederation::up(2).await;
        let a = TestMount::new(&fed, Some("site1"), "/", "").await;
        let b = TestMount::new(&fed, Some("site2"), "/", "").await;

        // Close-to-open: written and closed at A, read after open at B.
        let (fa, fb) = (a.join("shared.txt"), b.join("shared.txt"));
        blocking({
            let fa = fa.clone();
            move || std::fs::write(fa, b"version one")
        })
        .await
        .unwrap();
        let got = blocking({
            let fb = fb.clone();
            move || std::fs::read(fb)
        })
        .await
        .unwrap();
        assert_eq!(got, b"version one");
        blocking({
            let fa = fa.clone();
            move || std::fs::write(fa, b"version two, longer")
        })
        .await
        .unwrap();
        let got = blocking(move || std::fs::read(fb)).await.unwrap();
        assert_eq!(got, b"version two, longer", "B sees the contents A closed");

        // B lists a directory; a second listing is served from its cache.
        blocking({
            let d = a.join("dir");
            move || std::fs::create_dir(d)
        })
        .await
        .unwrap();
        // A's mkdir is written back later; its commit is answered only
        // once B acknowledged the invalidations it causes. Commit it now
        // (fsync of the parent), so none is still on its way to B to drop
        // what B caches next, and the warm check below is about the cache
        // alone.
        blocking({
            let root = a.path.clone();
            move || std::fs::File::open(root)?.sync_all()
        })
        .await
        .expect("fsync of A's root commits the mkdir");
        let bdir = b.join("dir");
        assert!(blocking({
            let d = bdir.clone();
            move || names(d)
        })
        .await
        .is_empty());
        let (before, kinds) = (b.meta_requests(), b.counters.snapshot());
        assert!(blocking({
            let d = bdir.clone();
            move || names(d)
        })
        .await
        .is_empty());
        assert_eq!(
            b.meta_requests(),
            before,
            "a warm listing at B sends nothing: {kinds:?} -> {:?}",
            b.counters.snapshot()
        );

        // A creates a file: B's cached listing shows it through the callback.
        let t = Instant::now();
        let mut heard = b.counters.get("cache.invalidations");
        blocking({
            let f = a.join("dir/new-at-a");
            move || std::fs::write(f, b"x")
        })
        .await
        .unwrap();
        loop {
            let seen = blocking({
                let d = bdir.clone();
                move || names(d)
            })
            .await;
            if seen == ["new-at-a"] {
                break;
            }
            assert!(t.elapsed() < CALLBACK_BOUND, "B did not see the new file within {CALLBACK_BOUND:?}: {seen:?}");
            next_callback(&b, &mut heard, CALLBACK_BOUND.saturating_sub(t.elapsed())).await;
        }
        eprintln!("new file visible at the other mount {:?} after it was created", t.elapsed());

        // And a removal at B reaches A's cache the same way.
        let adir = a.join("dir");
        assert_eq!(
            blocking({
                let d = adir.clone();
                move || names(d)
            })
            .await,
            ["new-at-a"]
        );
        let t = Instant::now();
        let mut heard = a.counters.get("cache.invalidations");
        blocking(move || std::fs::remove_file(bdir.join("new-at-a"))).await.unwrap();
        loop {
            let seen = blocking({
                let d = adir.clone();
                move || names(d)
            })
            .await;
            if seen.is_empty() {
                break;
            }
            assert!(t.elapsed() < CALLBACK_BOUND, "A still lists the removed file after {CALLBACK_BOUND:?}");
            next_callback(&a, &mut heard, CALLBACK_BOUND.saturating_sub(t.elapsed())).await;
        }
        a.unmount().await;
        b.unmount().await;
    })
    .await
}

/// A mount that hears nothing from the meta server (stopped, or cut off)
/// for `SILENT_MS` stops trusting what it cached: the meta server answers a
/// change after at most `ACK_BOUND_MS` without that mount's acknowledgement,
/// so by then the mount must not serve the old state from its cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mount_cut_off_from_meta_stops_trusting_its_cache() {
    if !enabled("a_mount_cut_off_from_meta_stops_trusting_its_cache") {
        return;
    }
    with_timeout(120, async {
        let fed = ProcFederation::up(1).await;
        fed.client(None).await.put_bytes(b"cached", "/cached.txt").await.expect("put");
        // attr_timeout=0: the kernel keeps nothing, every stat reaches the
        // mount (no waiting out the kernel's own cache).
        let m = TestMount::new(&fed, None, "/", "attr_timeout=0").await;
        let f = m.join("cached.txt");
        let stat = |f: std::path::PathBuf| blocking(move || std::fs::metadata(f).map(|m| m.len()));
        assert_eq!(stat(f.clone()).await.unwrap(), 6);
        // Warm: a stat the mount answers from its cache costs nothing.
        let before = m.meta_requests();
        assert_eq!(stat(f.clone()).await.unwrap(), 6);
        assert_eq!(m.meta_requests(), before, "warm stat sent a request");

        let meta = fed.pid("meta").expect("meta running");
        // SAFETY: stopping and continuing a process this federation started.
        unsafe { libc::kill(meta, libc::SIGSTOP) };
        let silent = Duration::from_millis(fs_proto::callback::SILENT_MS);
        // Wait for the mount to give its cache up (its count of lost
        // subscriptions moves), bounded well past the silence bound.
        let lost = m.counters.get("cache.lost");
        let t = Instant::now();
        assert!(
            m.counters.wait_until(silent * 3, |c| c.get("cache.lost") > lost).await,
            "the mount still trusts its cache {:?} into the silence",
            t.elapsed()
        );
        assert!(t.elapsed() >= silent / 2, "the cache was dropped before the silence bound ({:?})", t.elapsed());
        let before = m.meta_requests();
        let pending = tokio::spawn(stat(f.clone()));
        let asked = m.counters.wait_until(Duration::from_secs(3), |c| c.meta_requests() > before).await;
        // SAFETY: as above.
        unsafe { libc::kill(meta, libc::SIGCONT) };
        assert!(asked, "after {silent:?} of silence the mount still answered from its cache");
        // Once the meta server answers again, so does the mount.
        let len = tokio::time::timeout(Duration::from_secs(30), pending).await.expect("stat bounded").unwrap();
        assert_eq!(len.expect("stat once the meta server is back"), 6);
        m.unmount().await;
    })
    .await
}
