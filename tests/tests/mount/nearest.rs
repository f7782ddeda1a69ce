//! Reads through the mount come from the nearest replica (issue 20): a
//! file with replicas at two sites, read through a mount at the second
//! site, is served by that site's file server, as the servers' own byte
//! counters show.

use crate::common::{blocking, enabled, TestMount};
use fs_client::replicate::RepOptions;
use std::time::Duration;
use tests::procs::ProcFederation;
use tests::{pattern, with_timeout};

/// Bytes `host` has sent as of now: what a heartbeat sent after this call
/// reports. Waits (bounded) for two heartbeats answered after it (the
/// server logs each answer): the second was sent after the first's answer,
/// so after this call, and the meta server recorded it before answering.
async fn sent(fed: &ProcFederation, c: &fs_client::Client, host: &str) -> u64 {
    let since = fed.heartbeats(host);
    fed.wait_heartbeats(host, since, 2, Duration::from_secs(15)).await;
    c.hosts().await.unwrap().into_iter().find(|h| h.host == host).expect("a known host").bytes_out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mount_reads_from_the_replica_at_its_own_site() {
    if !enabled("a_mount_reads_from_the_replica_at_its_own_site") {
        return;
    }
    with_timeout(180, async {
        let fed = ProcFederation::up(2).await;
        let c1 = fed.client(Some("site1")).await;
        let data = pattern(8 << 20, 5);
        c1.put_bytes(&data, "/both.bin").await.unwrap();
        let opts = RepOptions { to: Some("site2".into()), ..Default::default() };
        let r = c1.replicate(&["/both.bin".into()], &opts, &|_| {}).await.unwrap();
        assert_eq!(r.copied_files, 1);
        let (_, reps) = c1.where_is("/both.bin").await.unwrap();
        let mut sites: Vec<&str> = reps.iter().map(|r| r.server.site.as_str()).collect();
        sites.sort();
        assert_eq!(sites, ["site1", "site2"]);
        // Counters travel with heartbeats: start from ones sent after the
        // copy pop1 sent pop2.
        let pop1_0 = sent(&fed, &c1, "pop1").await;
        assert!(pop1_0 >= data.len() as u64, "pop1's heartbeat counts the copy it sent");
        let pop2_0 = sent(&fed, &c1, "pop2").await;
        let m = TestMount::new(&fed, Some("site2"), "/", "").await;
        let got = blocking({
            let p = m.join("both.bin");
            move || std::fs::read(p).unwrap()
        })
        .await;
        assert!(got == data);
        m.unmount().await;
        // Heartbeats sent after the read: both counters include it.
        let last = (sent(&fed, &c1, "pop1").await - pop1_0, sent(&fed, &c1, "pop2").await - pop2_0);
        eprintln!("after the read at site2: pop1 sent {} bytes, pop2 sent {}", last.0, last.1);
        assert!(last.1 >= data.len() as u64, "site2's server served the file: {last:?}");
        assert!(last.0 < data.len() as u64 / 10, "site1's server did not: {last:?}");
    })
    .await
}
