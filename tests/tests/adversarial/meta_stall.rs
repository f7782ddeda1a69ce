//! Findings 3 and 4: one client stalling the meta server for everyone.
//!
//! 3. A listing used to hold the directory-lease gate while its pages were
//!    written to the peer; a peer that offers a tiny receive window and never
//!    reads kept the gate, the next `LeaseDir` queued for its write side, and
//!    every request behind that (heartbeats included) stalled.
//! 4. A `Batch` had no length bound: a few KiB of zstd decode to millions of
//!    requests, served in one go under the meta server's write ordering.

use fs_proto::endpoint::Tuning;
use fs_proto::frame::{encode, write_msg};
use fs_proto::meta::{MetaCall, MetaRequest, MetaResponse, MAX_BATCH};
use fs_proto::{FileKind, Ino, Role};
use std::time::{Duration, Instant};
use tests::cluster::{issue, Cluster};
use tests::raw::connect_with;
use tests::with_timeout;

/// What "still serving within its normal bounds" means here: a loopback
/// request normally takes about a millisecond; the stalls these attacks
/// caused were unbounded.
const SERVING_BOUND: Duration = Duration::from_secs(5);

/// `n` empty files in `dir`, created by `c` in batches.
async fn fill(c: &fs_client::Client, dir: Ino, n: usize) {
    for start in (0..n).step_by(1000) {
        let reqs = (start..(start + 1000).min(n))
            .map(|i| MetaRequest::Create {
                parent: dir,
                name: format!("entry-{i:05}"),
                kind: FileKind::Regular,
                perm: 0o644,
                rdev: 0,
                exclusive: true,
            })
            .collect();
        match c.meta().call(MetaRequest::Batch(reqs)).await.expect("batch of creates") {
            MetaResponse::Batch(r) => assert!(r.iter().all(|r| r.is_ok()), "a create failed"),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// alice takes a directory lease (the request that needs the gate's write
/// side) and stats a file, each within [`SERVING_BOUND`].
async fn alice_is_served(alice: &fs_client::Client, dir: Ino, what: &str) {
    let started = Instant::now();
    let req = fs_proto::bundle::LeaseRequest {
        dir: Some(dir),
        inos: 4,
        site: "site1".into(),
        held: Vec::new(),
        also: Vec::new(),
    };
    let lease = tokio::time::timeout(SERVING_BOUND, alice.meta().call(MetaRequest::LeaseDir(req)))
        .await
        .unwrap_or_else(|_| panic!("{what}: alice's directory lease waited more than {SERVING_BOUND:?}"));
    assert!(matches!(lease, Ok(MetaResponse::Lease(_))), "{what}: {lease:?}");
    tokio::time::timeout(SERVING_BOUND, alice.stat("/alice"))
        .await
        .unwrap_or_else(|_| panic!("{what}: alice's stat waited more than {SERVING_BOUND:?}"))
        .expect("stat");
    tracing::info!(what, elapsed_ms = started.elapsed().as_millis() as u64, "alice served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_nobody_reads_does_not_stall_the_meta_server() {
    with_timeout(120, async {
        let cluster = Cluster::builder().sites(1).start().await;
        let alice = cluster.client("alice", "site1").await;
        let bob = cluster.client("bob", "site1").await;
        let alice_dir = alice.mkdir("/alice", false, 0o755).await.unwrap().ino;
        let big = bob.mkdir("/bob", false, 0o755).await.unwrap().ino;
        fill(&bob, big, 3000).await;

        // bob, by hand: a connection whose streams take 1 KiB at a time,
        // several listings of his big directory, never read past the first
        // bytes.
        let tiny = Tuning { stream_window: 1024, connection_window: 64 << 10, ..Tuning::default() };
        let tls = issue(cluster.ca(), "bob", Role::User, None);
        let conn = connect_with(cluster.meta_addr(), "meta", &tls, &tiny).await.expect("connect");
        let mut stuck = Vec::new();
        for _ in 0..8 {
            let (mut send, mut recv) = conn.open_bi().await.expect("stream");
            let call = MetaCall { cred: None, req: MetaRequest::ListDir { ino: big, plus: true } };
            write_msg(&mut send, &call).await.expect("request");
            let _ = send.finish();
            // The first page's length prefix has arrived: the meta server is
            // writing a page larger than the window it was offered, and the
            // rest of it waits for bob.
            let mut prefix = [0u8; 4];
            recv.read_exact(&mut prefix).await.expect("first page begins");
            let len = (u32::from_be_bytes(prefix) & !fs_proto::frame::COMPRESSED) as usize;
            assert!(len > 4 * 1024, "page of {len} bytes would fit the window: the attack tests nothing");
            stuck.push((send, recv));
        }

        // Everyone else is served meanwhile: leases, attributes, heartbeats.
        alice_is_served(&alice, alice_dir, "listings stuck").await;
        cluster.wait_alive(1, SERVING_BOUND).await;
        // And bob's own listing, read properly, is whole.
        let all = bob.meta().readdir_all(big, true).await.expect("bob's own listing");
        assert_eq!(all.len(), 3000);
        drop(stuck);
        cluster.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_bound_is_refused_and_a_full_one_stalls_nobody() {
    with_timeout(120, async {
        let cluster = Cluster::builder().sites(1).start().await;
        let alice = cluster.client("alice", "site1").await;
        let bob = cluster.client("bob", "site1").await;
        let alice_dir = alice.mkdir("/alice", false, 0o755).await.unwrap().ino;
        bob.put_bytes(b"bob's data", "/bobs").await.unwrap();
        let bobs = bob.stat("/bobs").await.unwrap().ino;

        // A million requests in a frame of a few KiB.
        let tls = issue(cluster.ca(), "bob", Role::User, None);
        let conn = connect_with(cluster.meta_addr(), "meta", &tls, &Tuning::default()).await.expect("connect");
        let bomb = MetaCall { cred: None, req: MetaRequest::Batch(vec![MetaRequest::ListHosts; 1_000_000]) };
        let frame = encode(&bomb);
        assert!(frame.len() < 64 << 10, "the bomb is small on the wire: {} bytes", frame.len());
        let reply = tests::raw::send_raw(&conn, &frame).await;
        let why = match reply {
            Err(e) => e,
            Ok(bytes) => panic!("the meta server answered a million-request batch ({} bytes)", bytes.len()),
        };
        assert!(why.contains(&format!("at most {MAX_BATCH}")), "the refusal says why: {why}");

        // A full batch of read grants (each one signed) is served, and
        // alice is served while it runs.
        let full = MetaRequest::Batch(vec![MetaRequest::OpenRead { ino: bobs }; MAX_BATCH]);
        let bob_meta = bob.meta().clone();
        let big = tokio::spawn(async move { bob_meta.call(full).await });
        for round in 0..5 {
            alice_is_served(&alice, alice_dir, &format!("beside a full batch, round {round}")).await;
        }
        match big.await.unwrap().expect("full batch") {
            MetaResponse::Batch(r) => {
                assert_eq!(r.len(), MAX_BATCH);
                assert!(r.iter().all(|r| matches!(r, Ok(MetaResponse::Read(_)))), "every grant given");
            }
            other => panic!("unexpected {other:?}"),
        }
        // One over the bound, from a well-behaved client: a clear error.
        let over = MetaRequest::Batch(vec![MetaRequest::GetAttr { ino: bobs }; MAX_BATCH + 1]);
        let e = bob.meta().call(over).await.expect_err("over the bound");
        assert!(e.to_string().contains(&format!("at most {MAX_BATCH}")), "{e}");
        // bob's own work still goes on.
        assert_eq!(bob.get_bytes("/bobs").await.unwrap(), b"bob's data");
        cluster.shutdown().await;
    })
    .await
}
