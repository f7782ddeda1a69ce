//! pjdfstest against a mount, as root (acceptance 1).
//!
//! The mount passes each caller's credentials (`-o cred`, the local user of
//! `renkei local up` is an admin) with ids unmapped, so the suite's user
//! switching is seen by the meta server. Every test must pass except those
//! in `tests/pjdfstest-exclusions.toml`, each listed with its reason; a
//! listed test that passes fails the run too, so the list stays honest.
//!
//! The binary comes from `RENKEI_PJDFSTEST`, else `pjdfstest` on PATH
//! (`cargo install pjdfstest --version 0.2.2`; scripts/test.sh does it). The
//! suite switches to the users `nobody` and `tests`, which must exist.

use crate::common::{enabled, strict, TestMount};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use tests::procs::ProcFederation;
use tests::with_timeout;

#[derive(Deserialize)]
struct Exclusions {
    exclude: Vec<Exclusion>,
}

#[derive(Deserialize)]
struct Exclusion {
    test: String,
    reason: String,
}

const CONFIG: &str = r#"
[features]
posix_fallocate = {}
rename_ctime = {}
utime_now = {}
utimensat = {}

[settings]
naptime = 0.01
allow_remount = false

[dummy_auth]
entries = [["nobody", "nogroup"], ["tests", "tests"]]
"#;

fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RENKEI_PJDFSTEST") {
        return Some(PathBuf::from(p));
    }
    crate::common::tool("pjdfstest").then(|| PathBuf::from("pjdfstest"))
}

fn prerequisites() -> Result<PathBuf, String> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("pjdfstest needs root".into());
    }
    for user in ["nobody", "tests"] {
        let ok = std::process::Command::new("id").arg(user).output().is_ok_and(|o| o.status.success());
        if !ok {
            return Err(format!("user {user:?} is missing (useradd -M -U {user})"));
        }
    }
    binary().ok_or_else(|| "pjdfstest not found (cargo install pjdfstest, or set RENKEI_PJDFSTEST)".into())
}

/// Parse the runner's `name   ok|FAILED|skipped` lines.
fn results(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (name, verdict) = (w.next()?, w.next()?);
            (w.next().is_none() && name.contains("::") && matches!(verdict, "ok" | "FAILED" | "skipped"))
                .then(|| (name.to_string(), verdict.to_string()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pjdfstest_passes_on_the_mount() {
    if !enabled("pjdfstest_passes_on_the_mount") {
        return;
    }
    let bin = match prerequisites() {
        Ok(b) => b,
        Err(why) if strict() => panic!("pjdfstest: {why} (RENKEI_TEST_STRICT=1)"),
        Err(why) => return eprintln!("skipping pjdfstest: {why}"),
    };
    let excl_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pjdfstest-exclusions.toml");
    let excl: Exclusions = toml::from_str(&std::fs::read_to_string(&excl_path).unwrap()).unwrap();
    for e in &excl.exclude {
        assert!(!e.reason.trim().is_empty(), "exclusion {} has no reason", e.test);
    }
    let excluded: BTreeSet<String> = excl.exclude.iter().map(|e| e.test.clone()).collect();
    with_timeout(1800, async {
        let fed = ProcFederation::up(1).await;
        let c = fed.client(None).await;
        c.mkdir("/pjd", false, 0o755).await.unwrap();
        let m = TestMount::new(&fed, None, "/pjd", "cred,allow_other").await;
        let cfg = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(cfg.path(), CONFIG).unwrap();
        // The EXDEV cases link and rename into a second file system.
        let other = tempfile::tempdir().unwrap();
        let second = other.path().to_path_buf();
        // The EROFS cases remount the mount read-only with `mount -o
        // remount,ro`. A root mount's type is plain "fuse" (fuser mounts
        // it so), for which mount(8) hands a remount to mount.fuse3, which
        // tries to run the source ("renkei:/pjd") as a program; `-i` makes
        // mount(8) do the remount itself (MS_REMOUNT|MS_RDONLY, which FUSE
        // accepts). The suite runs `mount` from PATH.
        let tools = tempfile::tempdir().unwrap();
        let real = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|d| d.join("mount"))
            .find(|p| p.is_file())
            .expect("mount(8) on PATH");
        let wrapper = tools.path().join("mount");
        std::fs::write(&wrapper, format!("#!/bin/sh\nexec {} -i \"$@\"\n", real.display())).unwrap();
        std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let search = std::env::join_paths(
            std::iter::once(tools.path().to_path_buf())
                .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
        )
        .unwrap();
        // pjdfstest leaks descriptors of files open for writing in some
        // tests (on tmpfs too), after which a read-only remount is EBUSY:
        // the EROFS cases run in a process of their own, allowed to remount.
        let remount_cfg = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(remount_cfg.path(), CONFIG.replace("allow_remount = false", "allow_remount = true")).unwrap();
        let run = |cfgp: PathBuf, pattern: Option<&'static str>| {
            let (bin, path, second, search) = (bin.clone(), m.path.clone(), second.clone(), search.clone());
            crate::common::blocking(move || {
                let mut cmd = std::process::Command::new("timeout");
                cmd.arg("1500").arg(&bin).arg("-c").arg(&cfgp).arg("-p").arg(&path).arg("-s").arg(&second);
                cmd.args(pattern).current_dir(&path).env("PATH", &search);
                let out = cmd.output().expect("run pjdfstest");
                let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                let summary = text.lines().find(|l| l.starts_with("Summary:")).unwrap_or("no summary").to_string();
                // "Summary: F failed, S skipped, P passed, E expected failures, T total"
                let total: usize = summary
                    .trim_end_matches(" total")
                    .rsplit(", ")
                    .next()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or_else(|| panic!("no total in pjdfstest's summary {summary:?}:\n{text}"));
                let res = results(&text);
                assert_eq!(res.len(), total, "pjdfstest printed {} verdicts for {summary:?}:\n{text}", res.len());
                eprintln!("pjdfstest {}: {summary}", pattern.unwrap_or("(all)"));
                (res, text)
            })
        };
        let (mut res, mut text) = run(cfg.path().to_path_buf(), None).await;
        let (erofs, erofs_text) = run(remount_cfg.path().to_path_buf(), Some("erofs")).await;
        assert!(erofs.len() >= 13 && erofs.keys().all(|n| n.contains("erofs")), "the EROFS run: {erofs:?}");
        for (name, verdict) in erofs {
            assert_eq!(res.get(&name).map(String::as_str), Some("skipped"), "{name} ran without remounting");
            res.insert(name, verdict);
        }
        text.push_str(&erofs_text);
        // Every test of the suite has a verdict (pjdfstest 0.2.2 has 398).
        assert!(res.len() >= 398, "pjdfstest ran too few tests ({}):\n{text}", res.len());
        let bad: Vec<_> = res.iter().filter(|(n, v)| v.as_str() != "ok" && !excluded.contains(n.as_str())).collect();
        let stale: Vec<_> = excluded.iter().filter(|n| res.get(n.as_str()).map(String::as_str) == Some("ok")).collect();
        let passed = res.values().filter(|v| v.as_str() == "ok").count();
        eprintln!("pjdfstest: {passed} of {} passed, {} excluded", res.len(), excluded.len());
        m.unmount().await;
        assert!(bad.is_empty(), "pjdfstest failures or unlisted skips: {bad:?}\n{text}");
        assert!(stale.is_empty(), "excluded tests that pass now (remove them from {}): {stale:?}", excl_path.display());
    })
    .await
}
