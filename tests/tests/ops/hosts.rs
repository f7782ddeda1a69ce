//! `renkei host drain|undrain|rm` and `renkei rm --replica` (issue 17,
//! acceptance 4) with real processes: a drained server ends up holding no
//! replica (registered or on disk), every file still reads back whole and
//! keeps its number of copies, and no new data goes there; one replica can
//! be dropped, never the last good copy.

use super::common::{json, text};
use std::path::Path;
use std::time::Duration;
use tests::procs::ProcFederation;
use tests::{pattern, wait_dir_empty, with_timeout};

/// `renkei hosts --json`, the entry of `host`.
fn host_entry(fed: &ProcFederation, host: &str) -> Option<serde_json::Value> {
    let all = json(&fed.renkei_ok(None, &["--json", "hosts"]));
    all.as_array().unwrap().iter().find(|h| h["host"] == host).cloned()
}

/// Hosts holding the current generation of `path`.
fn holders(fed: &ProcFederation, path: &str) -> Vec<String> {
    let w = json(&fed.renkei_ok(None, &["--json", "where", path]));
    let mut v: Vec<String> = w[0]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["current"] == true)
        .map(|r| r["host"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// Wait until every replica file in `spool`'s data directory is gone (each
/// removal an inotify event).
fn wait_spool_empty(spool: &Path, bound: Duration) {
    let data = spool.join("data");
    for d in std::fs::read_dir(&data).unwrap_or_else(|e| panic!("{}: {e}", data.display())) {
        let d = d.unwrap().path();
        if d.is_dir() {
            wait_dir_empty(&d, bound);
        }
    }
}

/// The meta server's `host_timeout_ms` in the configuration `local up` writes.
const HOST_TIMEOUT: Duration = Duration::from_millis(5000);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_moves_every_replica_off_and_leaves_the_server_empty() {
    with_timeout(300, async {
        let fed = ProcFederation::up(3).await;
        // Files written at site2 land on pop2; one more gets a second copy
        // at site1, one has a copy count of 2.
        let at2 = fed.client(Some("site2")).await;
        at2.mkdir("/d", false, 0o755).await.unwrap();
        let mut files = Vec::new();
        for i in 0..24u64 {
            let p = format!("/d/f{i:02}");
            at2.put_bytes(&pattern(64 * 1024 + i as usize * 977, i), &p).await.unwrap();
            files.push((p, i));
        }
        for p in ["/d/f00", "/d/f01"] {
            assert_eq!(holders(&fed, p), vec!["pop2"]);
        }
        fed.renkei_ok(None, &["rep", "-D", "site1", "/d/f00"]);
        fed.renkei_ok(None, &["ncopy", "2", "/d/f01"]);
        fed.wait_until(Duration::from_secs(60), "the worker made f01's second copy", || async {
            let h = holders(&fed, "/d/f01");
            if h.len() >= 2 {
                Ok(())
            } else {
                Err(format!("{h:?}"))
            }
        })
        .await;
        // The registry's replica count is cached for 2 s: looked at again on
        // each log write (every heartbeat), exactly 24 once it is recounted.
        fed.wait_until(Duration::from_secs(15), "pop2 counted its 24 replicas", || async {
            match host_entry(&fed, "pop2").unwrap()["replicas"].as_u64() {
                Some(24) => Ok(()),
                other => Err(format!("pop2 counts {other:?} replicas")),
            }
        })
        .await;

        // Drain: returns once pop2 holds nothing.
        let out = json(&fed.renkei_ok(None, &["--json", "host", "drain", "pop2", "--wait", "--timeout", "120s"]));
        assert_eq!(out[0]["replicas"], 0, "{out}");
        let pop2 = host_entry(&fed, "pop2").unwrap();
        assert_eq!((pop2["replicas"].as_u64(), pop2["draining"].as_bool()), (Some(0), Some(true)), "{pop2}");
        // Every file reads back whole from elsewhere and keeps its copies.
        let c = fed.client(None).await;
        for (p, i) in &files {
            let bytes = c.get_bytes(p).await.unwrap_or_else(|e| panic!("{p} unreadable after the drain: {e}"));
            assert_eq!(bytes, pattern(64 * 1024 + *i as usize * 977, *i), "{p} kept its bytes");
            let h = holders(&fed, p);
            assert!(!h.contains(&"pop2".to_string()), "{p} still on pop2: {h:?}");
            let want = if p == "/d/f00" || p == "/d/f01" { 2 } else { 1 };
            assert_eq!(h.len(), want, "{p} kept {want} copies: {h:?}");
        }
        fed.assert_fsck_clean();
        // The server deletes what it held (after the GC grace).
        wait_spool_empty(&fed.dir().join("spool").join("pop2"), Duration::from_secs(60));

        // A drained server gets no new data: not a write from its own site,
        // not a copy.
        at2.put_bytes(b"after the drain", "/d/new").await.unwrap();
        assert_ne!(holders(&fed, "/d/new"), vec!["pop2"]);
        let out = fed.renkei(None, &["rep", "-D", "pop2", "/d/new"]);
        assert!(!out.status.success() || !holders(&fed, "/d/new").contains(&"pop2".to_string()), "{}", text(&out));
        assert!(!holders(&fed, "/d/new").contains(&"pop2".to_string()));

        // A host is forgotten only once it is stopped (and empty).
        let out = fed.renkei(None, &["host", "rm", "pop2"]);
        assert!(!out.status.success() && text(&out).contains("is alive"), "{}", text(&out));
        let out = fed.renkei(None, &["host", "rm", "pop1"]);
        assert!(!out.status.success(), "pop1 holds replicas and is alive: {}", text(&out));
        fed.kill("pop2");
        // pop2 is counted down once the host timeout (5 s, `local up`'s
        // meta.toml) has run since its last heartbeat: looked at again on
        // each log write (pop1's heartbeats go on), bounded.
        fed.wait_until(HOST_TIMEOUT * 3, "pop2 counted down after the host timeout", || async {
            match host_entry(&fed, "pop2").unwrap()["alive"].as_bool() {
                Some(false) => Ok(()),
                other => Err(format!("pop2 alive: {other:?}")),
            }
        })
        .await;
        fed.renkei_ok(None, &["host", "rm", "pop2"]);
        assert!(host_entry(&fed, "pop2").is_none(), "pop2 forgotten");

        // Undrain takes a host back.
        let out = json(&fed.renkei_ok(None, &["--json", "host", "drain", "pop3"]));
        assert_eq!(out[0]["draining"], true, "{out}");
        let out = json(&fed.renkei_ok(None, &["--json", "host", "undrain", "pop3"]));
        assert_eq!(out[0]["draining"], false, "{out}");
        let out = fed.renkei(None, &["host", "drain", "nosuchhost"]);
        assert!(!out.status.success() && text(&out).contains("no file server named"), "{}", text(&out));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rm_replica_drops_one_copy_but_never_the_last() {
    with_timeout(180, async {
        let fed = ProcFederation::up(2).await;
        let c = fed.client(None).await;
        let data = pattern(300_000, 7);
        c.put_bytes(&data, "/f").await.unwrap();
        fed.renkei_ok(None, &["rep", "-N", "2", "/f"]);
        assert_eq!(holders(&fed, "/f"), vec!["pop1", "pop2"]);

        // Someone else's file: refused.
        let carol = fed.user_config("carol");
        let out = fed.renkei_as(&carol, &["rm", "--replica", "pop2", "/f"]);
        assert!(!out.status.success() && text(&out).contains("owner"), "{}", text(&out));

        // One of two: dropped; the file stays and reads whole.
        fed.renkei_ok(None, &["rm", "--replica", "pop2", "/f"]);
        assert_eq!(holders(&fed, "/f"), vec!["pop1"]);
        assert_eq!(c.get_bytes("/f").await.unwrap(), data);
        // The last one: refused, with why.
        let out = fed.renkei(None, &["rm", "--replica", "pop1", "/f"]);
        let t = text(&out);
        assert!(!out.status.success(), "dropping the last copy must fail: {t}");
        assert!(t.contains("last good copy"), "{t}");
        assert_eq!(holders(&fed, "/f"), vec!["pop1"]);
        assert_eq!(c.get_bytes("/f").await.unwrap(), data);
        // A host without a replica: says so.
        let out = fed.renkei(None, &["rm", "--replica", "pop2", "/f"]);
        assert!(!out.status.success() && text(&out).contains("holds no replica"), "{}", text(&out));
        // The dropped copy leaves pop2's disk after the GC grace.
        wait_spool_empty(&fed.dir().join("spool").join("pop2"), Duration::from_secs(60));
    })
    .await
}
