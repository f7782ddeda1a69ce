//! Quotas on a mount (issue 12, acceptance 2): a user at a limit gets
//! EDQUOT from the syscall that would pass it (a write-back mount
//! acknowledges locally only within the room its lease told it), nothing a
//! syscall acknowledged is lost, `renkei quota` shows the usage with every
//! replica counted, and another user is unaffected.

use crate::common::{blocking, enabled, TestMount};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use tests::procs::{bin_dir, ProcFederation};
use tests::with_timeout;

const MIB: u64 = 1 << 20;

/// (files, bytes) of `user` from `renkei quota --json` run with `cfg`.
fn usage(cfg: &Path, user: Option<&str>) -> (u64, u64) {
    let mut args = vec!["--json", "quota"];
    args.extend(user);
    let out = Command::new(bin_dir().join("renkei")).env("RENKEI_CONFIG", cfg).args(&args).output().unwrap();
    assert!(out.status.success(), "renkei quota: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (v[0]["files"].as_u64().unwrap(), v[0]["bytes"].as_u64().unwrap())
}

/// Write `len` bytes of `fill` to `p` and close it; the errno of the first
/// failure (write or close).
fn write_file(p: &Path, fill: u8, len: u64) -> Result<(), i32> {
    let mut f = std::fs::File::create(p).map_err(|e| e.raw_os_error().unwrap_or(0))?;
    f.write_all(&vec![fill; len as usize]).map_err(|e| e.raw_os_error().unwrap_or(0))?;
    // close(2) reports what the meta server refused at the commit.
    let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
    // SAFETY: fd is ours, closed once.
    if unsafe { libc::close(fd) } != 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edquot_at_the_syscall_nothing_acknowledged_lost_other_users_unaffected() {
    if !enabled("edquot_at_the_syscall_nothing_acknowledged_lost_other_users_unaffected") {
        return;
    }
    with_timeout(180, async {
        let fed = ProcFederation::up(2).await;
        let who: serde_json::Value = serde_json::from_str(&fed.renkei_ok(None, &["--json", "whoami"])).unwrap();
        let me = who["name"].as_str().unwrap().to_string();
        let cfg = fed.state.client_config.clone();
        fed.renkei_ok(None, &["quota", "set", &me, "--bytes", "4MiB", "--files", "40"]);
        assert_eq!(usage(&cfg, None), (0, 0));

        let m = TestMount::new(&fed, Some("site1"), "/", "").await;
        let d = m.join("d");
        let (written, refused) = blocking(move || {
            std::fs::create_dir(&d).unwrap();
            // 1 MiB files until the quota refuses one, at write or close.
            let mut written = Vec::new();
            let mut refused = None;
            for i in 0..8u8 {
                match write_file(&d.join(format!("f{i}")), i, MIB) {
                    Ok(()) => written.push(i),
                    Err(e) => {
                        refused = Some(e);
                        break;
                    }
                }
            }
            (written, refused)
        })
        .await;
        assert_eq!(refused, Some(libc::EDQUOT), "a write past 4 MiB fails with EDQUOT (after {written:?})");
        assert!((3..=4).contains(&written.len()), "about 4 MiB fit: {written:?}");

        // Small files until the file limit: exactly 40 inodes, never more.
        let d = m.join("d");
        let touched = blocking(move || {
            let mut n = 0;
            for i in 0..60 {
                match std::fs::File::create(d.join(format!("s{i}"))) {
                    Ok(_) => n += 1,
                    Err(e) => {
                        assert_eq!(e.raw_os_error(), Some(libc::EDQUOT), "s{i}: {e}");
                        break;
                    }
                }
            }
            n
        })
        .await;
        assert!(touched < 60, "creating stopped at the file limit");
        // syncfs: everything acknowledged is committed.
        let d = m.join("d");
        blocking(move || {
            let f = std::fs::File::open(&d).unwrap();
            // SAFETY: a valid descriptor.
            assert_eq!(unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)) }, 0);
        })
        .await;
        let (files, bytes) = usage(&cfg, None);
        assert_eq!(files, 40, "the directory, the 1 MiB files (the refused one too, empty) and {touched} small ones");
        assert!(bytes <= 4 * MIB, "{bytes} bytes: the hard limit held");

        // Nothing acknowledged was lost: a fresh listing through the CLI has
        // every file whose close succeeded, with its bytes.
        let ls = fed.renkei_ok(None, &["--json", "ls", "/d"]);
        for i in &written {
            let out = fed.renkei_ok(None, &["--json", "stat", &format!("/d/f{i}")]);
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(v["size"].as_u64(), Some(MIB), "f{i} kept its bytes: {out}");
        }
        for i in 0..touched {
            assert!(ls.contains(&format!("\"s{i}\"")), "s{i} acknowledged and listed");
        }

        // A second copy at the other site would count its bytes twice:
        // refused with a clear message.
        let out = fed.renkei(None, &["rep", "-N", "2", "/d/f0"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "a copy past the quota fails: {text}");
        assert!(text.contains("quota"), "and says why: {text}");

        // Another user is not limited by this quota and sees only their own.
        fed.renkei_ok(None, &["ca", "issue", "--dir", &fed.dir().join("ca").to_string_lossy(), "--user", "bob"]);
        let bob_cfg = fed.dir().join("bob.toml");
        let text = std::fs::read_to_string(&cfg).unwrap().replace(&format!("/users/{me}."), "/users/bob.");
        assert!(text.contains("/users/bob."), "the client config names the user's files: {text}");
        std::fs::write(&bob_cfg, text).unwrap();
        let src = fed.dir().join("big");
        std::fs::write(&src, vec![9u8; 6 * MIB as usize]).unwrap();
        let out = Command::new(bin_dir().join("renkei"))
            .env("RENKEI_CONFIG", &bob_cfg)
            .args(["put", &src.to_string_lossy(), "/bob-big"])
            .output()
            .unwrap();
        assert!(out.status.success(), "bob writes 6 MiB: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(usage(&bob_cfg, None), (1, 6 * MIB));
        let out = Command::new(bin_dir().join("renkei"))
            .env("RENKEI_CONFIG", &bob_cfg)
            .args(["quota", &me])
            .output()
            .unwrap();
        assert!(!out.status.success(), "bob may not see another user's quota");
        assert!(String::from_utf8_lossy(&out.stderr).contains("only an admin"), "{out:?}");
        m.unmount().await;
        drop(fed);
    })
    .await
}
