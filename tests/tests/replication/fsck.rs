//! `renkei fsck` (issue 6, acceptance 4): a replica corrupted on disk and
//! one deleted from disk are found by verification on their server (no data
//! through the client), reads never return the bad bytes meanwhile, and
//! `--repair` restores both from the good replica.

use crate::common::{good_sites, replicas};
use fs_client::replicate::RepOptions;
use std::os::unix::fs::FileExt;
use tests::cluster::Cluster;
use tests::{pattern, with_timeout};

fn flip(path: &std::path::Path, offset: u64) {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], offset).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_missing_replicas_are_found_and_repaired() {
    with_timeout(120, async {
        let cluster = Cluster::builder().sites(2).start().await;
        let c = cluster.client("alice", "site1").await;
        c.mkdir("/data", false, 0o755).await.unwrap();
        let mut files = Vec::new();
        for i in 0..6 {
            let data = pattern(3_000_000 + i * 77_777, 40 + i as u64);
            let a = c.put_bytes(&data, &format!("/data/f{i}")).await.unwrap();
            files.push((format!("/data/f{i}"), a, data));
        }
        let opts = RepOptions { to: Some("site2".into()), ..Default::default() };
        let r = c.replicate(&["/data".into()], &opts, &|_| {}).await.unwrap();
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        let total: u64 = files.iter().map(|f| f.2.len() as u64).sum();

        // A clean check verifies all 12 replicas on their servers.
        let checker = cluster.client("alice", "site1").await;
        let clean = checker.check(&["/data".into()], false, 4, &|_| {}).await.unwrap();
        assert!(clean.clean(), "{clean:?}");
        assert_eq!((clean.verified, clean.good, clean.bytes_verified), (12, 12, 2 * total));
        let (rx, tx) = checker.data().dialer().traffic().await;
        assert!(rx + tx < total / 20, "the check moved {} bytes through the client", rx + tx);

        // Damage pop2's replicas: flip a byte in f2, delete f3.
        let pop2 = cluster.server_index("pop2");
        let (_, a2, d2) = &files[2];
        let (_, a3, _) = &files[3];
        let bad_path = cluster.replica_path(pop2, a2.ino, a2.gen);
        flip(&bad_path, 2_600_000);
        std::fs::remove_file(cluster.replica_path(pop2, a3.ino, a3.gen)).unwrap();

        let found = checker.check(&["/data".into()], false, 4, &|_| {}).await.unwrap();
        assert!(!found.clean());
        assert_eq!(
            found.corrupt.iter().map(|i| (i.path.as_str(), i.host.as_str())).collect::<Vec<_>>(),
            [("/data/f2", "pop2")]
        );
        assert_eq!(
            found.missing.iter().map(|i| (i.path.as_str(), i.host.as_str())).collect::<Vec<_>>(),
            [("/data/f3", "pop2")]
        );
        assert_eq!(found.good, 10);

        // Meanwhile a reader at site2 (which prefers pop2) gets good bytes:
        // the bad replicas are no longer handed out.
        let reader = cluster.client("bob", "site2").await;
        for _ in 0..3 {
            assert!(&reader.get_bytes("/data/f2").await.unwrap() == d2, "never the corrupt bytes");
            assert_eq!(reader.get_bytes("/data/f3").await.unwrap(), files[3].2);
        }
        let reps = replicas(&c, &[a2.ino, a3.ino]).await;
        for ino in [a2.ino, a3.ino] {
            assert_eq!(good_sites(reps[&ino].0, &reps[&ino].1), ["site1"], "only the good replica is alive");
        }

        // Repair: copies from pop1 over the bad ones, server to server.
        let repaired = checker.check(&["/data".into()], true, 4, &|_| {}).await.unwrap();
        assert_eq!(repaired.known_bad.len(), 2, "{repaired:?}");
        let rep = repaired.repair.as_ref().expect("a repair ran");
        assert_eq!(rep.copied_files, 2, "{rep:?}");
        assert!(rep.failed.is_empty(), "{rep:?}");
        assert!(repaired.clean(), "{repaired:?}");
        let again = checker.check(&["/data".into()], false, 4, &|_| {}).await.unwrap();
        assert!(again.clean(), "{again:?}");
        assert_eq!(again.good, 12);
        // Repaired in place: the same host holds good bytes again.
        assert!(&fs_server::replica::read_all(&bad_path).unwrap() == d2);
        let reps = replicas(&c, &[a2.ino, a3.ino]).await;
        for ino in [a2.ino, a3.ino] {
            assert_eq!(good_sites(reps[&ino].0, &reps[&ino].1), ["site1", "site2"]);
            assert_eq!(reps[&ino].1.len(), 2);
        }
        cluster.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_whose_only_replica_is_bad_cannot_be_repaired_and_says_so() {
    with_timeout(60, async {
        let cluster = Cluster::builder().sites(2).start().await;
        let c = cluster.client("alice", "site1").await;
        let data = pattern(300_000, 9);
        let a = c.put_bytes(&data, "/alone").await.unwrap();
        flip(&cluster.replica_path(0, a.ino, a.gen), 10);
        let r = c.check(&["/alone".into()], true, 2, &|_| {}).await.unwrap();
        assert_eq!(r.corrupt.len(), 1);
        let rep = r.repair.as_ref().unwrap();
        assert_eq!(rep.copied_files, 0);
        assert!(rep.skipped.iter().any(|s| s.reason.contains("no live good replica")), "{rep:?}");
        assert!(!r.clean());
        assert!(c.get_bytes("/alone").await.is_err(), "a bad replica is never served");
        cluster.shutdown().await;
    })
    .await
}
