//! Real processes killed with SIGKILL (issue 2, acceptance 2 and 6).

use std::time::{Duration, Instant};
use tests::procs::ProcFederation;
use tests::{pattern, with_timeout};

fn hosts_json(fed: &ProcFederation) -> Vec<serde_json::Value> {
    let out = fed.renkei_ok(None, &["hosts", "--json"]);
    serde_json::from_str(&out).expect("hosts --json parses")
}

fn alive(fed: &ProcFederation, host: &str) -> bool {
    hosts_json(fed).iter().any(|h| h["host"] == host && h["alive"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_reports_a_killed_server_down_and_back() {
    with_timeout(120, async {
        let fed = ProcFederation::up(3).await;
        let hosts = hosts_json(&fed);
        assert_eq!(hosts.len(), 3);
        assert!(hosts.iter().all(|h| h["alive"] == true));
        let mut sites: Vec<&str> = hosts.iter().map(|h| h["site"].as_str().unwrap()).collect();
        sites.sort();
        assert_eq!(sites, ["site1", "site2", "site3"]);

        fed.kill("pop2");
        // Gone (its exit seen through a pidfd): its last heartbeat is the
        // one the meta server has, and liveness is judged when asked, so
        // it must be reported down exactly once the host timeout has run
        // from that heartbeat; no poll, no guess.
        let t = Instant::now();
        let last_beat = |fed: &ProcFederation| {
            hosts_json(fed).iter().find(|h| h["host"] == "pop2").expect("pop2 listed")["last_heartbeat_ms"]
                .as_u64()
                .expect("last_heartbeat_ms")
        };
        let cfg: toml::Value = toml::from_str(&std::fs::read_to_string(fed.dir().join("meta.toml")).unwrap()).unwrap();
        let timeout = cfg["host_timeout_ms"].as_integer().expect("host_timeout_ms in meta.toml") as u64;
        let mut last = last_beat(&fed);
        // A heartbeat sent just before the kill may still be read after the
        // first look: then the bound runs from it (once).
        for round in 0..2 {
            let now = fs_proto::Timestamp::now().as_millis();
            // time is the subject: the host timeout running from the last heartbeat.
            tokio::time::sleep(Duration::from_millis((last + timeout + 1).saturating_sub(now))).await;
            if !alive(&fed, "pop2") {
                break;
            }
            let later = last_beat(&fed);
            assert!(round == 0 && later > last, "pop2 still reported alive {timeout} ms after its last heartbeat");
            last = later;
        }
        assert!(!alive(&fed, "pop2"), "pop2 reported down");
        eprintln!("pop2 reported down {:.1} s after SIGKILL", t.elapsed().as_secs_f64());
        fed.restart().await;
        assert!(alive(&fed, "pop2"), "pop2 back after restart");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_files_survive_sigkill_of_meta_and_servers() {
    with_timeout(180, async {
        let fed = ProcFederation::up(2).await;
        let c = fed.client(None).await;
        c.mkdir("/keep", false, 0o755).await.unwrap();
        let mut files = Vec::new();
        for i in 0..40 {
            let data = pattern(i * 1013 % 70_000 + 1, i as u64);
            c.put_bytes(&data, &format!("/keep/f{i}")).await.expect("put acknowledged");
            files.push(data);
        }
        // Kill everything hard, right after the last acknowledgement.
        fed.kill("meta");
        fed.kill("pop1");
        fed.kill("pop2");
        fed.restart().await;
        let c = fed.client(None).await;
        let listing = c.list("/keep").await.expect("ls after restart");
        assert_eq!(listing.len(), files.len(), "every acknowledged file is listed");
        for (i, data) in files.iter().enumerate() {
            let got = c.get_bytes(&format!("/keep/f{i}")).await.unwrap_or_else(|e| panic!("f{i}: {e}"));
            assert!(&got == data, "f{i} differs after restart");
        }
        // The CLI sees the same.
        let out = fed.renkei_ok(None, &["ls", "/keep"]);
        assert_eq!(out.lines().count(), files.len());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_cut_by_killing_its_server_registers_nothing() {
    with_timeout(180, async {
        let fed = ProcFederation::up(1).await;
        let c = fed.client(None).await;
        let old = pattern(200_000, 1);
        c.put_bytes(&old, "/victim").await.unwrap();
        let before = c.stat("/victim").await.unwrap();

        // Start a large overwrite from a slow source and kill the server
        // while bytes are flowing.
        let (tx, rx) = tokio::io::duplex(1 << 16);
        let writer = {
            let c = c.clone();
            tokio::spawn(async move {
                let mut rx = rx;
                c.put_reader(&mut rx, "/victim", 0o644, &|_| {}).await
            })
        };
        // The feeder says when 16 MiB have gone into the 64 KiB pipe: the
        // writer has read (and sent on) nearly all of it, so bytes are
        // flowing to the server when it is killed.
        let (flowing_tx, flowing) = tokio::sync::oneshot::channel();
        let feeder = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut tx = tx;
            let mut flowing_tx = Some(flowing_tx);
            let block = pattern(1 << 20, 9);
            for i in 0..400 {
                if tx.write_all(&block).await.is_err() {
                    return;
                }
                if i == 16 {
                    let _ = flowing_tx.take().map(|t| t.send(()));
                }
                // pacing: the write goes on for a while, so the kill lands mid-stream.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        flowing.await.expect("the feeder wrote 16 MiB");
        fed.kill("pop1");
        let res = writer.await.unwrap();
        assert!(res.is_err(), "the cut write must fail, got {res:?}");
        feeder.abort();

        fed.restart().await;
        let c = fed.client(None).await;
        let after = c.stat("/victim").await.unwrap();
        assert_eq!(
            (after.gen, after.size, after.hash),
            (before.gen, before.size, before.hash),
            "no new generation registered"
        );
        let (_, reps) = c.where_is("/victim").await.unwrap();
        assert!(reps.iter().all(|r| r.gen == before.gen && r.hash == before.hash.unwrap()));
        assert!(c.get_bytes("/victim").await.unwrap() == old, "the previous contents are intact");
        // No partial file is left in the spool.
        let tmp = fed.dir().join("spool/pop1/tmp");
        let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().filter_map(Result::ok).collect();
        assert!(left.is_empty(), "unfinished writes left in {}: {left:?}", tmp.display());
    })
    .await
}

/// `renkei local up` right after `kill -9` of a file server (issue 19, bug
/// 4): the killed process may still be exiting, holding its port, while
/// the meta server still shows its last heartbeats. `local up` waits for it
/// to be gone, starts a new server and counts it only once that one
/// heartbeats; a server that cannot start is an error naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_up_right_after_kill_9_brings_the_server_back() {
    with_timeout(120, async {
        let fed = ProcFederation::up(1).await;
        let c = fed.client(None).await;
        c.put_bytes(b"before", "/before").await.unwrap();
        for round in 0..3 {
            let old = fed.pid("pop1").expect("running");
            // SAFETY: killing a process this federation started; no wait.
            unsafe { libc::kill(old, libc::SIGKILL) };
            let t = Instant::now();
            fed.try_restart(&[]).await.unwrap_or_else(|e| panic!("round {round}: local up failed: {e}"));
            let new = fed.pid("pop1").expect("a new server runs");
            assert_ne!(new, old, "round {round}: a new process");
            eprintln!("round {round}: pop1 back {:?} after kill -9", t.elapsed());
            // Written as a `renkei put` run now would (a new client), read
            // by the old one, whose cached connection to the killed server
            // is dead: a read dials again.
            let name = format!("/after{round}");
            let fresh = fed.client(None).await;
            fresh.put_bytes(name.as_bytes(), &name).await.unwrap_or_else(|e| panic!("round {round}: put: {e}"));
            assert_eq!(c.get_bytes(&name).await.unwrap(), name.as_bytes());
        }
        assert_eq!(c.get_bytes("/before").await.unwrap(), b"before");

        // A server that cannot start (its port taken by someone else) is
        // reported, with its log, and `local up` fails.
        fed.kill("pop1");
        let cfg = std::fs::read_to_string(fed.dir().join("pop1.toml")).unwrap();
        let listen: std::net::SocketAddr = cfg
            .lines()
            .find_map(|l| l.strip_prefix("listen = \"").and_then(|r| r.strip_suffix('"')))
            .expect("listen in pop1.toml")
            .parse()
            .unwrap();
        // `kill` returned once every thread of the server was gone, so its
        // port is free now.
        let squatter =
            std::net::UdpSocket::bind(listen).unwrap_or_else(|e| panic!("take the server's port {listen}: {e}"));
        let err = fed.try_restart(&[]).await.expect_err("the server cannot bind its port");
        let msg = err.to_string();
        eprintln!("local up with the port taken: {msg}");
        assert!(msg.contains("pop1"), "the error names the server: {msg}");
        drop(squatter);
        fed.restart().await;
    })
    .await
}

/// A meta server killed and started again on its address is noticed by its
/// peers within a round trip (it answers their old connections with a
/// stateless reset, its key being derived from its own), not after the idle
/// timeout: file servers heartbeat it again and a client's next call
/// re-dials at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_meta_server_is_noticed_before_the_idle_timeout() {
    with_timeout(120, async {
        let fed = ProcFederation::up(1).await;
        let c = fed.client(None).await;
        c.put_bytes(b"before", "/before").await.unwrap();
        let idle = Duration::from_millis(fs_proto::endpoint::Tuning::default().idle_timeout_ms);
        fed.kill("meta");
        let t = Instant::now();
        fed.restart().await;
        let back = t.elapsed();
        // The client's cached connection is dead; its call must not wait
        // for the idle timeout either.
        let t2 = Instant::now();
        assert_eq!(c.get_bytes("/before").await.unwrap(), b"before");
        let call = t2.elapsed();
        eprintln!("file server heartbeating the new meta after {back:?}; client call {call:?}");
        assert!(back < idle, "local up waited {back:?} for the file server (idle timeout {idle:?})");
        assert!(call < idle, "the client's first call took {call:?} (idle timeout {idle:?})");
    })
    .await
}

/// Issue 12, finding 8: a file server whose registration answer was lost
/// (the meta server died after committing the registration, before
/// answering) used to delete the replica, which was registered: the file's
/// only copy of its new generation was gone. The server now deletes a
/// replica only when the meta server said no; the spool's reconciliation
/// removes one that turns out unregistered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_registration_answer_was_lost_is_kept() {
    with_timeout(120, async {
        let fed = ProcFederation::up(1).await;
        fed.client(None).await.put_bytes(b"first", "/f").await.unwrap();
        fed.kill("meta");
        fed.restart_with(&[("RENKEI_CRASH_AT", "meta.register_replica.flushed")]).await;
        let data = pattern(300_000, 8);
        let writer = fed.client(None).await;
        let put = writer.put_bytes(&data, "/f").await;
        eprintln!("the put whose registration answer was lost: {put:?}");
        assert!(put.is_err(), "the meta server died before answering the registration");
        fed.wait_dead("meta", Duration::from_secs(30)).await;
        assert!(fed.log("meta").contains("crash point meta.register_replica.flushed reached"));
        fed.restart().await;
        let c = fed.client(None).await;
        let got = c.get_bytes("/f").await.unwrap_or_else(|e| panic!("the registered generation is unreadable: {e}"));
        assert!(got == data, "/f holds the registered bytes");
        let out = fed.renkei(None, &["fsck", "/"]);
        assert!(out.status.success(), "fsck / is clean: {}", String::from_utf8_lossy(&out.stdout));
    })
    .await
}
