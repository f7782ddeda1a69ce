//! `ls -l` of a big directory through a fresh (cold) mount across the WAN
//! emulator, then again (warm), with the mount's request counters: issue 5's
//! acceptance 3 ("cold at most 5 RTT of waiting, warm zero requests").

use crate::wan::Wan;
use crate::wanfed::WanFederation;
use crate::wanfs_mount::CountedMount;
use anyhow::Context;
use fs_proto::FileKind;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// Parallel creates while filling the directory (not timed).
const FILL_PARALLEL: usize = 64;

/// One `ls -l`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listing {
    /// Wall time, seconds.
    pub secs: f64,
    /// Time the mount spent waiting for replies of the meta server
    /// meanwhile, seconds (the acceptance's "waiting").
    pub waited_secs: f64,
    /// Lines `ls -l` printed (entries + the "total" line).
    pub lines: usize,
    /// Requests the mount sent meanwhile, per kind.
    pub requests: BTreeMap<String, u64>,
}

impl Listing {
    /// Metadata requests (every kind not starting with `data.`).
    pub fn meta_requests(&self) -> u64 {
        self.requests.iter().filter(|(k, _)| fs_client::counters::is_meta_request(k)).map(|(_, v)| v).sum()
    }
}

/// Cold and warm.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LsResult {
    /// Entries in the directory.
    pub entries: usize,
    /// Configured RTT, ms.
    pub rtt_ms: f64,
    /// First `ls -l` from a fresh mount.
    pub cold: Listing,
    /// The second.
    pub warm: Listing,
}

fn delta(before: &BTreeMap<&'static str, u64>, after: &BTreeMap<&'static str, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0);
            (d > 0).then(|| (k.to_string(), d))
        })
        .collect()
}

fn ls_l(m: &CountedMount, dir: &Path) -> anyhow::Result<Listing> {
    let before = m.counters.snapshot();
    let waited = m.counters.meta_wait();
    let t = Instant::now();
    let out = Command::new("ls").arg("-l").arg(dir).output().context("running ls -l")?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(out.status.success(), "ls -l failed: {}", String::from_utf8_lossy(&out.stderr));
    let lines = out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
    let waited_secs = (m.counters.meta_wait() - waited).as_secs_f64();
    Ok(Listing { secs, waited_secs, lines, requests: delta(&before, &m.counters.snapshot()) })
}

/// Make `/ls<entries>` with `entries` empty files (a client at `b`, many
/// creates in flight), then list it from a new mount at `c`.
pub fn run(
    rt: &tokio::runtime::Runtime,
    wan: &Wan,
    fed: &WanFederation,
    entries: usize,
    rtt_ms: f64,
    scratch: &Path,
) -> anyhow::Result<LsResult> {
    let name = format!("ls{entries}");
    rt.block_on(async {
        let c = fed.client(wan, "b", "bench").await?;
        let dir = c.mkdir(&format!("/{name}"), false, 0o755).await?;
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..FILL_PARALLEL {
            let c = c.clone();
            tasks.spawn(async move {
                for i in (t..entries).step_by(FILL_PARALLEL) {
                    c.meta().create(dir.ino, &format!("entry-{i:05}"), FileKind::Regular, 0o644, true).await?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        anyhow::Ok(())
    })
    .context("filling the directory")?;
    let (cfg, _) = fed.client_config("c", "bench")?;
    let spill = scratch.join("spill-ls");
    std::fs::create_dir_all(&spill)?;
    let m = CountedMount::start(&wan.site("c")?, cfg, &scratch.join("mnt-c-ls"), &spill)?;
    let dir = m.mp.join(&name);
    let cold = ls_l(&m, &dir)?;
    let warm = ls_l(&m, &dir)?;
    drop(m);
    anyhow::ensure!(cold.lines == entries + 1, "cold ls -l printed {} lines for {entries} entries", cold.lines);
    Ok(LsResult { entries, rtt_ms, cold, warm })
}
