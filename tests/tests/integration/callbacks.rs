//! Acknowledged callbacks: a change is answered only once every session
//! leasing what it changed acknowledged the invalidation; a session that
//! never does holds the change up for at most the bound and is dropped.

use fs_client::Client;
use fs_proto::callback::{CallbackFrame, ACK_BOUND_MS};
use fs_proto::rpc::PeerAddr;
use std::time::{Duration, Instant};
use tests::cluster::Cluster;
use tests::with_timeout;

type Calls = tokio::sync::mpsc::UnboundedReceiver<CallbackFrame>;

/// A subscription on `c`'s connection that acknowledges each batch after
/// `delay` (never, if None).
async fn subscriber(cluster: &Cluster, c: &Client, delay: Option<Duration>) -> Calls {
    let peer = PeerAddr { addr: cluster.meta_addr(), name: "meta".into() };
    let conn = c.data().dialer().connect(&peer).await.expect("connect");
    tests::raw::subscribe(&conn, delay).await
}

/// The invalidation batches of a subscription (other frames skipped); None
/// once its stream ended.
async fn next_batch(calls: &mut Calls) -> Option<()> {
    loop {
        match calls.recv().await? {
            CallbackFrame::Invalidate { .. } => return Some(()),
            _ => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_answered_once_the_holder_acknowledged() {
    with_timeout(60, async {
        let cluster = Cluster::builder().sites(1).start().await;
        let (a, b) = (cluster.client("alice", "site1").await, cluster.client("alice", "site1").await);
        b.put_bytes(b"one", "/f").await.expect("put");
        let delay = Duration::from_millis(400);
        let mut calls = subscriber(&cluster, &a, Some(delay)).await;
        a.stat("/f").await.expect("stat at a: a lease on /f");
        let t = Instant::now();
        b.put_bytes(b"two", "/f").await.expect("put at b");
        let took = t.elapsed();
        let mut told = false;
        while let Ok(frame) = calls.try_recv() {
            told |= matches!(frame, CallbackFrame::Invalidate { .. });
        }
        assert!(told, "a was told before b's write was answered");
        assert!(took >= delay, "b's write was answered before a acknowledged ({took:?})");
        assert!(took < delay + Duration::from_secs(3), "{took:?}");
        cluster.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_never_acknowledges_is_dropped_after_the_bound() {
    with_timeout(60, async {
        let cluster = Cluster::builder().sites(1).start().await;
        let (a, b) = (cluster.client("alice", "site1").await, cluster.client("alice", "site1").await);
        b.put_bytes(b"one", "/f").await.expect("put");
        let mut calls = subscriber(&cluster, &a, None).await;
        a.stat("/f").await.expect("stat at a: a lease on /f");
        let t = Instant::now();
        b.put_bytes(b"two", "/f").await.expect("put at b");
        let took = t.elapsed();
        let bound = Duration::from_millis(ACK_BOUND_MS);
        assert!(took >= bound && took < bound + Duration::from_secs(3), "held for the bound, not more: {took:?}");
        assert!(next_batch(&mut calls).await.is_some(), "a was told");
        let ended = tokio::time::timeout(Duration::from_secs(5), next_batch(&mut calls)).await;
        assert!(matches!(ended, Ok(None)), "the silent session's stream was ended: {ended:?}");
        // With a gone, the next change waits for nobody.
        let t = Instant::now();
        b.put_bytes(b"three", "/f").await.expect("put at b");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        cluster.shutdown().await;
    })
    .await
}
