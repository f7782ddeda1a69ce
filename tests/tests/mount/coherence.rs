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
        // Invalidations of A's own changes may still be on their way to B
        // (they race B's next replies and may drop what B just cached); let
        // them land so the warm check below is about the cache alone.
        tokio::time::sleep(Duration::from_millis(300)).await;
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
            tokio::time::sleep(Duration::from_millis(20)).await;
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
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        a.unmount().await;
        b.unmount().await;
    })
    .await
}
