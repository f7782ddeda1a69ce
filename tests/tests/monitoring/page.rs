//! The status page in headless Chromium: PoPs live, a killed server down
//! within the heartbeat bound, a read-only spool failing its write check.

use crate::common::{browser_available, curl, is_root, pop, Browser, POPS_SCRIPT, SERIAL};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tests::procs::ProcFederation;
use tests::with_timeout;

/// `host_timeout_ms` and `refresh_ms` as the page's own data says.
fn bounds(web: &str) -> (Duration, Duration) {
    let (code, body) = curl(&format!("{web}api/status"));
    assert_eq!(code, 200);
    let st: Value = serde_json::from_str(&body).expect("status JSON");
    let ms = |k: &str| Duration::from_millis(st[k].as_u64().unwrap_or_else(|| panic!("{k} in status")));
    (ms("host_timeout_ms"), ms("refresh_ms"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_shows_three_pops_live_then_a_killed_one_down_within_the_heartbeat_bound() {
    if !browser_available() {
        return;
    }
    let _one = SERIAL.lock().await;
    with_timeout(240, async {
        let fed = ProcFederation::up(3).await;
        let web = fed.state.web.clone().expect("`renkei local up` serves the status page");
        let (host_timeout, refresh) = bounds(&web);
        let browser = Browser::start().await;
        browser.client().goto(&web).await.expect("open the status page");

        let live = browser
            .until(Duration::from_secs(30), async || {
                let p = browser.eval(POPS_SCRIPT).await;
                let pops = p["pops"].as_array()?;
                let ok = pops.len() == 3
                    && pops.iter().all(|r| r["state"] == "live" && r["stateText"] == "LIVE" && r["checks"] == "ok");
                ok.then_some(p)
            })
            .await;
        let Some(live) = live else {
            panic!("three live PoPs with passing checks: {}", browser.eval(POPS_SCRIPT).await)
        };
        for (host, site) in [("pop1", "site1"), ("pop2", "site2"), ("pop3", "site3")] {
            let row = pop(&live, host).unwrap_or_else(|| panic!("{host} on the page"));
            assert_eq!(row["site"], site);
            assert!(row["heartbeat"].as_str().is_some_and(|h| h.ends_with("s ago")), "{row}");
        }
        let loaded_at = live["loadedAt"].clone();
        browser.screenshot("monitoring-three-pops-live.png").await;

        fed.kill("pop3");
        let killed = Instant::now();
        // Down once its last heartbeat is older than the bound; the page
        // notices at its next refresh. One more second for the heartbeat
        // interval and one for sampling and the browser.
        let bound = host_timeout + refresh + Duration::from_secs(2);
        let down = browser
            .until(bound + Duration::from_secs(10), async || {
                let p = browser.eval(POPS_SCRIPT).await;
                let row = pop(&p, "pop3")?;
                (row["state"] == "down" && row["stateText"] == "DOWN").then_some(p)
            })
            .await
            .expect("pop3 shown down");
        let took = killed.elapsed();
        eprintln!("pop3 shown DOWN {:.1} s after SIGKILL (bound {:.1} s)", took.as_secs_f64(), bound.as_secs_f64());
        assert!(took <= bound, "pop3 shown down after {took:?}, beyond the bound {bound:?}");
        for host in ["pop1", "pop2"] {
            assert_eq!(pop(&down, host).expect("row")["state"], "live", "{host} stays live");
        }
        assert_eq!(down["loadedAt"], loaded_at, "the page redrew itself without a reload");
        assert!(down["updates"].as_u64() > live["updates"].as_u64(), "the page kept refreshing");
        let events = browser
            .until(Duration::from_secs(5), async || {
                let p = browser.eval(POPS_SCRIPT).await;
                let ev = p["events"].as_array()?.clone();
                ev.iter().any(|e| e.as_str().is_some_and(|s| s.contains("pop3 is down"))).then_some(ev)
            })
            .await;
        assert!(events.is_some(), "recent errors list pop3 going down");
        browser.screenshot("monitoring-pop3-down.png").await;
        browser.close().await;
    })
    .await
}

/// A directory bind-mounted read-only onto itself until dropped.
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn mount(dir: &Path) -> ReadOnly {
        let run = |args: &[&str]| {
            let st = Command::new("mount").args(args).status().expect("run mount");
            assert!(st.success(), "mount {args:?}");
        };
        let d = dir.to_str().expect("utf-8 path");
        run(&["--bind", d, d]);
        let guard = ReadOnly(dir.to_path_buf());
        run(&["-o", "remount,bind,ro", d]);
        guard
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_spool_shows_a_failing_write_check_on_the_page_and_in_renkei_hosts() {
    if !browser_available() || !is_root() {
        return;
    }
    let _one = SERIAL.lock().await;
    with_timeout(240, async {
        let fed = ProcFederation::up(2).await;
        let web = fed.state.web.clone().expect("status page");
        let browser = Browser::start().await;
        browser.client().goto(&web).await.expect("open the status page");
        browser
            .until(Duration::from_secs(30), async || {
                let p = browser.eval(POPS_SCRIPT).await;
                let pops = p["pops"].as_array()?;
                (pops.len() == 2 && pops.iter().all(|r| r["checks"] == "ok")).then_some(())
            })
            .await
            .expect("both PoPs pass their checks first");

        let ro = ReadOnly::mount(&fed.dir().join("spool").join("pop2"));
        // Checks run every 10 s by default; the failure travels with the
        // next heartbeat and the page's next refresh.
        let failing = browser
            .until(Duration::from_secs(30), async || {
                let p = browser.eval(POPS_SCRIPT).await;
                let row = pop(&p, "pop2")?;
                (row["checks"] == "failing").then(|| row.clone())
            })
            .await
            .expect("pop2 shows a failing check");
        assert_eq!(failing["failing"], "write", "{failing}");
        let reason = failing["reasons"][0].as_str().expect("reason shown");
        assert!(reason.starts_with("write: cannot write a probe replica"), "{reason}");
        assert!(reason.contains("Read-only file system"), "{reason}");
        assert_eq!(failing["state"], "live", "a failing check is not a dead host");
        let page = browser.eval(POPS_SCRIPT).await;
        assert_eq!(pop(&page, "pop1").expect("pop1")["checks"], "ok");
        browser.screenshot("monitoring-read-only-spool.png").await;

        // The check's report reaches the page at once; `renkei hosts` shows
        // the problems of the server's next heartbeat.
        // (Looked at again at each line a process logs: pop2's next
        // heartbeat answered among them.)
        let hosts = fed
            .wait_until(Duration::from_secs(30), "pop2's failing check in renkei hosts", || async {
                let hosts = fed.renkei_ok(None, &["hosts"]);
                let line = hosts.lines().find(|l| l.starts_with("pop2")).expect("pop2 in renkei hosts");
                if line.contains("check write failed") {
                    Ok(hosts)
                } else {
                    Err(hosts)
                }
            })
            .await;
        let line = hosts.lines().find(|l| l.starts_with("pop2")).expect("pop2 in renkei hosts");
        assert!(line.contains("check write failed: cannot write a probe replica"), "{hosts}");
        assert!(line.contains("Read-only file system"), "{hosts}");
        let pop1 = hosts.lines().find(|l| l.starts_with("pop1")).expect("pop1 in renkei hosts");
        assert!(!pop1.contains("check"), "{hosts}");

        // Writable again: the check passes again and the problem is gone.
        drop(ro);
        browser
            .until(Duration::from_secs(30), async || {
                let p = browser.eval(POPS_SCRIPT).await;
                let row = pop(&p, "pop2")?;
                (row["checks"] == "ok" && row["problems"].as_array()?.is_empty()).then_some(())
            })
            .await
            .expect("pop2 passes again once its spool is writable");
        browser.close().await;
    })
    .await
}
