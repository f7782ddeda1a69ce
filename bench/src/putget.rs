//! The core transfer benchmark: one large file put into and got out of a
//! local federation (real processes on loopback), side by side with `cp`
//! of the same bytes between directories of the same disk, in one run.
//! Reported as ratios to `cp`; medians of several rounds.

use anyhow::Context;
use fs_client::local::{self, LocalSpec};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What to measure.
#[derive(Debug, Clone)]
pub struct PutGetOptions {
    /// Bytes in the file.
    pub size: u64,
    /// Rounds (the median is reported).
    pub rounds: usize,
    /// Scratch directory (on the disk to measure).
    pub dir: PathBuf,
    /// Directory of renkei-meta / renkei-server.
    pub bin_dir: PathBuf,
}

/// Throughputs in MB/s (10^6 bytes per second), medians.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PutGetReport {
    /// File size in bytes.
    pub size: u64,
    /// Rounds measured.
    pub rounds: usize,
    /// `cp` into a new file, fsynced.
    pub cp_mb_s: f64,
    /// `renkei put` (durable on the server when it returns).
    pub put_mb_s: f64,
    /// `renkei get` (verified, fsynced local file).
    pub get_mb_s: f64,
}

impl PutGetReport {
    /// put / cp.
    pub fn put_ratio(&self) -> f64 {
        self.put_mb_s / self.cp_mb_s
    }
    /// get / cp.
    pub fn get_ratio(&self) -> f64 {
        self.get_mb_s / self.cp_mb_s
    }

    /// A markdown report.
    pub fn markdown(&self) -> String {
        format!(
            "## put/get of one {size} file on loopback (medians of {r})\n\n\
             | work | MB/s | ratio to cp |\n|---|---|---|\n\
             | cp (same disk, fsync) | {cp:.0} | 1.00 |\n\
             | renkei put | {put:.0} | {pr:.2} |\n\
             | renkei get | {get:.0} | {gr:.2} |\n",
            size = human(self.size),
            r = self.rounds,
            cp = self.cp_mb_s,
            put = self.put_mb_s,
            get = self.get_mb_s,
            pr = self.put_ratio(),
            gr = self.get_ratio(),
        )
    }
}

fn human(n: u64) -> String {
    if n >= 1 << 30 && n % (1 << 30) == 0 {
        format!("{} GiB", n >> 30)
    } else if n >= 1 << 20 {
        format!("{} MiB", n >> 20)
    } else {
        format!("{n} B")
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn mb_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

/// Write `size` pseudo-random (incompressible) bytes.
pub fn make_file(path: &Path, size: u64) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for w in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    f.get_ref().sync_all()?;
    Ok(())
}

fn cp_once(src: &Path, dst: &Path) -> anyhow::Result<Duration> {
    let _ = std::fs::remove_file(dst);
    let t = Instant::now();
    let st = std::process::Command::new("cp").arg(src).arg(dst).status().context("running cp")?;
    anyhow::ensure!(st.success(), "cp failed");
    std::fs::File::open(dst)?.sync_all()?;
    Ok(t.elapsed())
}

/// Run the benchmark.
pub async fn run(opts: &PutGetOptions) -> anyhow::Result<PutGetReport> {
    std::fs::create_dir_all(&opts.dir)?;
    let src = opts.dir.join("src.bin");
    eprintln!("writing a {} test file", human(opts.size));
    make_file(&src, opts.size)?;

    let fed_dir = opts.dir.join("federation");
    let spec = LocalSpec {
        dir: fed_dir.clone(),
        sites: 1,
        servers_per_site: 1,
        user: "bench".into(),
        bin_dir: Some(opts.bin_dir.clone()),
        env: Vec::new(),
        meta_toml: String::new(),
        ha: false,
    };
    let state = local::up(&spec, Duration::from_secs(30)).await?;
    let result = async {
        let client = fs_client::Client::connect(fs_client::ClientConfig::load(&state.client_config)?).await?;
        let (mut cp, mut put, mut get) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..opts.rounds {
            let d = cp_once(&src, &opts.dir.join("cp.bin"))?;
            cp.push(mb_s(opts.size, d));
            let _ = std::fs::remove_file(opts.dir.join("cp.bin"));

            let t = Instant::now();
            client.put_file(&src, "/bench.bin", &|_| {}).await?;
            put.push(mb_s(opts.size, t.elapsed()));

            let out = opts.dir.join("got.bin");
            let t = Instant::now();
            client.get_file("/bench.bin", &out, &|_| {}).await?;
            get.push(mb_s(opts.size, t.elapsed()));
            let _ = std::fs::remove_file(&out);
            eprintln!(
                "round {}: cp {:.0} MB/s, put {:.0} MB/s, get {:.0} MB/s",
                round + 1,
                cp[round],
                put[round],
                get[round]
            );
        }
        anyhow::Ok(PutGetReport {
            size: opts.size,
            rounds: opts.rounds,
            cp_mb_s: median(cp),
            put_mb_s: median(put),
            get_mb_s: median(get),
        })
    }
    .await;
    local::down(&fed_dir)?;
    let _ = std::fs::remove_dir_all(&fed_dir);
    let _ = std::fs::remove_file(&src);
    result
}
