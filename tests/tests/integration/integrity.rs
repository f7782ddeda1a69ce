//! A flipped byte in a replica on disk is detected on read, never returned
//! (issue 2, acceptance 7): with one replica the read fails clearly, with a
//! second good replica the read is served from it.

use tests::cluster::Cluster;
use tests::{pattern, with_timeout};

fn flip(path: &std::path::Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    f.write_all_at(&[b[0] ^ 0x01], offset).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_is_never_served() {
    with_timeout(60, async {
        let cluster = Cluster::builder().sites(2).start().await;
        let c = cluster.client("alice", "site1").await;
        let data = pattern(3 << 20, 7);
        let attr = c.put_bytes(&data, "/data").await.unwrap();
        let first = cluster.replica_path(0, attr.ino, attr.gen);
        assert!(first.exists());

        // A second replica at site2: copy the file and register it, as
        // replication would.
        let second = cluster.replica_path(1, attr.ino, attr.gen);
        std::fs::copy(&first, &second).unwrap();
        cluster.meta_service().ns.register_replica(attr.ino, attr.gen, "pop2", attr.size, attr.hash.unwrap()).unwrap();

        flip(&first, 2 * 1024 * 1024 + 5);
        // The client at site1 prefers pop1; the bad chunk is refused there
        // and the read is served from pop2.
        assert!(c.get_bytes("/data").await.unwrap() == data, "served from the good replica");
        // pop1 reports its replica bad to the meta server after refusing the
        // chunk (not before answering): wait for the report to be recorded.
        let t = std::time::Instant::now();
        loop {
            let (_, reps) = c.where_is("/data").await.unwrap();
            let bad = reps.iter().find(|r| r.server.host == "pop1").expect("pop1 replica listed");
            if !bad.alive {
                break;
            }
            assert!(t.elapsed() < std::time::Duration::from_secs(10), "the corrupt replica is marked bad");
            tokio::task::yield_now().await;
        }
        let grant = c.meta().open_read(attr.ino).await.unwrap();
        assert_eq!(grant.replicas.iter().map(|r| r.host.as_str()).collect::<Vec<_>>(), vec!["pop2"]);

        // Corrupt the only good replica too: the read fails clearly.
        flip(&second, 10);
        let err = c.get_bytes("/data").await.expect_err("no good replica left");
        let msg = err.to_string();
        assert_eq!(err.errno(), libc::EIO, "{msg}");
        assert!(
            msg.contains("corrupt") || msg.contains("hash") || msg.contains("no good replica"),
            "unclear error: {msg}"
        );
        cluster.shutdown().await;
    })
    .await
}
