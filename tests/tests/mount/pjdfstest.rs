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
        let (path, cfgp) = (m.path.clone(), cfg.path().to_path_buf());
        let out = crate::common::blocking(move || {
            std::process::Command::new("timeout")
                .arg("1500")
                .arg(&bin)
                .arg("-c")
                .arg(&cfgp)
                .arg("-p")
                .arg(&path)
                .current_dir(&path)
                .output()
                .expect("run pjdfstest")
        })
        .await;
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let res = results(&text);
        let summary = text.lines().find(|l| l.starts_with("Summary:")).unwrap_or("no summary").to_string();
        eprintln!("pjdfstest: {summary}");
        assert!(res.len() > 300, "pjdfstest ran too few tests ({}):\n{text}", res.len());
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
