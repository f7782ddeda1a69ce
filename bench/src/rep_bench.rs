//! Replication of the Montage-like set between two sites (issue 6,
//! acceptance 5), side by side in one run:
//!
//! - **tar**: the same files as one tar stream over one TCP connection from
//!   the first site to the second, unpacked there and synced (the baseline
//!   users fell back to by hand in the original system);
//! - **renkei rep**: `rep -D <second site>` with bundling (many files per
//!   stream) and `-j` parallel streams;
//! - **per-file**: the same replication with one file per request (bundling
//!   off), sequentially like plain gfrep, and with `-j` parallel requests.
//!
//! On loopback (a local federation of real processes) or across the WAN
//! emulator ([`crate::wan`], a two-site `pair` link with a given RTT and
//! rate; meta server and source at site `a`, destination at `b`). Each
//! renkei run copies its own uploaded copy of the set, so every run starts
//! from the same state. The client's own traffic is reported beside, to
//! show the bytes went server to server.

use crate::dataset;
use crate::tar_stream;
use crate::wan::{preset, Wan};
use crate::wanfed::{WanFedSpec, WanFederation};
use anyhow::Context;
use fs_client::local::{self, LocalSpec};
use fs_client::replicate::RepOptions;
use fs_client::{Client, ClientConfig};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// An emulated link between the two sites.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// Round-trip time, ms.
    pub rtt_ms: f64,
    /// Rate, Mbit/s.
    pub rate_mbit: f64,
    /// MTU of the sites.
    pub mtu: u32,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RepBenchOptions {
    /// Fraction of the Montage-like set (0.25: 1,689 files, ~3.4 GB).
    pub scale: f64,
    /// Dataset seed.
    pub seed: u64,
    /// Across the emulator (None: loopback).
    pub link: Option<Link>,
    /// Parallel streams (`-j`).
    pub parallel: usize,
    /// Also run per-file replication (bundling off).
    pub per_file: bool,
    /// Directory of renkei-meta and renkei-server.
    pub bin_dir: PathBuf,
    /// Scratch directory (dataset, tar target, loopback federation).
    pub scratch: PathBuf,
}

/// One measured run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Run {
    /// What ran.
    pub name: String,
    /// Seconds.
    pub secs: f64,
    /// MB/s of file bytes (10^6).
    pub mb_s: f64,
    /// Bytes the orchestrating client sent and received (renkei runs).
    pub client_bytes: Option<u64>,
}

/// The results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RepBenchReport {
    /// "loopback" or the emulated link.
    pub link: String,
    /// Files in the set.
    pub files: usize,
    /// Bytes in the set.
    pub bytes: u64,
    /// Runs, tar first.
    pub runs: Vec<Run>,
}

impl RepBenchReport {
    /// A markdown table with ratios to tar.
    pub fn markdown(&self) -> String {
        let tar = self.runs.first().map(|r| r.mb_s).unwrap_or(f64::NAN);
        let mut s = format!(
            "## Replicating the Montage-like set ({} files, {:.2} GB) between two sites, {}\n\n\
             | work | s | MB/s | ratio to tar | client traffic |\n|---|---|---|---|---|\n",
            self.files,
            self.bytes as f64 / 1e9,
            self.link
        );
        for r in &self.runs {
            let client = r.client_bytes.map(|b| format!("{:.2} MB", b as f64 / 1e6)).unwrap_or_else(|| "-".into());
            s += &format!("| {} | {:.1} | {:.0} | {:.2} | {} |\n", r.name, r.secs, r.mb_s, r.mb_s / tar, client);
        }
        s
    }
}

/// Where the two sites are and how to reach them.
struct Bed {
    /// Client at the source site (uploads, orchestrates).
    client: Client,
    /// Name of the destination site.
    dst_site: String,
    /// The emulator and federation (kept alive; dropped last).
    _wan: Option<(WanFederation, Wan)>,
    /// The loopback federation's directory (stopped on drop).
    local_dir: Option<PathBuf>,
}

impl Drop for Bed {
    fn drop(&mut self) {
        if let Some(d) = &self.local_dir {
            let _ = local::down(d);
        }
    }
}

async fn bring_up(o: &RepBenchOptions) -> anyhow::Result<Bed> {
    match o.link {
        None => {
            let dir = o.scratch.join("fed");
            if dir.join("federation.json").exists() {
                let _ = local::down(&dir);
                std::fs::remove_dir_all(&dir)?;
            }
            let spec = LocalSpec {
                dir: dir.clone(),
                sites: 2,
                servers_per_site: 1,
                user: "bench".into(),
                bin_dir: Some(o.bin_dir.clone()),
                env: Vec::new(),
                meta_toml: String::new(),
                ha: false,
            };
            let state = local::up(&spec, Duration::from_secs(60)).await?;
            let client = Client::connect(ClientConfig::load(&state.client_config)?).await?;
            Ok(Bed { client, dst_site: "site2".into(), _wan: None, local_dir: Some(dir) })
        }
        Some(l) => {
            let mut topo = preset::pair(l.rtt_ms, Some(l.rate_mbit), 0.0)?;
            topo.mtu = l.mtu;
            let wan = Wan::start(topo)?;
            let spec = WanFedSpec {
                meta_site: "a".into(),
                server_sites: vec!["a".into(), "b".into()],
                bin_dir: o.bin_dir.clone(),
                heartbeat_ms: 1000,
            };
            let fed = WanFederation::start(&wan, spec)?;
            fed.wait_alive(&wan, "a", Duration::from_secs(60)).await?;
            let client = fed.client(&wan, "a", "bench").await?;
            Ok(Bed { client, dst_site: "b".into(), _wan: Some((fed, wan)), local_dir: None })
        }
    }
}

/// Run the benchmark.
pub async fn run(o: &RepBenchOptions) -> anyhow::Result<RepBenchReport> {
    let files = dataset::plan(o.scale, o.seed);
    let bytes = dataset::total_bytes(&files);
    let src = o.scratch.join("set");
    std::fs::create_dir_all(&src)?;
    dataset::write(&src, &files).context("writing the dataset")?;
    let bed = bring_up(o).await?;
    let link = match o.link {
        None => "loopback (real processes, one machine)".to_string(),
        Some(l) => format!("emulated WAN: {} ms RTT, {} Mbit/s, MTU {}", l.rtt_ms, l.rate_mbit, l.mtu),
    };

    let mut runs = Vec::new();
    let tar_secs = tar_over_tcp(o, &bed, &src)?;
    runs.push(Run {
        name: "tar over one TCP connection".into(),
        secs: tar_secs,
        mb_s: bytes as f64 / 1e6 / tar_secs,
        client_bytes: None,
    });

    let j = o.parallel.max(1);
    let mut variants = vec![(
        format!("renkei rep -j {j} (bundled)"),
        "/rep-bundled",
        RepOptions { parallel: j, ..Default::default() },
    )];
    if o.per_file {
        variants.push((
            "renkei rep per file (no bundling, -j 1)".into(),
            "/rep-file-j1",
            RepOptions { parallel: 1, batch_files: 1, ..Default::default() },
        ));
        variants.push((
            format!("renkei rep per file (no bundling, -j {j})"),
            "/rep-file-jn",
            RepOptions { parallel: j, batch_files: 1, ..Default::default() },
        ));
    }
    for (name, dir, mut opts) in variants {
        // Each run replicates its own copy of the set, uploaded at the
        // source site (not timed).
        bed.client.put_tree(&src, dir, &|_| {}).await.with_context(|| format!("uploading to {dir}"))?;
        opts.to = Some(bed.dst_site.clone());
        let rep = fresh_client(&bed).await?;
        let t = Instant::now();
        let r = rep.replicate(&[dir.to_string()], &opts, &|_| {}).await?;
        let secs = t.elapsed().as_secs_f64();
        anyhow::ensure!(r.failed.is_empty(), "{name}: {} files failed, e.g. {:?}", r.failed.len(), r.failed.first());
        anyhow::ensure!(r.copied_bytes == bytes, "{name}: copied {} of {bytes} bytes", r.copied_bytes);
        let (rx, tx) = rep.data().dialer().traffic().await;
        runs.push(Run { name, secs, mb_s: bytes as f64 / 1e6 / secs, client_bytes: Some(rx + tx) });
    }
    keep_logs(&bed);
    Ok(RepBenchReport { link, files: files.len(), bytes, runs })
}

/// With `RENKEI_BENCH_LOGS=DIR`, copy the servers' logs there (the
/// federation's own directory is removed at the end).
fn keep_logs(bed: &Bed) {
    let Some(dir) = std::env::var_os("RENKEI_BENCH_LOGS").map(PathBuf::from) else { return };
    let _ = std::fs::create_dir_all(&dir);
    let logs: Vec<(String, String)> = match (&bed._wan, &bed.local_dir) {
        (Some((fed, _)), _) => ["meta", "pop-a", "pop-b"].iter().map(|n| (n.to_string(), fed.log(n))).collect(),
        (None, Some(d)) => ["meta", "pop1", "pop2"]
            .iter()
            .map(|n| {
                (n.to_string(), std::fs::read_to_string(d.join("logs").join(format!("{n}.log"))).unwrap_or_default())
            })
            .collect(),
        _ => Vec::new(),
    };
    for (name, text) in logs {
        let _ = std::fs::write(dir.join(format!("{name}.log")), text);
    }
}

/// A new client with the same configuration (so its traffic counts only
/// the replication).
async fn fresh_client(bed: &Bed) -> anyhow::Result<Client> {
    match &bed._wan {
        Some((fed, wan)) => fed.client(wan, "a", "bench").await,
        None => Ok(Client::connect(bed.client.config().clone()).await?),
    }
}

/// tar the set at the source site, send it over one TCP connection to the
/// destination site, untar there and sync. Returns seconds.
fn tar_over_tcp(o: &RepBenchOptions, bed: &Bed, src: &Path) -> anyhow::Result<f64> {
    let dst = o.scratch.join("tar-dst");
    match &bed._wan {
        None => tar_stream::tar_on_loopback(src, &dst),
        Some((_, wan)) => tar_stream::tar_between_sites(wan, "a", &bed.dst_site, src, &dst),
    }
}
