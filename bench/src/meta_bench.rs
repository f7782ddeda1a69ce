//! `renkei-bench meta`: the two metadata stores side by side in one run
//! (issue 16): a loopback federation whose meta server keeps its namespace
//! in sled, then one on a three-member etcd cluster on loopback
//! ([`fs_client::local::etcd`]), each doing the same work through the
//! client library in this process:
//!
//! - **create**: `files` empty files in one directory, one request at a time;
//! - **ls -l**: that directory listed with attributes (entries per second,
//!   median of [`LS_ROUNDS`] listings);
//! - **stat**: a lookup of every file, one at a time;
//! - **delete**: every file unlinked, one at a time;
//! - **put -r (bundled)**: a local tree of `files` small files uploaded with
//!   `put_tree` and bundles on (what `renkei put -r` and a mount's `cp -r`
//!   send: many files per commit).
//!
//! Every phase has a time bound; a phase that overruns fails the run naming
//! it. The report gives ops/s per store and etcd/sled; the goal
//! (etcd within 2x of sled for bundled work) is reported, not asserted.

use crate::tools_bench::{bytes_of, loadavg, now_utc};
use anyhow::Context;
use fs_client::local::etcd::EtcdCluster;
use fs_client::local::{self, LocalSpec};
use fs_client::{Client, ClientConfig};
use fs_proto::FileKind;
use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Listings of the big directory per store (the median is reported).
pub const LS_ROUNDS: usize = 3;

/// The phases, in the order they run.
pub const PHASES: &[&str] = &["create", "ls -l", "stat", "delete", "put -r (bundled)"];

/// What to run.
#[derive(Debug, Clone)]
pub struct MetaOptions {
    /// Files created, listed, stat'ed and deleted, and files of the tree.
    pub files: usize,
    /// Bound of each phase.
    pub phase_bound: Duration,
    /// Directory of renkei-meta and renkei-server.
    pub bin_dir: PathBuf,
    /// Scratch directory (the tree and the federations).
    pub scratch: PathBuf,
}

/// One phase on one store.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Phase {
    /// One of [`PHASES`].
    pub name: String,
    /// Operations counted (files, or entries listed).
    pub ops: u64,
    /// Seconds it took.
    pub secs: f64,
    /// ops / secs.
    pub ops_per_sec: f64,
}

/// Every phase on one store.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoreRun {
    /// `sled` or `etcd`.
    pub store: String,
    /// The phases, in [`PHASES`] order.
    pub phases: Vec<Phase>,
}

/// The whole run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MetaReport {
    /// When it ran (UTC).
    pub started: String,
    /// Load average before.
    pub load_before: String,
    /// Load average after.
    pub load_after: String,
    /// Files per phase.
    pub files: usize,
    /// Directories of the uploaded tree.
    pub tree_dirs: usize,
    /// Bytes of the uploaded tree.
    pub tree_bytes: u64,
    /// sled first, then etcd.
    pub runs: Vec<StoreRun>,
}

impl MetaReport {
    /// ops/s of `phase` on `store`.
    pub fn rate(&self, store: &str, phase: &str) -> Option<f64> {
        let run = self.runs.iter().find(|r| r.store == store)?;
        run.phases.iter().find(|p| p.name == phase).map(|p| p.ops_per_sec)
    }

    /// etcd ops/s over sled ops/s for `phase`.
    pub fn ratio(&self, phase: &str) -> Option<f64> {
        Some(self.rate("etcd", phase)? / self.rate("sled", phase)?.max(1e-9))
    }

    /// The markdown report.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## Metadata stores: sled vs etcd on loopback ({} files)\n", self.files);
        let _ = writeln!(
            s,
            "Started {}; load average {} before, {} after. One meta server and one file server \
             (real processes), the client library in the benchmark's process; etcd is three members \
             on loopback on the same disk. create/stat/delete send one request at a time.\n",
            self.started, self.load_before, self.load_after
        );
        let _ = writeln!(s, "| work | sled ops/s | etcd ops/s | etcd/sled |\n|---|---|---|---|");
        for name in PHASES {
            let what = match *name {
                "create" => format!("create ({} empty files, one directory)", self.files),
                "ls -l" => format!("ls -l (entries/s, {}-entry directory)", self.files),
                "stat" => format!("stat ({} lookups)", self.files),
                "delete" => format!("delete ({} unlinks)", self.files),
                _ => format!(
                    "put -r, bundled (files/s, {} files in {} dirs, {} KB)",
                    self.files,
                    self.tree_dirs,
                    self.tree_bytes / 1000
                ),
            };
            let cell = |store| self.rate(store, name).map(|r| format!("{r:.0}")).unwrap_or_else(|| "-".into());
            let ratio = self.ratio(name).map(|r| format!("{r:.2}")).unwrap_or_else(|| "-".into());
            let _ = writeln!(s, "| {what} | {} | {} | {ratio} |", cell("sled"), cell("etcd"));
        }
        if let Some(r) = self.ratio("put -r (bundled)") {
            let _ = writeln!(
                s,
                "\nGoal (reported, not asserted): etcd within 2x of sled for bundled work: etcd/sled = {r:.2}, {}.",
                if r >= 0.5 { "met" } else { "not met" }
            );
        }
        s
    }
}

/// Run `work` (which counts `ops`) within `bound`, timed.
async fn phase<F>(name: &str, store: &str, bound: Duration, work: F) -> anyhow::Result<Phase>
where
    F: Future<Output = anyhow::Result<(u64, Duration)>>,
{
    let (ops, took) = tokio::time::timeout(bound, work)
        .await
        .map_err(|_| anyhow::anyhow!("{store}: phase {name:?} did not finish within {bound:?}"))?
        .with_context(|| format!("{store}: phase {name:?}"))?;
    let secs = took.as_secs_f64().max(1e-9);
    let p = Phase { name: name.to_string(), ops, secs, ops_per_sec: ops as f64 / secs };
    eprintln!("{store}: {name}: {ops} in {secs:.2} s, {:.0}/s", p.ops_per_sec);
    Ok(p)
}

/// The local tree uploaded by the bundled phase: `files` files of 1..2 KB
/// over `files / 250` directories. Returns (directories, bytes).
fn make_tree(root: &Path, files: usize) -> anyhow::Result<(usize, u64)> {
    let dirs = files.div_ceil(250).max(1);
    let mut bytes = 0u64;
    for i in 0..files {
        let d = root.join(format!("d{:03}", i % dirs));
        std::fs::create_dir_all(&d).with_context(|| format!("mkdir {}", d.display()))?;
        let data = bytes_of(1000 + (i * 7919) % 1000, i as u64);
        bytes += data.len() as u64;
        let f = d.join(format!("f{i:05}"));
        std::fs::write(&f, data).with_context(|| format!("write {}", f.display()))?;
    }
    Ok((dirs, bytes))
}

/// Every phase on a fresh federation whose meta server gets `meta_toml`.
async fn run_store(o: &MetaOptions, store: &str, meta_toml: String, tree: &Path) -> anyhow::Result<StoreRun> {
    let fed = o.scratch.join(format!("federation-{store}"));
    let _ = std::fs::remove_dir_all(&fed);
    let spec = LocalSpec {
        dir: fed.clone(),
        sites: 1,
        servers_per_site: 1,
        user: "bench".into(),
        bin_dir: Some(o.bin_dir.clone()),
        env: Vec::new(),
        meta_toml,
        ha: false,
    };
    let state = local::up(&spec, Duration::from_secs(60)).await.with_context(|| format!("{store}: local up"))?;
    let result = async {
        let client = Client::connect(ClientConfig::load(&state.client_config)?).await?;
        anyhow::ensure!(client.config().bundle, "the client config has bundles off");
        let meta = client.meta();
        let dir = client.mkdir("/flat", false, 0o755).await?.ino;
        let names: Vec<String> = (0..o.files).map(|i| format!("f{i:05}")).collect();
        let n = names.len() as u64;
        let b = o.phase_bound;
        let mut phases = Vec::new();
        phases.push(
            phase("create", store, b, async {
                let t = Instant::now();
                for name in &names {
                    meta.create(dir, name, FileKind::Regular, 0o644, true)
                        .await
                        .with_context(|| format!("create {name}"))?;
                }
                Ok((n, t.elapsed()))
            })
            .await?,
        );
        phases.push(
            phase("ls -l", store, b, async {
                let mut times = Vec::new();
                for _ in 0..LS_ROUNDS {
                    let t = Instant::now();
                    let entries = meta.readdir_all(dir, true).await?;
                    times.push(t.elapsed());
                    anyhow::ensure!(entries.len() == names.len(), "listed {} of {} entries", entries.len(), n);
                    anyhow::ensure!(entries.iter().all(|e| e.attr.is_some()), "an entry came without attributes");
                }
                times.sort();
                Ok((n, times[times.len() / 2]))
            })
            .await?,
        );
        phases.push(
            phase("stat", store, b, async {
                let t = Instant::now();
                for name in &names {
                    let a = meta.lookup(dir, name).await.with_context(|| format!("stat {name}"))?;
                    anyhow::ensure!(a.kind == FileKind::Regular, "{name} is a {:?}", a.kind);
                }
                Ok((n, t.elapsed()))
            })
            .await?,
        );
        phases.push(
            phase("delete", store, b, async {
                let t = Instant::now();
                for name in &names {
                    meta.unlink(dir, name).await.with_context(|| format!("delete {name}"))?;
                }
                let took = t.elapsed();
                anyhow::ensure!(meta.readdir_all(dir, false).await?.is_empty(), "files left after deleting");
                Ok((n, took))
            })
            .await?,
        );
        phases.push(
            phase("put -r (bundled)", store, b, async {
                let t = Instant::now();
                let (files, _) = client.put_tree(tree, "/tree", &|_| {}).await?;
                Ok((files, t.elapsed()))
            })
            .await?,
        );
        anyhow::ensure!(phases[4].ops == n, "put -r uploaded {} of {n} files", phases[4].ops);
        anyhow::Ok(StoreRun { store: store.to_string(), phases })
    }
    .await;
    let down = local::down(&fed);
    let _ = std::fs::remove_dir_all(&fed);
    let run = result?;
    down.with_context(|| format!("{store}: local down"))?;
    Ok(run)
}

/// Run the benchmark: sled, then etcd (on a cluster started here and
/// stopped afterwards).
pub fn run(o: &MetaOptions) -> anyhow::Result<MetaReport> {
    anyhow::ensure!(o.files > 0, "--files must be at least 1");
    let started = now_utc();
    let load_before = loadavg();
    std::fs::create_dir_all(&o.scratch).with_context(|| format!("mkdir {}", o.scratch.display()))?;
    let tree = o.scratch.join("tree");
    let _ = std::fs::remove_dir_all(&tree);
    let (tree_dirs, tree_bytes) = make_tree(&tree, o.files)?;
    let rt = tokio::runtime::Runtime::new()?;
    let mut runs = vec![rt.block_on(run_store(o, "sled", String::new(), &tree))?];
    eprintln!("starting a three-member etcd cluster on loopback");
    let cluster = EtcdCluster::start().map_err(|e| anyhow::anyhow!("etcd cluster: {e}"))?;
    let etcd = rt.block_on(run_store(o, "etcd", cluster.store_toml("renkei-bench/meta/"), &tree));
    drop(cluster);
    runs.push(etcd?);
    let _ = std::fs::remove_dir_all(&tree);
    Ok(MetaReport { started, load_before, load_after: loadavg(), files: o.files, tree_dirs, tree_bytes, runs })
}
