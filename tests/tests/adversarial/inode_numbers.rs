//! Finding 2: reading through a private directory by inode number. alice's
//! `/a` is 0700 and `/a/secret` 0644; bob is refused by path, and formerly
//! got the contents (and attributes, xattr names, replica locations, a hard
//! link) by naming inode numbers. The rule now: a user may name an inode by
//! number only if it could reach it by path (search permission on every
//! directory above it, through any of its names).

use fs_proto::meta::{MetaRequest, MetaResponse};
use fs_proto::meta::{SetAttr, XattrFlags};
use fs_proto::replication::{CopyGoal, ReplicationQuery};
use fs_proto::{ErrorCode, Ino, ROOT_INO};
use tests::cluster::Cluster;
use tests::with_timeout;

/// Every request that names `ino` by number, as `c`; the errors.
async fn by_number(c: &fs_client::Client, ino: Ino, dir: Ino) -> Vec<(&'static str, Result<MetaResponse, ErrorCode>)> {
    use MetaRequest as Q;
    let reqs = vec![
        ("getattr", Q::GetAttr { ino }),
        ("open_read", Q::OpenRead { ino }),
        ("open_write", Q::OpenWrite { ino, site: "site1".into() }),
        ("readlink", Q::ReadLink { ino }),
        ("listxattr", Q::ListXattr { ino }),
        ("getxattr", Q::GetXattr { ino, name: "user.k".into() }),
        ("setxattr", Q::SetXattr { ino, name: "user.k".into(), value: b"v".to_vec(), flags: XattrFlags::default() }),
        ("where", Q::Where { ino }),
        ("setattr", Q::SetAttr { ino, set: SetAttr::default() }),
        ("set_ncopy", Q::SetNcopy { ino, ncopy: 3 }),
        ("link", Q::Link { ino, new_parent: ROOT_INO, new_name: format!("stolen-{ino}") }),
        ("plan_check", Q::PlanCheck { inos: vec![ino] }),
        (
            "plan_replication",
            Q::PlanReplication(ReplicationQuery {
                inos: vec![ino],
                goal: CopyGoal::Copies(2),
                from: None,
                to: None,
                dry_run: true,
            }),
        ),
        ("readdir", Q::ReadDir { ino: dir, after: None, limit: 100, plus: true }),
        ("lookup", Q::Lookup { parent: dir, name: "inner".into() }),
        (
            "create",
            Q::Create {
                parent: dir,
                name: "planted".into(),
                kind: fs_proto::FileKind::Regular,
                perm: 0o644,
                rdev: 0,
                exclusive: true,
            },
        ),
        ("batch", Q::Batch(vec![Q::GetAttr { ino }])),
    ];
    let mut out = Vec::new();
    for (what, q) in reqs {
        let r = c.meta().call(q).await.map_err(|e| e.code().unwrap_or(ErrorCode::Internal));
        let r = match r {
            Ok(MetaResponse::Batch(mut v)) => v.pop().expect("one").map_err(|e| e.code),
            other => other,
        };
        out.push((what, r));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inode_numbers_do_not_reach_through_a_private_directory() {
    with_timeout(120, async {
        let cluster = Cluster::builder().sites(1).start().await;
        let alice = cluster.client("alice", "site1").await;
        let bob = cluster.client("bob", "site1").await;
        alice.mkdir("/a", false, 0o700).await.unwrap();
        alice.put_bytes(b"alice's secret", "/a/secret").await.unwrap();
        alice.chmod("/a/secret", 0o644).await.unwrap();
        let sub = alice.mkdir("/a/open", false, 0o777).await.unwrap().ino;
        alice.put_bytes(b"inner", "/a/open/inner").await.unwrap();
        let secret = alice.stat("/a/secret").await.unwrap().ino;
        alice
            .meta()
            .call(MetaRequest::SetXattr {
                ino: secret,
                name: "user.k".into(),
                value: b"v".to_vec(),
                flags: XattrFlags::default(),
            })
            .await
            .unwrap();

        // By path: refused.
        assert_eq!(bob.get_bytes("/a/secret").await.unwrap_err().errno(), libc::EACCES);

        // By number: every request naming the inode or the directory below
        // /a is refused, with the reason.
        for (what, r) in by_number(&bob, secret, sub).await {
            match r {
                Err(code) => assert_eq!(code, ErrorCode::PermissionDenied, "{what}"),
                Ok(ok) => panic!("{what} by inode number through a private directory answered {ok:?}"),
            }
        }
        // Scanning inode numbers finds nothing readable of alice's.
        for ino in 1..200 {
            if let Ok(MetaResponse::Read(g)) = bob.meta().call(MetaRequest::OpenRead { ino }).await {
                let data = bob.data().read_to_vec(&g).await;
                assert!(
                    data.as_deref().map(|d| d != b"alice's secret" && d != b"inner").unwrap_or(true),
                    "inode {ino} handed bob alice's bytes"
                );
            }
        }
        // A directory lease below /a is refused too.
        let req = fs_proto::bundle::LeaseRequest {
            dir: Some(sub),
            inos: 0,
            site: "site1".into(),
            held: Vec::new(),
            also: Vec::new(),
        };
        let e = bob.meta().call(MetaRequest::LeaseDir(req)).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::PermissionDenied), "{e}");

        // alice herself reaches everything, by number as by path.
        for (what, r) in by_number(&alice, secret, sub).await {
            assert!(!matches!(r, Err(ErrorCode::PermissionDenied)), "{what}: alice refused");
        }
        // Once alice opens /a, bob reaches it by number as by path.
        alice.chmod("/a", 0o755).await.unwrap();
        let g = bob.meta().open_read(secret).await.expect("reachable now");
        assert_eq!(bob.data().read_to_vec(&g).await.unwrap(), b"alice's secret");
        cluster.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_links_need_ownership_or_read_write_and_count_as_paths() {
    with_timeout(120, async {
        let cluster = Cluster::builder().sites(1).start().await;
        let alice = cluster.client("alice", "site1").await;
        let bob = cluster.client("bob", "site1").await;
        alice.mkdir("/pub", false, 0o755).await.unwrap();
        alice.put_bytes(b"readable", "/pub/f").await.unwrap();
        alice.chmod("/pub/f", 0o644).await.unwrap();
        bob.mkdir("/bob", false, 0o755).await.unwrap();
        let f = bob.stat("/pub/f").await.unwrap().ino;
        let bobdir = bob.stat("/bob").await.unwrap().ino;
        // protected_hardlinks: bob neither owns /pub/f nor may write it.
        let e = bob.meta().call(MetaRequest::Link { ino: f, new_parent: bobdir, new_name: "mine".into() }).await;
        assert_eq!(e.unwrap_err().code(), Some(ErrorCode::NotPermitted));

        // A file alice links from a private directory into a public one is
        // reachable through the public name.
        alice.mkdir("/priv", false, 0o700).await.unwrap();
        alice.put_bytes(b"shared on purpose", "/priv/g").await.unwrap();
        alice.chmod("/priv/g", 0o644).await.unwrap();
        let g = alice.stat("/priv/g").await.unwrap().ino;
        let pubdir = alice.stat("/pub").await.unwrap().ino;
        assert!(bob.meta().getattr(g).await.is_err(), "only the private name so far");
        alice.meta().call(MetaRequest::Link { ino: g, new_parent: pubdir, new_name: "g".into() }).await.unwrap();
        assert_eq!(bob.meta().getattr(g).await.unwrap().nlink, 2, "reachable through /pub/g");
        // Renamed back under the private directory, it is private again.
        alice.remove("/pub/g", false).await.unwrap();
        assert_eq!(bob.meta().getattr(g).await.unwrap_err().errno(), libc::EACCES);
        // The root reaches everything; unknown inodes are still "not found".
        assert_eq!(bob.meta().getattr(ROOT_INO).await.unwrap().ino, ROOT_INO);
        assert_eq!(bob.meta().getattr(9_999_999).await.unwrap_err().errno(), libc::ENOENT);
        cluster.shutdown().await;
    })
    .await
}
