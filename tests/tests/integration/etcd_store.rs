//! The etcd store on a real three-member etcd cluster: what one meta server
//! wrote is there for the next (restart, or another machine), a meta server
//! whose prefix was taken over stops writing, a transaction too large for
//! one etcd commit is refused whole, and losing members is survived or
//! reported. Skipped without etcd unless RENKEI_TEST_STRICT=1.

use fs_meta::namespace::Namespace;
use fs_meta::perm::Caller;
use fs_meta::store::{Batch, Store, StoreConfig, StoreError};
use fs_proto::ROOT_INO;
use std::time::{Duration, Instant};
use tests::etcd::{self, EtcdCluster};

fn alice() -> Caller {
    Caller { name: "alice".into(), uid: 1000, gid: 1000, groups: vec![] }
}

fn open(cfg: &StoreConfig, dir: &tempfile::TempDir, name: &str) -> Store {
    Store::open(cfg, &dir.path().join(name)).unwrap_or_else(|e| panic!("open etcd store: {e}"))
}

#[test]
fn etcd_store_survives_the_meta_server_and_fences_a_stale_one() {
    if !etcd::available("etcd_store_survives_the_meta_server_and_fences_a_stale_one") {
        return;
    }
    let cfg = etcd::store_config(etcd::cluster());
    let dir = tempfile::tempdir().unwrap();

    // The first meta server makes a tree of names; its flush returns once
    // etcd has it.
    let first = open(&cfg, &dir, "a");
    let ns = Namespace::open(first.open_tree(fs_meta::keys::TREE_NAMESPACE).unwrap(), 0o777).unwrap();
    let d = ns.mkdir(&alice(), ROOT_INO, "d", 0o755).unwrap().ino;
    for i in 0..50 {
        ns.mkdir(&alice(), d, &format!("sub{i}"), 0o755).unwrap();
    }
    first.flush().unwrap();
    let id = ns.id();

    // Another meta server (another directory: nothing local is shared)
    // finds everything, and takes the prefix over.
    let second = open(&cfg, &dir, "b");
    let ns2 = Namespace::open(second.open_tree(fs_meta::keys::TREE_NAMESPACE).unwrap(), 0o777).unwrap();
    assert_eq!(ns2.id(), id, "the same namespace");
    let found = ns2.lookup(&alice(), ROOT_INO, "d").unwrap();
    assert_eq!(found.ino, d);
    let (entries, more) = ns2.readdir(&alice(), d, None, 1000, false).unwrap();
    assert_eq!((entries.len(), more), (50, false));

    // The first one is fenced: its next write never reaches etcd.
    ns.mkdir(&alice(), d, "stale", 0o755).unwrap();
    let e = first.flush().unwrap_err();
    assert!(matches!(e, StoreError::Failed(_)) && e.to_string().contains("took the etcd prefix over"), "{e}");
    assert!(ns.mkdir(&alice(), d, "after", 0o755).is_err(), "a fenced store takes no more writes");
    let third = open(&cfg, &dir, "c");
    let ns3 = Namespace::open(third.open_tree(fs_meta::keys::TREE_NAMESPACE).unwrap(), 0o777).unwrap();
    assert!(ns3.lookup(&alice(), d, "stale").is_err(), "the fenced write is not in etcd");
    assert_eq!(ns3.lookup(&alice(), d, "sub49").unwrap().kind, fs_proto::FileKind::Directory);
}

#[test]
fn etcd_store_refuses_a_transaction_beyond_its_limits_whole() {
    if !etcd::available("etcd_store_refuses_a_transaction_beyond_its_limits_whole") {
        return;
    }
    let cfg = StoreConfig { max_txn_ops: 4, max_txn_bytes: 1000, ..etcd::store_config(etcd::cluster()) };
    let dir = tempfile::tempdir().unwrap();
    let store = open(&cfg, &dir, "a");
    let t = store.open_tree("t").unwrap();
    let mut b = Batch::default();
    for i in 0..5u8 {
        b.insert(vec![i], vec![i]);
    }
    let e = t.apply_batch(b).unwrap_err();
    assert!(matches!(e, StoreError::TooLarge(_)) && e.to_string().contains("max_txn_ops = 4"), "{e}");
    assert!(t.get([0u8]).unwrap().is_none(), "nothing of a refused batch is applied");
    let mut b = Batch::default();
    b.insert(b"big".to_vec(), vec![7u8; 2000]);
    assert!(matches!(t.apply_batch(b).unwrap_err(), StoreError::TooLarge(_)));
    // Within the limits: applied, durable, and there after a reopen.
    let mut b = Batch::default();
    for i in 0..4u8 {
        b.insert(vec![i], vec![i]);
    }
    t.apply_batch(b).unwrap();
    store.flush().unwrap();
    let again = open(&cfg, &dir, "b");
    assert_eq!(again.open_tree("t").unwrap().iter().count(), 4);
}

#[test]
fn etcd_store_rides_out_one_lost_member_and_reports_a_lost_quorum() {
    if !etcd::available("etcd_store_rides_out_one_lost_member_and_reports_a_lost_quorum") {
        return;
    }
    tests::init_logs();
    // Its own cluster: killing members must not disturb other tests.
    let cluster = EtcdCluster::start().unwrap_or_else(|e| panic!("etcd cluster: {e}"));
    let cfg = StoreConfig { commit_timeout_ms: 8_000, ..etcd::store_config(&cluster) };
    let dir = tempfile::tempdir().unwrap();
    let store = open(&cfg, &dir, "a");
    let t = store.open_tree("t").unwrap();
    t.insert(b"k0", b"v".to_vec()).unwrap();
    store.flush().unwrap();

    // One member of three gone: nothing notices but a pause while the
    // others elect a leader, should it have been the leader.
    cluster.kill(0);
    let started = Instant::now();
    t.insert(b"k1", b"v".to_vec()).unwrap();
    store.flush().unwrap();
    eprintln!("a write with one member of three killed took {:?}", started.elapsed());

    // Two gone: no quorum, the flush fails clearly within its bound, and
    // the write stays queued.
    cluster.kill(1);
    t.insert(b"k2", b"v".to_vec()).unwrap();
    let started = Instant::now();
    let e = store.flush().unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(12), "bounded: {:?}", started.elapsed());
    assert!(e.to_string().contains("quorum"), "{e}");

    // A member back: the queued write commits.
    cluster.restart(1).expect("restart etcd member 1");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store.flush() {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => eprintln!("still waiting for etcd: {e}"),
            Err(e) => panic!("etcd did not take the queued write after a member returned: {e}"),
        }
    }
    cluster.restart(0).expect("restart etcd member 0");
    let again = open(&cfg, &dir, "b");
    let keys: Vec<Vec<u8>> = again.open_tree("t").unwrap().iter().keys().map(|k| k.unwrap().to_vec()).collect();
    assert_eq!(keys, vec![b"k0".to_vec(), b"k1".to_vec(), b"k2".to_vec()]);
}
