//! Copy counts kept by the meta server's background worker (issue 6,
//! acceptance 2): new files in an `ncopy 2` directory reach 2 replicas by
//! themselves; a holder down past the grace period is replaced elsewhere;
//! when it returns the surplus is removed; the backlog is reported.

use crate::common::{good_sites, replicas, write_tree};
use std::time::Duration;
use tests::cluster::Cluster;
use tests::with_timeout;

const GRACE_MS: u64 = 2_000;

fn fast_worker(c: &mut fs_meta::MetaConfig) {
    c.host_timeout_ms = 1_500;
    c.replica_down_grace_ms = GRACE_MS;
    c.replication_interval_ms = 1_000;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ncopy_directory_keeps_two_copies_through_a_server_outage() {
    with_timeout(180, async {
        let mut cluster = Cluster::builder().sites(3).meta_config(fast_worker).start().await;
        let c = cluster.client("alice", "site1").await;
        c.mkdir("/keep", false, 0o755).await.unwrap();
        c.mkdir("/plain", false, 0o755).await.unwrap();
        assert_eq!(c.set_ncopy("/keep", 2, false).await.unwrap(), 1);
        // Written after the copy count was set: inherited, no command needed.
        let kept = write_tree(&c, "/keep", 24, |i| 1000 + i * 4093).await;
        let plain = write_tree(&c, "/plain", 5, |i| 10 + i).await;
        assert!(kept.iter().all(|f| !f.path.is_empty()));
        assert_eq!(c.stat(&kept[3].path).await.unwrap().ncopy, 2, "inherited from the directory");
        let inos: Vec<u64> = kept.iter().map(|f| f.ino).collect();

        cluster
            .wait_until(Duration::from_secs(30), "2 replicas on 2 sites for every file", || async {
                let reps = replicas(&c, &inos).await;
                for f in &kept {
                    let (gen, r) = &reps[&f.ino];
                    let sites = good_sites(*gen, r);
                    if sites.len() != 2 || sites[0] == sites[1] || r.len() != 2 {
                        return Err(format!("{}: {sites:?}", f.path));
                    }
                }
                Ok(())
            })
            .await;
        // Files that asked for nothing keep their single replica.
        let plain_reps = replicas(&c, &plain.iter().map(|f| f.ino).collect::<Vec<_>>()).await;
        assert!(plain_reps.values().all(|(_, r)| r.len() == 1), "no copies for files without a copy count");
        let status = c.replication_status().await.unwrap();
        assert!(status.enabled && status.copies_done >= 24, "{status:?}");
        assert_eq!((status.backlog_files, status.stuck_files), (0, 0), "{status:?}");

        // Stop a holder other than the writer's site (pop1 holds them all).
        let before = replicas(&c, &inos).await;
        let on_pop2: Vec<u64> =
            inos.iter().copied().filter(|i| before[i].1.iter().any(|r| r.server.host == "pop2")).collect();
        assert!(!on_pop2.is_empty(), "placement spread copies over pop2 and pop3");
        cluster.stop_server(1).await;
        let stopped = std::time::Instant::now();
        cluster
            .wait_until(Duration::from_secs(30), "copies of pop2's files made elsewhere", || async {
                let reps = replicas(&c, &inos).await;
                for f in &kept {
                    let (gen, r) = &reps[&f.ino];
                    if good_sites(*gen, r) != ["site1", "site3"] {
                        return Err(format!("{}: {:?}", f.path, good_sites(*gen, r)));
                    }
                }
                Ok(())
            })
            .await;
        // Down is counted from the last heartbeat (every 300 ms).
        assert!(
            stopped.elapsed() >= Duration::from_millis(GRACE_MS - 400),
            "replaced only after the grace period ({:?})",
            stopped.elapsed()
        );
        let status = c.replication_status().await.unwrap();
        assert_eq!(status.hosts_lost, ["pop2"], "{status:?}");
        // pop2's records are kept while it is away (it may come back).
        let away = replicas(&c, &on_pop2).await;
        assert!(away.values().all(|(_, r)| r.len() == 3 && r.iter().any(|x| x.server.host == "pop2" && !x.alive)));

        // pop2 returns: its replicas count again, and the surplus goes.
        cluster.restart_server(1).await;
        cluster
            .wait_until(Duration::from_secs(30), "surplus removed after pop2 returned", || async {
                let reps = replicas(&c, &inos).await;
                for f in &kept {
                    let (gen, r) = &reps[&f.ino];
                    let sites = good_sites(*gen, r);
                    if r.len() != 2 || sites.len() != 2 || sites[0] == sites[1] {
                        return Err(format!("{}: {} replicas on {sites:?}", f.path, r.len()));
                    }
                }
                Ok(())
            })
            .await;
        let status = c.replication_status().await.unwrap();
        assert!(status.removed >= on_pop2.len() as u64, "{status:?}");
        assert!(status.hosts_lost.is_empty(), "{status:?}");
        // Every file still reads back intact, from wherever.
        for f in &kept {
            assert!(c.get_bytes(&f.path).await.unwrap() == f.data, "{}", f.path);
        }
        cluster.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_copy_count_is_reported_as_backlog() {
    with_timeout(60, async {
        let cluster = Cluster::builder().sites(2).meta_config(fast_worker).start().await;
        let c = cluster.client("alice", "site1").await;
        let files = write_tree(&c, "/many", 6, |i| 5000 + i).await;
        // Three copies on a two-server federation: one can never be made.
        // (The directory, its 6 subdirectories and 6 files.)
        assert_eq!(c.set_ncopy("/many", 3, true).await.unwrap(), 13);
        let status = cluster
            .wait_until(Duration::from_secs(20), "backlog reported", || async {
                let s = c.replication_status().await.map_err(|e| e.to_string())?;
                if s.stuck_files == 6 && s.copies_done >= 6 {
                    Ok(s)
                } else {
                    Err(format!("{s:?}"))
                }
            })
            .await;
        assert_eq!(status.backlog_files, 6, "{status:?}");
        assert_eq!(status.backlog_bytes, files.iter().map(|f| f.data.len() as u64).sum::<u64>(), "{status:?}");
        // The second copy was still made for each.
        let reps = replicas(&c, &files.iter().map(|f| f.ino).collect::<Vec<_>>()).await;
        assert!(reps.values().all(|(g, r)| good_sites(*g, r) == ["site1", "site2"]));
        cluster.shutdown().await;
    })
    .await
}

/// A pass woken by a write looks at the written file alone, not at the
/// whole namespace: a burst of writes into a large namespace costs the
/// worker work in proportion to the burst (the meta server spent most of
/// a 10,000-file `tar x` rescanning every file before). The file still
/// gets its copies, and the totals still count every file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_woken_by_a_write_looks_at_the_written_file_alone() {
    with_timeout(120, async {
        // No pass over everything by the clock during the test.
        let cluster = Cluster::builder().sites(2).meta_config(|c| c.replication_interval_ms = 3_600_000).start().await;
        let c = cluster.client("alice", "site1").await;
        for d in ["/keep", "/later"] {
            c.mkdir(d, false, 0o755).await.unwrap();
            c.set_ncopy(d, 2, false).await.unwrap();
        }
        let many = write_tree(&c, "/keep", 40, |i| 100 + i).await;
        let inos: Vec<u64> = many.iter().map(|f| f.ino).collect();
        cluster
            .wait_until(Duration::from_secs(30), "2 replicas of each of 40 files", || async {
                let reps = replicas(&c, &inos).await;
                match reps.values().filter(|(_, r)| r.len() != 2).count() {
                    0 => Ok(()),
                    n => Err(format!("{n} files short")),
                }
            })
            .await;
        let one = c.put_bytes(&tests::pattern(5000, 9), "/later/one").await.unwrap().ino;
        let status = cluster
            .wait_until(Duration::from_secs(30), "the new file copied and the pass over", || async {
                let reps = replicas(&c, &[one]).await;
                let s = c.replication_status().await.map_err(|e| e.to_string())?;
                if reps[&one].1.len() == 2 && s.in_flight == 0 {
                    Ok(s)
                } else {
                    Err(format!("{:?}, {s:?}", reps[&one].1.len()))
                }
            })
            .await;
        assert_eq!(status.files_checked, 1, "the pass looked at the written file only: {status:?}");
        assert_eq!((status.backlog_files, status.stuck_files), (0, 0), "{status:?}");
        assert!(status.copies_done >= 41, "{status:?}");
    })
    .await
}
