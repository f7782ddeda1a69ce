//! Faults under a mount, with real processes (issue 13, acceptance 5): the
//! file server a mount reads from killed in the middle of a file (the read
//! goes on from another replica), the mount killed in a large write never
//! fsynced, the meta server killed with a directory lease granted and in
//! the middle of a listing stream. Each kill is decided by an event (bytes
//! read or written, a crash point), never by a timer.

use crate::common::{blocking, enabled, ChildMount, TestMount};
use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::Duration;
use tests::procs::ProcFederation;
use tests::{pattern, with_timeout};

/// Bytes of the file the mount reads; more than a read stream can hold
/// unread (24 MiB of flow-control credit), so the stream in use when its
/// server dies is unfinished.
const BIG: usize = 96 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_goes_on_from_another_replica_when_its_server_dies() {
    if !enabled("a_read_goes_on_from_another_replica_when_its_server_dies") {
        return;
    }
    with_timeout(180, async {
        let fed = ProcFederation::up(2).await;
        let c = fed.client(None).await;
        let data = pattern(BIG, 5);
        c.put_bytes(&data, "/big").await.unwrap();
        fed.renkei_ok(None, &["rep", "-D", "site2", "/big"]);
        let (_, reps) = c.where_is("/big").await.unwrap();
        assert_eq!(reps.len(), 2, "a replica on each site: {reps:?}");
        // A mount at site1 reads from pop1, the nearer.
        let m = TestMount::new(&fed, None, "/", "").await;
        let (at_tx, at_rx) = mpsc::channel::<()>();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let reader = tokio::spawn(blocking({
            let p = m.join("big");
            move || -> std::io::Result<Vec<u8>> {
                let mut f = std::fs::File::open(p)?;
                let mut out = vec![0u8; BIG];
                // Into the long stream that starts at 32 MiB.
                let first = 40 << 20;
                f.read_exact(&mut out[..first])?;
                let _ = at_tx.send(());
                let _ = go_rx.recv();
                f.read_exact(&mut out[first..])?;
                Ok(out)
            }
        }));
        blocking(move || at_rx.recv()).await.expect("the reader read its first part");
        let before = m.counters.snapshot();
        fed.kill("pop1");
        go_tx.send(()).unwrap();
        let t = std::time::Instant::now();
        let got = reader.await.unwrap().expect("the read goes on after its file server died");
        let after = m.counters.snapshot();
        eprintln!("read finished {:?} after pop1 died; counters before {before:?} after {after:?}", t.elapsed());
        assert!(got == data, "the file read across the failover differs");
        let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
        assert!(delta("data.read") > 0, "the rest was read through new streams");
        // The dead server's silence is noticed by the reader, not by the
        // connection's idle timeout.
        assert!(delta("data.read_stalled") >= 1, "the stall was noticed: {after:?}");
        let idle = Duration::from_millis(fs_proto::endpoint::Tuning::default().idle_timeout_ms);
        assert!(t.elapsed() < idle, "the read waited {:?}, the idle timeout is {idle:?}", t.elapsed());
        m.unmount().await;
        fed.restart().await;
        fed.assert_fsck_clean();
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mount_killed_in_a_large_unsynced_write_leaves_no_orphans() {
    if !enabled("a_mount_killed_in_a_large_unsynced_write_leaves_no_orphans") {
        return;
    }
    with_timeout(180, async {
        let fed = ProcFederation::up(1).await;
        let dir = tempfile::tempdir().unwrap();
        let mut cm = blocking({
            let (cfg, d) = (fed.state.client_config.clone(), dir.path().to_path_buf());
            move || ChildMount::start(&cfg, &d)
        })
        .await;
        let keep = pattern(3 << 20, 1);
        let big = pattern(64 << 20, 2);
        let (tx, rx) = mpsc::channel::<()>();
        let writer = tokio::spawn(blocking({
            let (mp, keep, big) = (cm.path.clone(), keep.clone(), big.clone());
            move || -> u64 {
                let mut k = std::fs::File::create(mp.join("keep")).unwrap();
                k.write_all(&keep).unwrap();
                k.sync_all().unwrap();
                drop(k);
                let mut f = std::fs::File::create(mp.join("big")).unwrap();
                let mut written = 0u64;
                for (i, block) in big.chunks(1 << 20).enumerate() {
                    if f.write_all(block).is_err() {
                        break;
                    }
                    written += block.len() as u64;
                    if i == 24 {
                        // 25 MiB written, none of it fsynced: kill now.
                        let _ = tx.send(());
                    }
                }
                written
            }
        }));
        blocking(move || rx.recv()).await.expect("the writer wrote its first 25 MiB");
        cm.kill9();
        let written = writer.await.unwrap();
        eprintln!("the mount died with {written} bytes written to /big, never fsynced");
        assert!(written < big.len() as u64, "the writer was cut by the kill");
        let spill: Vec<_> = std::fs::read_dir(dir.path().join("spill")).unwrap().collect();
        assert!(spill.is_empty(), "the killed mount's spill files survive it: {spill:?}");
        let c = fed.client(None).await;
        assert!(c.get_bytes("/keep").await.unwrap() == keep, "the fsynced file is whole");
        match c.get_bytes("/big").await {
            // Whatever the mount committed before it died is a prefix of
            // what was written, never torn.
            Ok(got) => assert!(got.len() <= big.len() && got == big[..got.len()], "/big is torn ({} bytes)", got.len()),
            Err(e) => assert_eq!(e.errno(), libc::ENOENT, "/big: {e}"),
        }
        fed.assert_fsck_clean();
        fed.assert_no_orphans_after_restart("pop1").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_meta_server_killed_granting_a_directory_lease_loses_no_fsynced_file() {
    if !enabled("a_meta_server_killed_granting_a_directory_lease_loses_no_fsynced_file") {
        return;
    }
    with_timeout(180, async {
        let fed = ProcFederation::up(1).await;
        let m = TestMount::new(&fed, None, "/", "").await;
        fed.kill("meta");
        fed.restart_with(&[("RENKEI_CRASH_AT", "meta.lease_dir.flushed")]).await;
        let files: Vec<(String, Vec<u8>)> =
            (0..30).map(|i| (format!("f{i:02}"), pattern(1 + i * 3001, i as u64))).collect();
        let writer = tokio::spawn(blocking({
            let (d, files) = (m.join("new"), files.clone());
            move || -> std::io::Result<()> {
                std::fs::create_dir(&d)?;
                for (name, data) in &files {
                    std::fs::write(d.join(name), data)?;
                }
                std::fs::File::open(&d)?.sync_all()
            }
        }));
        fed.wait_dead("meta", Duration::from_secs(30)).await;
        assert!(fed.log("meta").contains("crash point meta.lease_dir.flushed reached"), "died granting a lease");
        fed.restart().await;
        writer.await.unwrap().expect("the copy and its fsync ride out the meta server's restart");
        m.unmount().await;
        let c = fed.client(None).await;
        for (name, data) in &files {
            let p = format!("/new/{name}");
            assert!(c.get_bytes(&p).await.unwrap_or_else(|e| panic!("{p} fsynced and lost: {e}")) == *data, "{p}");
        }
        fed.assert_fsck_clean();
        fed.assert_no_orphans_after_restart("pop1").await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_listing_cut_by_the_meta_servers_death_is_never_taken_for_whole() {
    if !enabled("a_listing_cut_by_the_meta_servers_death_is_never_taken_for_whole") {
        return;
    }
    with_timeout(180, async {
        const N: usize = 2_500;
        let fed = ProcFederation::up(1).await;
        // More entries than a listing page (1,000), put in bundles.
        let local = tempfile::tempdir().unwrap();
        let mut want: Vec<String> = (0..N).map(|i| format!("e{i:05}")).collect();
        for name in &want {
            std::fs::write(local.path().join(name), b"").unwrap();
        }
        want.sort();
        fed.renkei_ok(None, &["put", "-r", local.path().to_str().unwrap(), "/many"]);
        let m = TestMount::new(&fed, None, "/", "").await;
        fed.kill("meta");
        fed.restart_with(&[("RENKEI_CRASH_AT", "meta.listdir.page")]).await;
        let list = |p: std::path::PathBuf| {
            blocking(move || -> std::io::Result<Vec<String>> {
                let mut names = std::fs::read_dir(p)?
                    .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect::<std::io::Result<Vec<_>>>()?;
                names.sort();
                Ok(names)
            })
        };
        let first = tokio::spawn(list(m.join("many")));
        fed.wait_dead("meta", Duration::from_secs(30)).await;
        assert!(fed.log("meta").contains("crash point meta.listdir.page reached"), "died in the listing stream");
        fed.restart().await;
        match first.await.unwrap() {
            Ok(names) => {
                assert!(names == want, "a listing cut after its first page was answered with {} names", names.len())
            }
            Err(e) => eprintln!("the cut listing failed: {e}"),
        }
        // The mount lists it whole now (nothing partial was cached).
        let again = list(m.join("many")).await.expect("list after the restart");
        assert!(again == want, "listed {} of {N} names after the restart", again.len());
        m.unmount().await;
    })
    .await
}
