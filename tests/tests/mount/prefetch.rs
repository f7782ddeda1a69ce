//! Read-ahead on read (issue 5): reading the files of a directory through
//! the mount moves them in bundles (one `ReadMany` per bundle), contents
//! verified, and close-to-open still holds for a file another client
//! changes after it was read ahead: the writer's close returns only once
//! the mount acknowledged the invalidation, so a read right after it sees
//! the new contents. `cp -r` of a tree out of a cold mount costs one listing
//! per directory, a few batches of opens and a few bundles; with `-o
//! noopenlease` one open per file.

use crate::common::{blocking, enabled, sh, TestMount};
use fs_client::mount::prefetch::BUNDLE_FILES;
use tests::procs::ProcFederation;
use tests::{pattern, with_timeout};

const FILES: usize = 200;

/// Wait until no read-ahead of `m` is in flight: every file it asked for
/// has arrived (or failed), so what it holds is what it will hold.
async fn settled(m: &TestMount) {
    let done = |c: &fs_client::counters::Counters| {
        let asked = c.get("data.prefetch_asked");
        asked > 0 && c.get("data.prefetch_settled") == asked
    };
    let bound = std::time::Duration::from_secs(30);
    assert!(
        m.counters.wait_until(bound, done).await,
        "read-ahead still in flight after {bound:?}: {:?}",
        m.counters.snapshot()
    );
}
/// Files read before another client changes [`CHANGED`].
const SPLIT: usize = 66;
const CHANGED: usize = 100;

fn contents(i: usize, version: u64) -> Vec<u8> {
    pattern(1000 + (i * 397) % 30_000, i as u64 * 10 + version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_files_are_read_in_bundles_and_close_to_open_holds() {
    if !enabled("small_files_are_read_in_bundles_and_close_to_open_holds") {
        return;
    }
    with_timeout(300, async {
        let fed = ProcFederation::up(1).await;
        let c = fed.client(None).await;
        c.mkdir("/small", false, 0o755).await.unwrap();
        for i in 0..FILES {
            c.put_bytes(&contents(i, 1), &format!("/small/f{i:04}")).await.unwrap();
        }
        let m = TestMount::new(&fed, None, "/", "").await;
        let d = m.join("small");
        let listed = sh(&d, "ls | wc -l").await;
        assert_eq!(listed.trim(), FILES.to_string());

        let read = |from: usize, to: usize| {
            let d = d.clone();
            blocking(move || (from..to).map(|i| std::fs::read(d.join(format!("f{i:04}")))).collect::<Vec<_>>())
        };
        let before = m.counters.snapshot();
        // Reading f0064 fetches the second bundle (f0064..f0127).
        let first = read(0, SPLIT).await;
        for (i, got) in first.into_iter().enumerate() {
            assert!(got.expect("read") == contents(i, 1), "f{i:04} read wrong");
        }
        settled(&m).await;
        // f0100 is held by the mount, not read yet; another client now
        // writes a new generation of it.
        c.put_bytes(&contents(CHANGED, 2), &format!("/small/f{CHANGED:04}")).await.unwrap();
        let second = read(SPLIT, FILES).await;
        for (k, got) in second.into_iter().enumerate() {
            let i = SPLIT + k;
            let want = contents(i, if i == CHANGED { 2 } else { 1 });
            assert!(got.expect("read") == want, "f{i:04} read wrong (changed at another client: {})", i == CHANGED);
        }
        let after = m.counters.snapshot();
        let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
        let (bundles, reads) = (delta("data.read_many"), delta("data.read"));
        eprintln!("{FILES} small files: {bundles} bundles, {reads} single reads, counters {after:?}");
        // The first open asks for every file (they fit one bundle and the
        // read-ahead window) and the bundle has landed before the change;
        // the changed file's body is dropped by the invalidation, and its
        // open fetches it again alone: two bundles, no single read.
        const { assert!(FILES <= BUNDLE_FILES) };
        assert_eq!((bundles, reads), (2, 0), "one bundle of every file, then one of the changed file: {after:?}");
        assert_eq!(delta("data.prefetch_asked"), FILES as u64 + 1, "each file asked for once, the changed one twice");
        m.unmount().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cp_r_out_of_a_cold_mount() {
    if !enabled("cp_r_out_of_a_cold_mount") {
        return;
    }
    with_timeout(300, async {
        let fed = ProcFederation::up(1).await;
        let c = fed.client(None).await;
        c.mkdir("/tree", false, 0o755).await.unwrap();
        for d in 0..4 {
            c.mkdir(&format!("/tree/d{d}"), false, 0o755).await.unwrap();
            for i in 0..50 {
                c.put_bytes(&contents(d * 50 + i, 1), &format!("/tree/d{d}/f{i:04}")).await.unwrap();
            }
        }
        // Default: opens of files read ahead under a live lease ask nobody;
        // `-o noopenlease`: every open asks the meta server (one request
        // per file, the first of a bundle carrying the rest's grants).
        for (opts, most_opens) in [("", 20), ("noopenlease", 200)] {
            let m = TestMount::new(&fed, None, "/", opts).await;
            let out = tempfile::tempdir().unwrap();
            let before = m.counters.snapshot();
            sh(out.path(), &format!("cp -r {} copy", m.join("tree").display())).await;
            let after = m.counters.snapshot();
            let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
            eprintln!("cp -r of 4 x 50 files from a cold mount, -o {opts:?}: {after:?}");
            // Per directory one listing stream; the bytes in bundles; no
            // per-file lookup or getattr.
            assert_eq!(delta("listdir"), 5, "the tree and its 4 directories: {after:?}");
            assert!(delta("lookup") + delta("getattr") <= 4, "per-file lookups: {after:?}");
            let opens = delta("open_read") + delta("batch");
            assert!(opens <= most_opens, "-o {opts:?}: {opens} open requests: {after:?}");
            if opts == "noopenlease" {
                assert_eq!(opens, 200, "one open per file: {after:?}");
            }
            assert!(delta("data.read_many") <= 8 && delta("data.read") <= 2, "data requests per file: {after:?}");
            for d in 0..4 {
                for i in 0..50 {
                    let got = std::fs::read(out.path().join(format!("copy/d{d}/f{i:04}"))).unwrap();
                    assert!(got == contents(d * 50 + i, 1), "d{d}/f{i:04} copied wrong");
                }
            }
            m.unmount().await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_files_open_without_a_request_and_changes_show_at_once() {
    if !enabled("held_files_open_without_a_request_and_changes_show_at_once") {
        return;
    }
    with_timeout(300, async {
        let fed = ProcFederation::up(1).await;
        let c = fed.client(None).await;
        c.mkdir("/small", false, 0o755).await.unwrap();
        for i in 0..FILES {
            c.put_bytes(&contents(i, 1), &format!("/small/f{i:04}")).await.unwrap();
        }
        let m = TestMount::new(&fed, None, "/", "").await;
        let d = m.join("small");
        sh(&d, "ls > /dev/null").await;
        let read = |from: usize, to: usize| {
            let d = d.clone();
            blocking(move || (from..to).map(|i| std::fs::read(d.join(format!("f{i:04}")))).collect::<Vec<_>>())
        };
        let before = m.counters.snapshot();
        for (i, got) in read(0, SPLIT).await.into_iter().enumerate() {
            assert!(got.expect("read") == contents(i, 1), "f{i:04} read wrong");
        }
        settled(&m).await;
        // A held file changed elsewhere: the writer's commit returns once
        // the mount acknowledged the callback that drops what it holds, so
        // the open right after it asks the meta server.
        c.put_bytes(&contents(CHANGED, 2), &format!("/small/f{CHANGED:04}")).await.unwrap();
        for (k, got) in read(SPLIT, FILES).await.into_iter().enumerate() {
            let i = SPLIT + k;
            let want = contents(i, if i == CHANGED { 2 } else { 1 });
            assert!(got.expect("read") == want, "f{i:04} read wrong (changed at another client: {})", i == CHANGED);
        }
        let after = m.counters.snapshot();
        let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
        eprintln!("{FILES} small files, leased opens: {after:?}");
        // One batch of opens for every file (one bundle), then the changed
        // file's own: every other open is answered from the lease.
        let opens = delta("open_read") + delta("batch");
        assert_eq!(opens, 2, "opens went to the meta server: {after:?}");
        assert_eq!((delta("data.read_many"), delta("data.read")), (2, 0), "{after:?}");
        m.unmount().await;
    })
    .await
}
