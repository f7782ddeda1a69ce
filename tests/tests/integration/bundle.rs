//! Small-file bundling (issue 5) at the protocol level, in process: `put
//! -r` through bundles and what it costs in requests, bundle commits entry
//! by entry, directory write leases recalled before another client may use
//! the directory (released, broken by a timeout, or ended with the
//! holder's session), and space reservations.

use fs_client::bundle::ship::{ship, Outgoing, Source};
use fs_client::Client;
use fs_proto::bundle::{BundleEntry, LeaseGrant, LeaseRequest};
use fs_proto::callback::{CallbackFrame, Invalidation};
use fs_proto::meta::{MetaRequest, MetaResponse};
use fs_proto::rpc::{call, PeerAddr};
use fs_proto::server::{ServerRequest, ServerResponse};
use fs_proto::{ErrorCode, FileKind, Ino, Timestamp};
use std::time::{Duration, Instant};
use tests::cluster::Cluster;
use tests::{pattern, with_timeout};

fn meta_peer(cluster: &Cluster) -> PeerAddr {
    PeerAddr { addr: cluster.meta_addr(), name: "meta".into() }
}

/// Frames of a callback subscription.
type Calls = tokio::sync::mpsc::UnboundedReceiver<CallbackFrame>;

/// Open a callback subscription on `c`'s connection to the meta server,
/// acknowledging as a mount does.
async fn subscribe(cluster: &Cluster, c: &Client) -> Calls {
    let conn = c.data().dialer().connect(&meta_peer(cluster)).await.expect("connect");
    tests::raw::subscribe(&conn, Some(Duration::ZERO)).await
}

async fn lease(c: &Client, dir: Option<Ino>, inos: u32) -> LeaseGrant {
    let req = LeaseRequest { dir, inos, site: c.config().site.clone(), held: Vec::new(), also: Vec::new() };
    match c.meta().call(MetaRequest::LeaseDir(req)).await.expect("lease") {
        MetaResponse::Lease(g) => g,
        other => panic!("unexpected {other:?}"),
    }
}

/// The next recall on a subscription (other frames skipped).
async fn next_recall(calls: &mut Calls, bound: Duration) -> Option<Ino> {
    let until = Instant::now() + bound;
    loop {
        let left = until.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, calls.recv()).await {
            Ok(Some(CallbackFrame::Invalidate { list, .. })) => {
                if let Some(d) = list.iter().find_map(|i| match i {
                    Invalidation::Recall { dir } => Some(*dir),
                    _ => None,
                }) {
                    return Some(d);
                }
            }
            Ok(Some(_)) => {}
            _ => return None,
        }
    }
}

fn entry(parent: Ino, name: &str, ino: Ino, kind: FileKind, size: u64) -> BundleEntry {
    let now = Timestamp::now();
    BundleEntry {
        parent,
        name: name.into(),
        ino,
        kind,
        perm: 0o755,
        atime: now,
        mtime: now,
        ctime: now,
        size,
        target: None,
        uid: None,
        gid: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_tree_costs_a_few_requests_not_several_per_file() {
    with_timeout(180, async {
        let cluster = Cluster::builder().sites(2).start().await;
        let c = cluster.client("alice", "site2").await;
        let src = cluster.dir().join("src");
        let mut expect = Vec::new();
        for i in 0..1000usize {
            let d = src.join(format!("d{}", i % 4));
            std::fs::create_dir_all(&d).unwrap();
            let data = pattern(i * 53 % 9000, i as u64);
            std::fs::write(d.join(format!("f{i}")), &data).unwrap();
            expect.push((format!("/up/d{}/f{i}", i % 4), data));
        }
        let before = c.counters().snapshot();
        let (files, _) = c.put_tree(&src, "/up", &|_| {}).await.expect("put -r");
        assert_eq!(files, 1000);
        let after = c.counters().snapshot();
        let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
        let meta: u64 =
            after.iter().filter(|(k, _)| fs_client::counters::is_meta_request(k)).map(|(k, _)| delta(k)).sum();
        eprintln!("put -r of 1000 files: {meta} meta requests, {} bundles: {after:?}", delta("data.bundle"));
        assert!(meta <= 6, "a fresh tree costs a handful of meta requests, not per file: {after:?}");
        assert!(delta("data.bundle") <= 6, "1000 small files travel in a few bundles");
        assert_eq!(delta("create") + delta("open_write") + delta("data.write"), 0);
        for (p, data) in expect.iter().step_by(97) {
            assert!(&c.get_bytes(p).await.expect("get") == data, "{p} differs");
        }
        let (_, reps) = c.where_is(&expect[1].0).await.unwrap();
        assert_eq!(reps[0].server.site, "site2", "bundles go to the writer's site");
        assert_eq!(c.list("/up/d1").await.unwrap().len(), 250);

        // Again into the existing tree: changed files replace the old ones,
        // new ones are added.
        std::fs::write(src.join("d0/f0"), b"changed").unwrap();
        std::fs::write(src.join("d0/new"), b"new file").unwrap();
        c.put_tree(&src, "/up", &|_| {}).await.expect("put -r again");
        assert_eq!(c.get_bytes("/up/d0/f0").await.unwrap(), b"changed");
        assert_eq!(c.get_bytes("/up/d0/new").await.unwrap(), b"new file");
        assert!(c.get_bytes("/up/d1/f1").await.unwrap() == expect[1].1);
        cluster.shutdown().await;
    })
    .await
}

/// A bundle commit acts for the user its capability names: a tree put into
/// a directory only that user may search commits (the file server that
/// forwards the commit, acting as nobody in the namespace, could not reach
/// it, and once every such bundle was refused whole).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_into_a_private_directory_commit_for_their_user() {
    with_timeout(120, async {
        let cluster = Cluster::builder().sites(1).start().await;
        let c = cluster.client("alice", "site1").await;
        c.mkdir("/private", false, 0o700).await.expect("mkdir");
        c.mkdir("/private/a", false, 0o755).await.expect("mkdir");
        let src = cluster.dir().join("src");
        std::fs::create_dir_all(src.join("d")).unwrap();
        let mut expect = Vec::new();
        for i in 0..20usize {
            let data = pattern(100 + i, i as u64);
            std::fs::write(src.join("d").join(format!("f{i}")), &data).unwrap();
            expect.push((format!("/private/a/up/d/f{i}"), data));
        }
        let (files, _) = c.put_tree(&src, "/private/a/up", &|_| {}).await.expect("put -r into a private directory");
        assert_eq!(files, 20);
        for (p, data) in &expect {
            assert!(&c.get_bytes(p).await.expect("get") == data, "{p} differs");
        }
        // The rule still holds for the user: bob cannot reach alice's files.
        let bob = cluster.client("bob", "site1").await;
        let e = bob.get_bytes(&expect[0].0).await.unwrap_err();
        assert_eq!(e.errno(), libc::EACCES, "bob reads through alice's private directory: {e}");
        cluster.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundle_entries_commit_alone_and_only_with_their_data() {
    with_timeout(120, async {
        let cluster = Cluster::builder().sites(1).start().await;
        let c = cluster.client("alice", "site1").await;
        let dir = c.mkdir("/b", false, 0o755).await.unwrap().ino;
        c.put_bytes(b"old", "/b/taken").await.unwrap();
        let g = lease(&c, None, 8).await;
        assert!(g.dir.is_none(), "no directory asked for");
        let r = g.inos.expect("inode numbers");
        let data = pattern(300_000, 9);
        let items = vec![
            Outgoing::create(
                entry(dir, "big", r.first, FileKind::Regular, data.len() as u64),
                Some(Source::Bytes(data.clone().into())),
            ),
            Outgoing::create(entry(dir, "sub", r.first + 1, FileKind::Directory, 0), None),
            Outgoing::create(
                entry(r.first + 1, "inner", r.first + 2, FileKind::Regular, 3),
                Some(Source::Bytes(b"abc".to_vec().into())),
            ),
            Outgoing::create(
                entry(dir, "taken", r.first + 3, FileKind::Regular, 4),
                Some(Source::Bytes(b"lost".to_vec().into())),
            ),
            Outgoing::create(entry(dir, "foreign", 1_000_000_000, FileKind::Regular, 0), None),
        ];
        let res = ship(c.data().dialer(), &g.target, &g.cap, &items, c.counters(), Duration::from_secs(30))
            .await
            .expect("ship");
        assert!(res[0].is_ok() && res[1].is_ok() && res[2].is_ok(), "{res:?}");
        assert_eq!(res[3].as_ref().unwrap_err().code, ErrorCode::Exists);
        assert_eq!(res[4].as_ref().unwrap_err().code, ErrorCode::BadCapability, "inodes not leased to us");
        assert!(c.get_bytes("/b/big").await.unwrap() == data);
        assert_eq!(c.get_bytes("/b/sub/inner").await.unwrap(), b"abc");
        assert_eq!(c.get_bytes("/b/taken").await.unwrap(), b"old", "an entry that failed changed nothing");
        assert_eq!(c.stat("/b/big").await.unwrap().ino, r.first, "the inode number we chose");
        // The refused file's replica is not left on the server.
        let spool = cluster.replica_path(0, r.first + 3, 1);
        assert!(!spool.exists(), "{} left behind", spool.display());

        // Another user cannot use our capability (its principal is us).
        let bob = cluster.client("bob", "site1").await;
        let stolen = vec![Outgoing::create(entry(dir, "x", r.first + 4, FileKind::Regular, 0), None)];
        let e = ship(bob.data().dialer(), &g.target, &g.cap, &stolen, bob.counters(), Duration::from_secs(30)).await;
        assert_eq!(e.unwrap_err().code(), Some(ErrorCode::BadCapability));
        cluster.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_lease_is_recalled_before_another_client_looks() {
    with_timeout(120, async {
        let cluster = Cluster::builder().sites(2).meta_config(|m| m.recall_timeout_ms = 1_500).start().await;
        let a = cluster.client("alice", "site1").await;
        let b = cluster.client("alice", "site2").await;
        let d = a.mkdir("/shared", false, 0o755).await.unwrap().ino;
        let leases = &cluster.meta_service().dirleases;

        // Without a subscription there is no lease.
        assert!(lease(&a, Some(d), 0).await.dir.is_none());
        let mut calls = subscribe(&cluster, &a).await;
        let g = lease(&a, Some(d), 16).await;
        assert_eq!(g.dir.as_ref().map(|x| x.ino), Some(d), "granted");
        assert!(leases.holder(d).is_some());

        // B looks: A is asked to give it back, and B waits until it does.
        let b2 = b.clone();
        let look = tokio::spawn(async move {
            let r = b2.meta().lookup(d, "x").await;
            (r, Instant::now())
        });
        // The recall is sent from inside the admission of B's lookup: the
        // meta server has B's request in hand from here on.
        assert_eq!(next_recall(&mut calls, Duration::from_secs(5)).await, Some(d), "the holder is recalled");
        assert!(leases.holder(d).is_some(), "A still holds the lease");
        let released = Instant::now();
        a.meta().call(MetaRequest::ReleaseDirs { dirs: vec![d] }).await.unwrap();
        let (r, answered) = tokio::time::timeout(Duration::from_secs(5), look).await.expect("released").unwrap();
        assert!(answered > released, "B was answered before A gave the lease back");
        assert_eq!(r.unwrap_err().code(), Some(ErrorCode::NotFound));
        assert!(leases.holder(d).is_none());

        // A lease ends with its holder's session.
        assert!(lease(&a, Some(d), 0).await.dir.is_some());
        drop(calls);
        a.data().dialer().forget(&meta_peer(&cluster)).await;
        let t = Instant::now();
        b.meta().lookup(d, "z").await.unwrap_err();
        assert!(t.elapsed() < Duration::from_millis(1_000), "no wait once the holder is gone ({:?})", t.elapsed());

        // Creating in a leased directory recalls too, and so does a bundle
        // of someone else's.
        let mut calls = subscribe(&cluster, &a).await;
        assert!(lease(&a, Some(d), 0).await.dir.is_some());
        let b2 = b.clone();
        let make = tokio::spawn(async move { b2.put_bytes(b"from b", "/shared/fromb").await });
        assert_eq!(next_recall(&mut calls, Duration::from_secs(5)).await, Some(d));
        a.meta().call(MetaRequest::ReleaseDirs { dirs: vec![d] }).await.unwrap();
        make.await.unwrap().expect("created after the release");

        // A holder that does not answer loses the lease after the timeout,
        // and gets none for a while (issue 12, finding 6).
        assert!(lease(&a, Some(d), 0).await.dir.is_some());
        let t = Instant::now();
        b.meta().lookup(d, "y").await.unwrap_err();
        let waited = t.elapsed();
        assert!(waited >= Duration::from_millis(1_400), "waited for the recall bound ({waited:?})");
        assert!(leases.holder(d).is_none(), "broken");
        assert!(lease(&a, Some(d), 0).await.dir.is_none(), "no new lease right after a broken one");
        drop(calls);
        cluster.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_are_refused_beyond_free_space() {
    with_timeout(60, async {
        let cluster = Cluster::builder().sites(1).start().await;
        let c = cluster.client("alice", "site1").await;
        let g = lease(&c, None, 0).await;
        let peer = PeerAddr { addr: g.target.addr, name: g.target.host.clone() };
        let conn = c.data().dialer().connect(&peer).await.unwrap();
        let ask = |bytes: u64| ServerRequest::Reserve { cap: g.cap.clone(), bytes };
        let r: Result<ServerResponse, _> = call(&conn, &peer.name, &ask(1 << 20), Duration::from_secs(5)).await;
        assert_eq!(r.unwrap(), ServerResponse::Reserved { bytes: 1 << 20 });
        let r: Result<ServerResponse, _> = call(&conn, &peer.name, &ask(1 << 60), Duration::from_secs(5)).await;
        assert_eq!(r.unwrap_err().code(), Some(ErrorCode::NoSpace));
        cluster.shutdown().await;
    })
    .await
}
