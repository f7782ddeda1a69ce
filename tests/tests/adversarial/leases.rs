//! Finding 6: lease and callback griefing. Any user could take a directory
//! write lease on `/` (mode 1777) or on another user's shared directory; a
//! holder that ignored recalls held every other client up for the recall
//! timeout on each access and was granted the lease again at once; a
//! subscriber that never acknowledged invalidations cost every change the
//! acknowledgement bound and could subscribe again immediately.
//!
//! Now only an owner (or root) is granted a lease on a directory, and a
//! principal that held others up is barred from leases and subscriptions
//! for a while (doubling with each strike), so it costs others one wait,
//! not one per access.

use fs_client::Client;
use fs_proto::bundle::{LeaseGrant, LeaseRequest};
use fs_proto::callback::{CallbackFrame, ACK_BOUND_MS};
use fs_proto::frame::{read_msg, write_msg};
use fs_proto::meta::{MetaCall, MetaRequest, MetaResponse};
use fs_proto::rpc::PeerAddr;
use fs_proto::{Ino, ROOT_INO};
use std::time::{Duration, Instant};
use tests::cluster::Cluster;
use tests::with_timeout;

fn meta_peer(cluster: &Cluster) -> PeerAddr {
    PeerAddr { addr: cluster.meta_addr(), name: "meta".into() }
}

/// A callback subscription on `c`'s own connection to the meta server (so
/// `c`'s replies lease to it), acknowledging at once, or never.
async fn subscribe(cluster: &Cluster, c: &Client, ack: bool) -> tokio::sync::mpsc::UnboundedReceiver<CallbackFrame> {
    let conn = c.data().dialer().connect(&meta_peer(cluster)).await.expect("connect");
    tests::raw::subscribe(&conn, ack.then_some(Duration::ZERO)).await
}

async fn lease(c: &Client, dir: Ino) -> LeaseGrant {
    lease_also(c, dir, Vec::new()).await
}

/// A lease on `dir` asking for the directories `also` along with it.
async fn lease_also(c: &Client, dir: Ino, also: Vec<Ino>) -> LeaseGrant {
    let req = LeaseRequest { dir: Some(dir), inos: 0, site: c.config().site.clone(), held: Vec::new(), also };
    match c.meta().call(MetaRequest::LeaseDir(req)).await.expect("lease") {
        MetaResponse::Lease(g) => g,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_one_leases_the_root_or_another_users_directory() {
    with_timeout(60, async {
        let cluster = Cluster::builder().sites(1).start().await;
        let alice = cluster.client("alice", "site1").await;
        let bob = cluster.client("bob", "site1").await;
        let shared = alice.mkdir("/shared", false, 0o777).await.unwrap().ino;
        let own = bob.mkdir("/bob", false, 0o755).await.unwrap().ino;
        let _calls = subscribe(&cluster, &bob, true).await;

        assert!(lease(&bob, ROOT_INO).await.dir.is_none(), "bob may not hold / for himself");
        assert!(lease(&bob, shared).await.dir.is_none(), "nor alice's world-writable directory");
        assert_eq!(lease(&bob, own).await.dir.map(|a| a.ino), Some(own), "his own directory, yes");
        assert!(cluster.meta_service().dirleases.holder(ROOT_INO).is_none());
        assert!(cluster.meta_service().dirleases.holder(shared).is_none());

        // He still works in both, synchronously; alice is never recalled.
        bob.put_bytes(b"bob's", "/shared/b").await.unwrap();
        bob.put_bytes(b"bob's", "/top").await.unwrap();
        assert_eq!(alice.get_bytes("/shared/b").await.unwrap(), b"bob's");
        cluster.shutdown().await;
    })
    .await
}

/// The directories asked for along with a lease (`also`, for a tree walk)
/// obey the same rules, one by one: bob asking for alice's directories
/// beside his own gets his own (with its listing) and none of hers, and
/// no listing of her private directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_asked_along_with_a_lease_obey_the_same_rules() {
    with_timeout(60, async {
        let cluster = Cluster::builder().sites(1).start().await;
        let alice = cluster.client("alice", "site1").await;
        let bob = cluster.client("bob", "site1").await;
        let shared = alice.mkdir("/shared", false, 0o777).await.unwrap().ino;
        let private = alice.mkdir("/private", false, 0o700).await.unwrap().ino;
        alice.put_bytes(b"secret", "/private/s").await.unwrap();
        let own = bob.mkdir("/bob", false, 0o755).await.unwrap().ino;
        let sub = bob.mkdir("/bob/sub", false, 0o755).await.unwrap().ino;
        bob.put_bytes(b"x", "/bob/sub/x").await.unwrap();
        let _calls = subscribe(&cluster, &bob, true).await;

        let g = lease_also(&bob, own, vec![shared, private, ROOT_INO, sub, sub]).await;
        assert_eq!(g.dir.map(|a| a.ino), Some(own));
        let granted: Vec<Ino> = g.also.iter().map(|a| a.attr.ino).collect();
        assert_eq!(granted, vec![sub], "only bob's own directory, once");
        let names: Vec<&str> = g.also[0].entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["x"], "with its listing");
        assert!(g.also[0].entries[0].attr.is_some(), "and its entries' attributes");
        let svc = cluster.meta_service();
        for d in [shared, private, ROOT_INO] {
            assert!(svc.dirleases.holder(d).is_none(), "inode {d} is not held");
        }
        assert!(svc.dirleases.holder(sub).is_some(), "bob holds his subdirectory");
        cluster.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_keeps_a_recalled_directory_is_not_granted_it_again_at_once() {
    with_timeout(60, async {
        let recall = Duration::from_millis(1_000);
        let cluster = Cluster::builder()
            .sites(1)
            .meta_config(move |m| m.recall_timeout_ms = recall.as_millis() as u64)
            .start()
            .await;
        let alice = cluster.client("alice", "site1").await;
        let mallory = cluster.client("mallory", "site1").await;
        let m = mallory.mkdir("/m", false, 0o777).await.unwrap().ino;
        // mallory acknowledges recalls but never gives the directory back.
        let _calls = subscribe(&cluster, &mallory, true).await;
        assert!(lease(&mallory, m).await.dir.is_some());

        let t = Instant::now();
        alice.meta().lookup(m, "x").await.unwrap_err();
        assert!(t.elapsed() >= recall - Duration::from_millis(100), "the first access waits out the recall");
        assert!(cluster.meta_service().dirleases.holder(m).is_none(), "the lease is broken");

        // Asked again at once: refused, so alice does not wait again.
        assert!(lease(&mallory, m).await.dir.is_none(), "no new lease right after keeping a recalled one");
        for round in 0..5 {
            let t = Instant::now();
            alice.meta().lookup(m, "x").await.unwrap_err();
            assert!(t.elapsed() < recall / 2, "round {round}: alice waited {:?}", t.elapsed());
        }
        // mallory's own work goes on, synchronously.
        mallory.put_bytes(b"m", "/m/f").await.unwrap();
        cluster.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_acknowledges_costs_one_wait_and_is_refused_for_a_while() {
    with_timeout(60, async {
        let cluster = Cluster::builder().sites(1).start().await;
        let alice = cluster.client("alice", "site1").await;
        let mallory = cluster.client("mallory", "site1").await;
        alice.put_bytes(b"alice's", "/f").await.unwrap();
        alice.chmod("/f", 0o644).await.unwrap();

        // mallory caches /f and never acknowledges its invalidation.
        let _calls = subscribe(&cluster, &mallory, false).await;
        mallory.stat("/f").await.unwrap();
        let bound = Duration::from_millis(ACK_BOUND_MS);
        let t = Instant::now();
        alice.chmod("/f", 0o640).await.unwrap();
        assert!(t.elapsed() >= bound - Duration::from_millis(100), "the change waited for mallory once");

        // Subscribing again at once is refused, with the reason.
        let conn = mallory.data().dialer().connect(&meta_peer(&cluster)).await.expect("connect");
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        write_msg(&mut send, &MetaCall { cred: None, req: MetaRequest::Subscribe }).await.unwrap();
        match read_msg::<CallbackFrame>(&mut recv).await.expect("an answer") {
            CallbackFrame::Refused { reason, retry_after_ms } => {
                assert!(reason.contains("mallory") && reason.contains("held other clients up"), "{reason}");
                assert!(retry_after_ms >= 500, "barred for a while: {retry_after_ms} ms");
            }
            other => panic!("subscription not refused: {other:?}"),
        }

        // Her reads lease nothing now: alice's next changes wait for nobody.
        mallory.stat("/f").await.unwrap();
        for (round, mode) in [0o600, 0o644, 0o640].into_iter().enumerate() {
            let t = Instant::now();
            alice.chmod("/f", mode).await.unwrap();
            assert!(t.elapsed() < bound / 2, "round {round}: alice waited {:?}", t.elapsed());
        }
        cluster.shutdown().await;
    })
    .await
}
