//! A warm `ls -l` and `stat` send nothing (acceptance 4).

use crate::common::{blocking, enabled, sh, TestMount};
use fs_proto::FileKind;
use tests::procs::ProcFederation;
use tests::with_timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn second_ls_l_and_stat_of_1000_entries_send_nothing() {
    if !enabled("second_ls_l_and_stat_of_1000_entries_send_nothing") {
        return;
    }
    with_timeout(300, async {
        let fed = ProcFederation::up(1).await;
        // The entries are made by another client, before the mount exists.
        let c = fed.client(None).await;
        let dir = c.mkdir("/big", false, 0o755).await.unwrap();
        for i in 0..1000 {
            let kind = if i % 10 == 0 { FileKind::Fifo } else { FileKind::Regular };
            c.meta().create(dir.ino, &format!("entry-{i:04}"), kind, 0o644, true).await.unwrap();
        }
        let m = TestMount::new(&fed, None, "/", "").await;
        let d = m.join("big");

        let first = sh(&d, "ls -l | wc -l").await;
        assert_eq!(first.trim(), "1001", "ls -l shows a total line and 1000 entries");
        let cold = m.meta_requests();
        eprintln!("cold ls -l sent {cold} metadata requests: {:?}", m.counters.snapshot());
        // One listing stream carries every entry's attributes and xattr
        // names: no request per entry (ls probes security.selinux on each).
        assert_eq!(m.counters.get("listdir"), 1, "{:?}", m.counters.snapshot());
        assert_eq!(m.counters.get("getxattr"), 0, "{:?}", m.counters.snapshot());
        assert!(cold <= 8, "cold ls -l of 1000 entries sent {cold} requests: {:?}", m.counters.snapshot());

        let before = m.meta_requests();
        let probes = m.counters.get("fuse.getxattr");
        let second = sh(&d, "ls -l | wc -l").await;
        assert_eq!(second.trim(), "1001");
        // ls probes each entry for an SELinux label and an ACL unless the
        // file system says it keeps none: the mount says so at the first.
        let probes = m.counters.get("fuse.getxattr") - probes;
        assert!(probes <= 2, "ls -l of 1000 entries made {probes} getxattr requests to the mount");
        let stats = blocking({
            let d = d.clone();
            move || {
                (0..1000)
                    .map(|i| std::fs::symlink_metadata(d.join(format!("entry-{i:04}"))).map(|m| m.len()))
                    .collect::<Result<Vec<_>, _>>()
            }
        })
        .await
        .unwrap();
        assert_eq!(stats.len(), 1000);
        sh(&d, "stat entry-0001 entry-0999 > /dev/null").await;
        assert_eq!(
            m.meta_requests(),
            before,
            "the second ls -l and 1000 stats sent requests: {:?}",
            m.counters.snapshot()
        );
        m.unmount().await;
    })
    .await
}
