//! Killing the destination server in the middle of `renkei rep` (issue 6,
//! acceptance 3), with real processes: re-running the same command after a
//! restart completes the job and copies only the remainder, and no
//! incomplete replica was ever registered.

use crate::common::{host_bytes, replicas};
use std::process::{Command, Stdio};
use std::time::Duration;
use tests::procs::{bin_dir, ProcFederation};
use tests::{pattern, with_timeout};

const FILES: usize = 400;
const SIZE: usize = 256 * 1024;

fn rep_json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "rep --json output does not parse ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

async fn on_pop2(c: &fs_client::Client, inos: &[u64]) -> Vec<u64> {
    let reps = replicas(c, inos).await;
    inos.iter().copied().filter(|i| reps[i].1.iter().any(|r| r.server.host == "pop2" && r.gen == reps[i].0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_destination_resumes_with_only_the_remainder() {
    with_timeout(300, async {
        let fed = ProcFederation::up(2).await;
        let c = fed.client(None).await;
        c.mkdir("/big", false, 0o755).await.unwrap();
        let mut inos = Vec::new();
        for i in 0..FILES {
            let a = c.put_bytes(&pattern(SIZE, i as u64), &format!("/big/f{i:03}")).await.unwrap();
            inos.push(a.ino);
        }
        let total = (FILES * SIZE) as u64;

        // One stream of few files at a time, so the run is long enough to
        // cut in the middle.
        let cfg = fed.dir().join("client.toml");
        let child = Command::new(bin_dir().join("renkei"))
            .env("RENKEI_CONFIG", &cfg)
            .args(["rep", "-D", "site2", "-j", "1", "--batch-files", "4", "--json", "/big"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start renkei rep");
        let done_before_kill = fed
            .wait_until(Duration::from_secs(120), "a part of the files copied", || async {
                let n = on_pop2(&c, &inos).await.len();
                if n >= FILES / 5 {
                    Ok(n)
                } else {
                    Err(format!("{n} copied"))
                }
            })
            .await;
        fed.kill("pop2");
        assert!(done_before_kill < FILES * 4 / 5, "the run finished too soon to be cut ({done_before_kill} files)");
        // Its exit is the event (waited for on the blocking pool, bounded).
        let first = tokio::time::timeout(
            Duration::from_secs(90),
            tokio::task::spawn_blocking(move || child.wait_with_output()),
        )
        .await
        .expect("rep gave up within 90 s after its destination died")
        .expect("waiter")
        .expect("rep's output");
        assert!(!first.status.success(), "the cut run reports failure");
        let first = rep_json(&first);
        let failed = first["failed"].as_array().unwrap().len();
        assert!(failed > 0 && first["copied_files"].as_u64().unwrap() < FILES as u64, "{first}");
        let stderr_hint = first["failed"][0]["reason"].as_str().unwrap_or_default().to_string();
        assert!(stderr_hint.contains("pop2"), "failures name the destination: {stderr_hint}");

        fed.restart().await;
        let c = fed.client(None).await;
        let registered = on_pop2(&c, &inos).await;
        assert!(registered.len() >= done_before_kill && registered.len() < FILES, "{} registered", registered.len());
        // Every replica registered on pop2 is complete and verifies there.
        let fsck = fed.renkei(None, &["fsck", "--json", "/big"]);
        let fsck_json: serde_json::Value = serde_json::from_slice(&fsck.stdout).expect("fsck --json");
        assert!(fsck.status.success(), "{fsck_json}");
        assert_eq!(fsck_json["verified"].as_u64(), Some((FILES + registered.len()) as u64), "{fsck_json}");
        assert_eq!(fsck_json["good"], fsck_json["verified"]);
        assert!(std::fs::read_dir(fed.dir().join("spool/pop2/tmp")).unwrap().next().is_none(), "no partial file");

        // The same command again: only the remainder moves.
        let (pop2_in0, _) = host_bytes(&c, "pop2").await;
        let second = fed.renkei(None, &["rep", "-D", "site2", "--json", "/big"]);
        let out = rep_json(&second);
        assert!(second.status.success(), "{out}");
        let remainder = (FILES - registered.len()) as u64;
        assert_eq!(out["satisfied"].as_u64(), Some(registered.len() as u64), "{out}");
        assert_eq!(out["copied_files"].as_u64().unwrap() + out["reused_files"].as_u64().unwrap(), remainder, "{out}");
        assert_eq!(out["copied_bytes"].as_u64(), Some(out["copied_files"].as_u64().unwrap() * SIZE as u64), "{out}");
        assert!(out["failed"].as_array().unwrap().is_empty(), "{out}");
        // pop2 itself received about the remainder, not the whole set.
        let moved = out["copied_bytes"].as_u64().unwrap();
        let pop2_in = fed
            .wait_until(Duration::from_secs(10), "pop2 heartbeat counters", || async {
                let (b, _) = host_bytes(&c, "pop2").await;
                if b - pop2_in0 >= moved {
                    Ok(b - pop2_in0)
                } else {
                    Err(format!("{b}"))
                }
            })
            .await;
        assert!(pop2_in < moved + (2 << 20) && pop2_in < total, "pop2 received {pop2_in} for {moved}");

        assert_eq!(on_pop2(&c, &inos).await.len(), FILES);
        let fsck = fed.renkei(None, &["fsck", "/big"]);
        assert!(fsck.status.success(), "{}", String::from_utf8_lossy(&fsck.stdout));
    })
    .await
}
