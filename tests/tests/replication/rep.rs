//! `renkei rep` between sites (issue 6, acceptance 1 and the `-N 3` half of
//! acceptance 2): bytes go server to server, never through the client.

use crate::common::{good_sites, host_bytes, replicas, size_of, write_tree};
use fs_client::replicate::RepOptions;
use fs_client::Client;
use std::time::Duration;
use tests::cluster::Cluster;
use tests::with_timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_files_go_server_to_server_and_where_shows_both_sites() {
    with_timeout(300, async {
        let cluster = Cluster::builder().sites(2).start().await;
        let writer = cluster.client("alice", "site1").await;
        let files = write_tree(&writer, "/tree", 1000, size_of).await;
        let total: u64 = files.iter().map(|f| f.data.len() as u64).sum();
        let nonempty = files.iter().filter(|f| !f.data.is_empty()).count() as u64;
        let inos: Vec<u64> = files.iter().map(|f| f.ino).collect();
        let before = replicas(&writer, &inos).await;
        for f in files.iter().filter(|f| !f.data.is_empty()) {
            let (gen, reps) = &before[&f.ino];
            assert_eq!(good_sites(*gen, reps), ["site1"], "written at site1 only");
        }

        // A fresh client (at site1) does the replication, so everything it
        // moved is counted on its own connections.
        let rep = cluster.client("alice", "site1").await;
        let dry = rep
            .replicate(
                &["/tree".into()],
                &RepOptions { to: Some("site2".into()), dry_run: true, ..Default::default() },
                &|_| {},
            )
            .await
            .unwrap();
        assert_eq!(dry.planned.len() as u64, nonempty, "dry run plans every non-empty file");
        assert!(dry.planned.iter().all(|p| p.to == "pop2" && p.from == ["pop1"]));
        assert_eq!(dry.copied_files, 0);
        let after_dry = replicas(&writer, &inos).await;
        assert!(after_dry.values().all(|(_, r)| r.len() <= 1), "a dry run copies nothing");

        // Counters travel with heartbeats: start from one that has seen
        // every byte the tree's writes brought to pop1.
        cluster
            .wait_until(Duration::from_secs(10), "pop1's heartbeat counts the writes", || async {
                let (pop1_in, _) = host_bytes(&writer, "pop1").await;
                if pop1_in >= total {
                    Ok(())
                } else {
                    Err(format!("pop1 reported {pop1_in} of {total} bytes written"))
                }
            })
            .await;
        let (pop1_in0, pop1_out0) = host_bytes(&writer, "pop1").await;
        let (pop2_in0, _) = host_bytes(&writer, "pop2").await;
        let opts = RepOptions { to: Some("site2".into()), parallel: 4, ..Default::default() };
        let report = rep.replicate(&["/tree".into()], &opts, &|_| {}).await.unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        assert_eq!(report.files, 1000);
        assert_eq!(report.copied_files, nonempty);
        assert_eq!(report.copied_bytes, total, "every byte moved once, server to server");
        assert_eq!(report.skipped.len() as u64, 1000 - nonempty, "empty files have nothing to copy");
        // Many files per stream: far fewer orders than files.
        assert!(report.orders <= 12, "{} copy orders for {nonempty} files", report.orders);
        assert_eq!(rep.counters().get("data.replicate"), report.orders);

        // Protocol facts about where the bytes went.
        let c = rep.counters();
        assert_eq!((c.get("data.bytes_in"), c.get("data.bytes_out")), (0, 0), "no file bytes through the data plane");
        let (rx, tx) = rep.data().dialer().traffic().await;
        assert!(rx + tx < total / 50, "client moved {} bytes for {total} bytes replicated", rx + tx);
        let (pop1_out, pop2_in) = cluster
            .wait_until(Duration::from_secs(10), "heartbeat counters", || async {
                let (_, pop1_out) = host_bytes(&writer, "pop1").await;
                let (pop2_in, _) = host_bytes(&writer, "pop2").await;
                if pop2_in - pop2_in0 >= total && pop1_out - pop1_out0 >= total {
                    Ok((pop1_out - pop1_out0, pop2_in - pop2_in0))
                } else {
                    Err(format!("pop1 sent {}, pop2 received {}", pop1_out - pop1_out0, pop2_in - pop2_in0))
                }
            })
            .await;
        assert!(pop2_in < total + total / 10 && pop1_out < total + total / 10, "{pop2_in} / {pop1_out} for {total}");
        let (pop1_in, _) = host_bytes(&writer, "pop1").await;
        assert!(pop1_in - pop1_in0 < total / 50, "the source received no file bytes");

        // `where`: both sites for every file with contents.
        let after = replicas(&writer, &inos).await;
        for f in &files {
            let (gen, reps) = &after[&f.ino];
            if f.data.is_empty() {
                assert!(good_sites(*gen, reps).len() <= 1, "nothing to copy for an empty file");
            } else {
                assert_eq!(good_sites(*gen, reps), ["site1", "site2"], "{}", f.path);
            }
        }
        // A client at site2 reads from its own site now, verified.
        let reader = cluster.client("alice", "site2").await;
        for f in files.iter().step_by(97) {
            assert!(reader.get_bytes(&f.path).await.unwrap() == f.data, "{}", f.path);
        }

        // Running it again finds nothing to do.
        let again = rep.replicate(&["/tree".into()], &opts, &|_| {}).await.unwrap();
        assert_eq!((again.copied_files, again.orders, again.satisfied), (0, 0, nonempty));
        cluster.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_copies_land_on_three_distinct_sites() {
    with_timeout(120, async {
        let cluster = Cluster::builder().sites(3).servers_per_site(2).start().await;
        let c = cluster.client("alice", "site1").await;
        let files = write_tree(&c, "/three", 30, |i| 1 + i * 3001).await;
        let inos: Vec<u64> = files.iter().map(|f| f.ino).collect();
        let opts = RepOptions { copies: Some(3), ..Default::default() };
        let report = c.replicate(&["/three".into()], &opts, &|_| {}).await.unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        assert_eq!(report.copied_files, 60, "two new copies per file");
        let reps = replicas(&c, &inos).await;
        for f in &files {
            let (gen, r) = &reps[&f.ino];
            assert_eq!(good_sites(*gen, r), ["site1", "site2", "site3"], "{}", f.path);
        }
        // With -N 3 satisfied, asking for 3 again does nothing; asking for
        // 4 must use a second host at some site.
        let again = c.replicate(&["/three".into()], &opts, &|_| {}).await.unwrap();
        assert_eq!(again.copied_files, 0);
        let four = c
            .replicate(&["/three/d0".into()], &RepOptions { copies: Some(4), ..Default::default() }, &|_| {})
            .await
            .unwrap();
        assert!(four.failed.is_empty() && four.copied_files > 0);
        // -S: only from site3; -D: a single host.
        let to_host = c
            .replicate(
                &["/three/d1".into()],
                &RepOptions { to: Some("pop2-2".into()), from: Some("site3".into()), ..Default::default() },
                &|_| {},
            )
            .await
            .unwrap();
        assert!(to_host.failed.is_empty(), "{:?}", to_host.failed);
        let reps = replicas(&c, &inos).await;
        for f in files.iter().filter(|f| f.path.starts_with("/three/d1/")) {
            let (gen, r) = &reps[&f.ino];
            assert!(r.iter().any(|x| x.server.host == "pop2-2" && x.gen == *gen && x.alive), "{}", f.path);
        }
        // A name that is neither a host nor a site is refused clearly.
        let err = c
            .replicate(&["/three".into()], &RepOptions { to: Some("mars".into()), ..Default::default() }, &|_| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("mars"), "{err}");
        cluster.shutdown().await;
    })
    .await
}

/// A client that may not read a file cannot have it replicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_needs_read_permission() {
    with_timeout(60, async {
        let cluster = Cluster::builder().sites(2).start().await;
        let alice = cluster.client("alice", "site1").await;
        alice.put_bytes(b"secret bytes", "/private").await.unwrap();
        alice.chmod("/private", 0o600).await.unwrap();
        let bob: Client = cluster.client("bob", "site1").await;
        let r = bob
            .replicate(&["/private".into()], &RepOptions { to: Some("site2".into()), ..Default::default() }, &|_| {})
            .await
            .unwrap();
        assert_eq!(r.copied_files, 0);
        assert_eq!(r.failed.len(), 1);
        assert!(r.failed[0].reason.contains("permission"), "{:?}", r.failed);
        cluster.shutdown().await;
    })
    .await
}
