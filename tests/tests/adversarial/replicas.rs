//! Finding 1: destroying another user's replica with a bundle that names
//! its inode. bob takes a bundle capability (no permission needed), learns
//! where alice's file lives, and sends that server a bundle whose one entry
//! names alice's inode: formerly the server wrote it over alice's replica
//! and deleted it when the meta server refused the commit.

use super::common::{file_entry, lease};
use fs_client::bundle::ship::{ship, Outgoing, Source};
use fs_proto::{ErrorCode, ROOT_INO};
use std::time::Duration;
use tests::cluster::Cluster;
use tests::{pattern, with_timeout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_naming_another_users_inode_is_refused_and_destroys_nothing() {
    with_timeout(120, async {
        let cluster = Cluster::builder().sites(1).start().await;
        let alice = cluster.client("alice", "site1").await;
        let bob = cluster.client("bob", "site1").await;
        alice.mkdir("/alice", false, 0o755).await.unwrap();
        let data = pattern(200_000, 1);
        // Through a bundle (generation 1, the path bob's bundle would use)
        // and through a write session.
        let src = cluster.dir().join("tree");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("bundled"), &data).unwrap();
        alice.put_tree(&src, "/alice/t", &|_| {}).await.unwrap();
        alice.put_bytes(&data, "/alice/plain").await.unwrap();

        for victim in ["/alice/t/bundled", "/alice/plain"] {
            // What bob can learn without any permission on the file's bytes.
            let (attr, reps) = bob.where_is(victim).await.unwrap();
            let server = reps[0].server.clone();
            let g = lease(&bob, None, 4).await;
            let evil = pattern(200_000, 666);
            let items = vec![Outgoing::create(
                file_entry(ROOT_INO, "stolen", attr.ino, evil.len() as u64),
                Some(Source::Bytes(evil.into())),
            )];
            let res = ship(bob.data().dialer(), &server, &g.cap, &items, bob.counters(), Duration::from_secs(30))
                .await
                .expect("the server answers");
            let err = res[0].as_ref().expect_err("an inode not leased to bob");
            eprintln!("{victim}: bob's entry refused: {err}");
            assert_eq!(err.code, ErrorCode::BadCapability, "{err}");
            assert!(!err.message.contains('/'), "the error names no spool path: {err}");
            // alice's file is whole, from the same server.
            assert!(alice.get_bytes(victim).await.unwrap() == data, "{victim} intact");
            assert!(bob.stat("/stolen").await.is_err(), "nothing was created");
        }
        // And bob's own bundles still work (the refusal is about the inode).
        let g = lease(&bob, None, 4).await;
        let r = g.inos.expect("a range");
        let items = vec![Outgoing::create(
            file_entry(ROOT_INO, "bobs", r.first, 3),
            Some(Source::Bytes(b"bob".to_vec().into())),
        )];
        let res = ship(bob.data().dialer(), &g.target, &g.cap, &items, bob.counters(), Duration::from_secs(30))
            .await
            .unwrap();
        assert!(res[0].is_ok(), "{res:?}");
        assert_eq!(bob.get_bytes("/bobs").await.unwrap(), b"bob");
        cluster.shutdown().await;
    })
    .await
}

/// Even with an inode it really leased, a bundle never replaces a replica
/// the server already holds: a replayed bundle with other bytes for an
/// inode already committed leaves the committed replica as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_bundle_with_other_bytes_never_replaces_a_committed_replica() {
    with_timeout(120, async {
        let cluster = Cluster::builder().sites(1).start().await;
        let bob = cluster.client("bob", "site1").await;
        let g = lease(&bob, None, 4).await;
        let ino = g.inos.expect("a range").first;
        let first =
            vec![Outgoing::create(file_entry(ROOT_INO, "f", ino, 5), Some(Source::Bytes(b"first".to_vec().into())))];
        let d = Duration::from_secs(30);
        let res = ship(bob.data().dialer(), &g.target, &g.cap, &first, bob.counters(), d).await.unwrap();
        assert!(res[0].is_ok(), "{res:?}");
        // The same bundle again (a retry after a lost answer) succeeds again.
        let res = ship(bob.data().dialer(), &g.target, &g.cap, &first, bob.counters(), d).await.unwrap();
        assert!(res[0].is_ok(), "a retry of the same bundle finds its own commit: {res:?}");
        // Other bytes for the same inode: refused, and the replica stays.
        let other =
            vec![Outgoing::create(file_entry(ROOT_INO, "f", ino, 5), Some(Source::Bytes(b"other".to_vec().into())))];
        let res = ship(bob.data().dialer(), &g.target, &g.cap, &other, bob.counters(), d).await.unwrap();
        let err = res[0].as_ref().expect_err("other bytes for a stored generation");
        assert_eq!(err.code, ErrorCode::Exists, "{err}");
        assert_eq!(bob.get_bytes("/f").await.unwrap(), b"first");
        assert!(cluster.replica_path(0, ino, 1).exists());
        cluster.shutdown().await;
    })
    .await
}
