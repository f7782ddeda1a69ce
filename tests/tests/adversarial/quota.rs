//! Finding 7, the rest: quotas. Without them one user could fill every file
//! server of the federation. Each user's files and bytes are counted (every
//! replica: a file at two sites counts twice), an admin sets limits, and
//! what would pass a limit is refused with `QuotaExceeded` (EDQUOT on a
//! mount) and a message that says whose quota and where to look, while
//! another user goes on unhindered.

use fs_client::replicate::RepOptions;
use fs_meta::config::UserConfig;
use fs_proto::meta::{QuotaLimits, QuotaReport};
use fs_proto::{ErrorCode, FileKind};
use tests::cluster::Cluster;
use tests::with_timeout;

const KIB: u64 = 1024;

async fn report(c: &fs_client::Client) -> QuotaReport {
    c.meta().quota(None, false).await.expect("own quota").remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_count_every_replica_and_refuse_what_passes_them() {
    with_timeout(120, async {
        let cluster = Cluster::builder()
            .sites(2)
            .meta_config(|c| {
                c.users.push(UserConfig { name: "admin".into(), uid: 500, gid: None, groups: vec![], admin: true })
            })
            .start()
            .await;
        cluster.wait_alive(2, std::time::Duration::from_secs(20)).await;
        let admin = cluster.client("admin", "site1").await;
        let alice = cluster.client("alice", "site1").await;
        let bob = cluster.client("bob", "site1").await;
        alice.mkdir("/alice", false, 0o755).await.unwrap();
        let before = report(&alice).await;
        assert_eq!((before.user.as_str(), before.files), ("alice", 1), "her directory counts as a file");

        // Only an admin sets quotas or looks at someone else's.
        let limits = QuotaLimits { files_hard: 6, bytes_hard: 1000 * KIB, ..Default::default() };
        let e = bob.meta().set_quota("bob", limits).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::NotPermitted), "{e}");
        let e = bob.meta().quota(Some("alice".into()), false).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::NotPermitted), "{e}");
        let set = admin.meta().set_quota("alice", limits).await.unwrap();
        assert_eq!((set[0].uid, set[0].limits), (before.uid, limits));

        // One replica of 600 KiB counts once...
        let data = vec![7u8; 600 * KIB as usize];
        alice.put_bytes(&data, "/alice/a").await.unwrap();
        let r = report(&alice).await;
        assert_eq!((r.files, r.bytes), (2, 600 * KIB));
        // ...a second copy at another site would count it twice, 1200 KiB:
        // refused, and the file keeps its one good replica.
        let opts = RepOptions { copies: Some(2), ..Default::default() };
        let rep = alice.replicate(&["/alice/a".into()], &opts, &|_| {}).await.unwrap();
        assert_eq!(rep.copied_files, 0, "{rep:?}");
        assert_eq!(rep.failed.len(), 1, "{rep:?}");
        assert!(rep.failed[0].reason.contains("quota"), "the failure says why: {:?}", rep.failed);
        assert_eq!(alice.where_is("/alice/a").await.unwrap().1.len(), 1);
        assert_eq!(report(&alice).await.bytes, 600 * KIB);

        // A write that would pass the hard limit is refused while it
        // streams, with a message naming the quota; nothing is counted.
        let e = alice.put_bytes(&data, "/alice/b").await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::QuotaExceeded), "{e}");
        assert!(e.to_string().contains("quota"), "{e}");
        assert_eq!(report(&alice).await.bytes, 600 * KIB);
        // What fits still goes in.
        alice.put_bytes(&vec![1u8; 300 * KIB as usize], "/alice/b").await.unwrap();

        // Files: 3 of 6 used (the directory, a, b); three more, then
        // creating is refused.
        let dir = alice.stat("/alice").await.unwrap().ino;
        assert_eq!(report(&alice).await.files, 3);
        for n in ["c", "d", "e"] {
            alice.meta().create(dir, n, FileKind::Regular, 0o644, true).await.unwrap();
        }
        let e = alice.meta().create(dir, "f", FileKind::Regular, 0o644, true).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::QuotaExceeded), "{e}");
        assert!(e.to_string().contains("hard limit of 6"), "{e}");
        // Bundled creation (put -r) is refused too, with the reason.
        let tree = tempfile::tempdir().unwrap();
        std::fs::write(tree.path().join("x"), b"x").unwrap();
        let e = alice.put_tree(tree.path(), "/alice/t", &|_| {}).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::QuotaExceeded), "{e}");
        let r = report(&alice).await;
        assert_eq!((r.files, r.bytes), (6, 900 * KIB), "{r:?}");

        // Deleting always works and gives room back.
        alice.remove("/alice/a", false).await.unwrap();
        assert_eq!(report(&alice).await.bytes, 300 * KIB);
        assert_eq!(report(&alice).await.files, 5);
        alice.meta().create(dir, "f", FileKind::Regular, 0o644, true).await.unwrap();

        // Bob has no quota and is not slowed by hers.
        bob.put_bytes(&vec![2u8; 2000 * KIB as usize], "/bob").await.unwrap();
        let all = admin.meta().quota(None, true).await.unwrap();
        let find = |u: &str| all.iter().find(|r| r.user == u).cloned().unwrap_or_else(|| panic!("{u} in {all:?}"));
        assert_eq!((find("bob").bytes, find("bob").limits), (2000 * KIB, QuotaLimits::default()));
        assert_eq!(find("alice").limits, limits);

        // Removing the limits lifts them.
        admin.meta().set_quota("alice", QuotaLimits::default()).await.unwrap();
        alice.put_bytes(&data, "/alice/g").await.unwrap();
        cluster.shutdown().await;
    })
    .await
}
