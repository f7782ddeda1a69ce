//! Small-file bundling through the mount (issue 5, acceptance 5): a burst of
//! small files costs O(bundles) requests and shows complete at another site
//! once closed; kill -9 of the writing mount loses nothing fsync
//! acknowledged and tears nothing; two mounts creating the same names: one
//! wins each, the other gets EEXIST; a full file server is ENOSPC at close,
//! not lost data.

use crate::common::{blocking, enabled, ChildMount, TestMount};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tests::procs::ProcFederation;
use tests::{pattern, with_timeout};

fn content(i: usize, salt: u64) -> Vec<u8> {
    pattern(100 + (i * 7919) % 20_000, i as u64 * 31 + salt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_costs_o_bundles_and_shows_complete_at_another_site() {
    if !enabled("a_burst_costs_o_bundles_and_shows_complete_at_another_site") {
        return;
    }
    with_timeout(300, async {
        let fed = ProcFederation::up(2).await;
        let a = TestMount::new(&fed, Some("site2"), "/", "").await;
        let b = TestMount::new(&fed, Some("site1"), "/", "").await;
        // The burst is written by a child process (`cp -r`), not by this
        // one: the mounts are served in this process, whose other tests
        // fork and exec meanwhile, and every fork copies the descriptors
        // open here; each copy closed (at exec) is a FUSE flush, a close(2)
        // as far as the mount can tell, which commits a file mid-write
        // (what made up to 3 files go alone in CI).
        let src = tempfile::tempdir().expect("tempdir");
        for i in 0..1000 {
            std::fs::write(src.path().join(format!("f{i:04}")), content(i, 1)).unwrap();
        }
        let before = a.counters.snapshot();
        crate::common::sh(&a.path, &format!("cp -r {} burst", src.path().display())).await;
        let after = a.counters.snapshot();
        let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
        let meta: u64 = after.keys().filter(|k| fs_client::counters::is_meta_request(k)).map(|k| delta(k)).sum();
        eprintln!("1000 creates: {meta} meta requests, {} bundles: {after:?}", delta("data.bundle"));
        // A constant handful (lookups, the two leases, the listing, the
        // mkdir), however many bundles the burst took: the leased
        // directory's attributes are answered here (they were asked of the
        // meta server once per bundle, up to 29 requests under load).
        assert!(meta <= 10, "a burst in a leased directory sends O(1) requests to meta: {after:?}");
        assert_eq!(delta("create"), 0, "no create goes to the meta server: {after:?}");
        // Every file travels in a bundle with its bytes: none was committed
        // while still open (its bytes would follow in a write session of
        // their own). The mount counts each such early commit by its cause
        // (`data.alone.*`, see fs_client::mount::bundler::why): a lease
        // recalled, a listing or request reaching the meta server, ...
        let alone: Vec<(&str, u64)> =
            after.iter().filter(|(k, _)| k.starts_with("data.alone.")).map(|(k, _)| (*k, delta(k))).collect();
        assert!(alone.iter().all(|(_, n)| *n == 0), "files committed while open, by cause: {alone:?}: {after:?}");
        assert_eq!((delta("open_write"), delta("data.write")), (0, 0), "no write session: {after:?}");
        assert!(delta("data.bundle") <= 40, "bundles, not files: {after:?}");

        // The other site sees every file complete (its listing recalls A's lease).
        let bdir = b.join("burst");
        let t = Instant::now();
        let seen = blocking({
            let bdir = bdir.clone();
            move || {
                let mut names: Vec<String> =
                    std::fs::read_dir(&bdir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
                names.sort();
                for (i, n) in names.iter().enumerate() {
                    assert_eq!(n, &format!("f{i:04}"));
                    assert!(std::fs::read(bdir.join(n)).unwrap() == content(i, 1), "{n} differs at the other site");
                }
                names.len()
            }
        })
        .await;
        assert_eq!(seen, 1000);
        eprintln!("the other site listed and read the burst in {:?}", t.elapsed());
        let c = fed.client(Some("site1")).await;
        let (_, reps) = c.where_is("/burst/f0007").await.unwrap();
        assert_eq!(reps[0].server.site, "site2", "the burst went to the writer's own site");

        // A new large file in a leased directory travels in a bundle too
        // (B's listing took the lease on `burst` back: a new directory).
        let big = pattern(24 << 20, 5);
        let before = (a.counters.get("data.bundle"), a.counters.get("data.write"));
        // By a child process too (see the burst above).
        let big_src = src.path().join("big");
        std::fs::write(&big_src, &big).unwrap();
        crate::common::sh(&a.path, &format!("mkdir bigdir && cp {} bigdir/big", big_src.display())).await;
        assert_eq!(blocking(move || std::fs::read(bdir.join("../bigdir/big"))).await.unwrap(), big);
        // It travels once: in a bundle when the new directory's lease was
        // granted (the usual case), else in one write session of its own
        // (a lease may be refused while the recall above settles).
        let bundled = a.counters.get("data.bundle") > before.0;
        let sessions = a.counters.get("data.write") - before.1;
        eprintln!("the 24 MiB file went {}", if bundled { "in a bundle" } else { "in a write session" });
        assert!(
            (bundled && sessions == 0) || (!bundled && sessions == 1),
            "one way, once: bundled {bundled}, {sessions} write sessions"
        );

        // With bundling off, every file goes to the meta server.
        let n = TestMount::new(&fed, Some("site2"), "/", "nobundle").await;
        let before = n.counters.get("create");
        blocking({
            let d = n.join("plain");
            move || {
                std::fs::create_dir(&d).unwrap();
                for i in 0..20 {
                    std::fs::write(d.join(format!("p{i}")), b"x").unwrap();
                }
            }
        })
        .await;
        assert_eq!(n.counters.get("create") - before, 20);
        assert_eq!(n.counters.get("data.bundle"), 0);
        n.unmount().await;
        a.unmount().await;
        b.unmount().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_mounts_creating_the_same_names_one_wins_the_other_gets_eexist() {
    if !enabled("two_mounts_creating_the_same_names_one_wins_the_other_gets_eexist") {
        return;
    }
    with_timeout(300, async {
        let fed = ProcFederation::up(2).await;
        let a = TestMount::new(&fed, Some("site1"), "/", "").await;
        let b = TestMount::new(&fed, Some("site2"), "/", "").await;
        blocking({
            let d = a.join("race");
            move || std::fs::create_dir(d)
        })
        .await
        .unwrap();
        let names: Vec<String> = (0..60).map(|i| format!("n{i}")).collect();
        let run = |root: PathBuf, tag: &'static [u8], names: Vec<String>| {
            std::thread::spawn(move || {
                names
                    .iter()
                    .map(|n| {
                        let r =
                            std::fs::OpenOptions::new().write(true).create_new(true).open(root.join("race").join(n));
                        match r {
                            Ok(mut f) => {
                                f.write_all(tag).unwrap();
                                drop(f);
                                Ok(())
                            }
                            Err(e) => Err(e.raw_os_error()),
                        }
                    })
                    .collect::<Vec<_>>()
            })
        };
        let (ta, tb) = (run(a.path.clone(), b"from a", names.clone()), run(b.path.clone(), b"from b", names.clone()));
        let (ra, rb) = blocking(move || (ta.join().unwrap(), tb.join().unwrap())).await;
        // fsync of the directory at both mounts commits what each wrote
        // there (and waits for it): then every winner is visible.
        for m in [&a, &b] {
            let d = m.join("race");
            blocking(move || std::fs::File::open(d)?.sync_all()).await.expect("fsync of the directory");
        }
        let c = fed.client(None).await;
        for (i, n) in names.iter().enumerate() {
            let winner: &[u8] = match (&ra[i], &rb[i]) {
                (Ok(()), Err(Some(libc::EEXIST))) => b"from a",
                (Err(Some(libc::EEXIST)), Ok(())) => b"from b",
                other => panic!("{n}: exactly one create must succeed and the other get EEXIST: {other:?}"),
            };
            // Visible with the winner's contents.
            let got = c.get_bytes(&format!("/race/{n}")).await.unwrap_or_else(|e| panic!("{n}: {e}"));
            assert!(got == winner, "{n} holds {:?}, not the winner's {:?}", String::from_utf8_lossy(&got), winner);
        }
        let wins_a = ra.iter().filter(|r| r.is_ok()).count();
        eprintln!("a won {wins_a} of {}, b {}", names.len(), names.len() - wins_a);
        a.unmount().await;
        b.unmount().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_loses_nothing_fsync_acknowledged_and_tears_nothing() {
    if !enabled("kill_9_loses_nothing_fsync_acknowledged_and_tears_nothing") {
        return;
    }
    with_timeout(300, async {
        let fed = ProcFederation::up(1).await;
        let tmp = tempfile::tempdir().unwrap();
        for round in 0..3u64 {
            let mut m = blocking({
                let (dir, cfg) = (tmp.path().join(format!("m{round}")), fed.state.client_config.clone());
                move || ChildMount::start(&cfg, &dir)
            })
            .await;
            let root = m.path.clone();
            let durable = format!("durable{round}");
            let volatile = format!("volatile{round}");
            // Files fsynced one by one, then a stream of files never fsynced,
            // killed at a different moment each round.
            let synced = blocking({
                let d = root.join(&durable);
                move || {
                    std::fs::create_dir(&d).unwrap();
                    for i in 0..40 {
                        let mut f = std::fs::File::create(d.join(format!("s{i}"))).unwrap();
                        f.write_all(&content(i, round)).unwrap();
                        f.sync_all().unwrap();
                    }
                    40
                }
            })
            .await;
            // The kill falls after a different number of closed files each
            // round (an event the writer reports, not a timer).
            let kill_after = 20 + 150 * round as usize;
            let (at_tx, at_rx) = std::sync::mpsc::channel::<()>();
            let writer = std::thread::spawn({
                let d = root.join(&volatile);
                move || {
                    let _ = std::fs::create_dir(&d);
                    let mut closed = 0;
                    for i in 0..100_000 {
                        let r = std::fs::write(d.join(format!("v{i}")), content(i, round + 100));
                        if r.is_err() {
                            break;
                        }
                        closed += 1;
                        if closed == kill_after {
                            let _ = at_tx.send(());
                        }
                    }
                    closed
                }
            });
            blocking(move || at_rx.recv()).await.expect("the writer closed its files before the kill");
            blocking(move || m.kill9()).await;
            let closed = blocking(move || writer.join().unwrap()).await;
            eprintln!("round {round}: {synced} files fsynced, {closed} closed without fsync, then kill -9");
            assert!(closed >= kill_after, "the writer got going before the kill");

            let c = fed.client(None).await;
            for i in 0..synced {
                let got = c.get_bytes(&format!("/{durable}/s{i}")).await.expect("fsynced file present");
                assert!(got == content(i, round), "fsynced file {i} differs");
            }
            let listed = c.list(&format!("/{volatile}")).await.map(|l| l.len()).unwrap_or(0);
            let mut present = 0;
            for e in c.list(&format!("/{volatile}")).await.unwrap_or_default() {
                let i: usize = e.name[1..].parse().expect("only files the writer made");
                let got = c.get_bytes(&format!("/{volatile}/{}", e.name)).await.expect("listed file readable");
                assert!(got == content(i, round + 100), "{} is torn: {} bytes", e.name, got.len());
                present += 1;
            }
            eprintln!("round {round}: {present} of {listed} unsynced files survived, each complete");
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_file_server_is_enospc_at_close_not_lost_data() {
    if !enabled("a_full_file_server_is_enospc_at_close_not_lost_data") {
        return;
    }
    with_timeout(300, async {
        let fed = ProcFederation::up(1).await;
        // A 24 MiB spool: stop the server, put a tmpfs under it, start it.
        fed.kill("pop1");
        let spool = fed.dir().join("spool").join("pop1");
        let _ = std::fs::remove_dir_all(&spool);
        std::fs::create_dir_all(&spool).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"]).arg(&spool).output().unwrap();
        assert!(out.status.success(), "mount tmpfs: {}", String::from_utf8_lossy(&out.stderr));
        let _unmount = TmpfsGuard(spool.clone());
        fed.restart().await;
        let m = TestMount::new(&fed, None, "/", "").await;
        let dir = m.join("full");
        let results = blocking({
            let dir = dir.clone();
            move || {
                std::fs::create_dir(&dir).unwrap();
                let mut results = Vec::new();
                for i in 0..60 {
                    let err = write_and_close(&dir.join(format!("m{i}")), &pattern(1 << 20, i)).err();
                    results.push(err);
                    if err.is_some() {
                        break;
                    }
                }
                results
            }
        })
        .await;
        let ok = results.iter().filter(|r| r.is_none()).count();
        eprintln!("{ok} files of 1 MiB closed, then {:?}", results.last());
        assert_eq!(results.last(), Some(&Some(libc::ENOSPC)), "running out of space is ENOSPC at close: {results:?}");
        assert!(ok >= 5, "files fit before the spool filled up");
        m.unmount().await;
        let c = fed.client(None).await;
        for i in 0..ok {
            let got = c.get_bytes(&format!("/full/m{i}")).await.expect("a file whose close succeeded is there");
            assert!(got == pattern(1 << 20, i as u64), "m{i} differs");
        }
        drop(fed);
    })
    .await
}

/// Write a file and close it, reporting what close(2) says (which
/// `std::fs::write` ignores): the errno of the first failure.
fn write_and_close(p: &Path, data: &[u8]) -> Result<(), i32> {
    use std::os::fd::IntoRawFd;
    let mut f = std::fs::File::create(p).map_err(|e| e.raw_os_error().unwrap_or(-1))?;
    f.write_all(data).map_err(|e| e.raw_os_error().unwrap_or(-1))?;
    let fd = f.into_raw_fd();
    // SAFETY: closing the descriptor we own.
    if unsafe { libc::close(fd) } != 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1));
    }
    Ok(())
}

/// Unmounts a tmpfs when dropped (after the server using it stopped).
struct TmpfsGuard(PathBuf);

impl Drop for TmpfsGuard {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}
