//! Figure 6 on the emulated topology: the Montage-like set ([`crate::dataset`], scaled) copied to
//! titech1 from another PoP, the meta server at titech1, four ways over the same path:
//!
//! - **tar**: one tar stream over one TCP connection, untarred at titech1 and synced (what the
//!   paper's users did by hand; the baseline);
//! - **renkei rep**: `rep -D titech1` of a copy held at the source (bundled, `-j` streams);
//! - **mount**: `cp -r` out of a fresh renkei mount at titech1 onto its local disk, then `sync -f`;
//! - **per file**: `rep` one file per request, one at a time (what plain gfrep does);
//! - **Gfarm** ([`super::gfarm`], gfmd at titech1, a gfsd at each source): the paper's
//!   `gfrep -D titech1` of the set, and a per-file copy (one `gfrep` process per file).
//!
//! Each copy reads its own uploaded copy of the set (uploaded by a client at the source, so only
//! the source's file server, or gfsd, holds it; untimed), and checks it moved every byte.

use super::gfarm::Gfarm;
use super::{PaperOptions, DATA_USER, META_SITE};
use crate::dataset;
use crate::mount_bench::drop_caches;
use crate::tar_stream::tar_between_sites;
use crate::wan::preset::{renkei2011_rate_mbyte, Tuning};
use crate::wan::Wan;
use crate::wanfed::WanFederation;
use crate::wanfs_mount::BinMount;
use anyhow::Context;
use fs_client::replicate::RepOptions;
use serde::Serialize;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tracing::info;

/// The set copied.
#[derive(Debug, Clone, Serialize)]
pub struct Dataset {
    /// Fraction of the paper's 6,756 files / ~14 GB.
    pub scale: f64,
    /// Files.
    pub files: usize,
    /// Bytes.
    pub bytes: u64,
}

/// One source PoP.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Source PoP (the destination is titech1).
    pub from: String,
    /// The emulated link's rate from -> titech1 (the paper's Table 4 x scale), MB/s.
    pub link_mb_s: f64,
    /// One tar stream over one TCP connection, untarred and synced, MB/s.
    pub tar_mb_s: f64,
    /// `renkei rep -D titech1 -j N`, bundled, MB/s.
    pub renkei_rep_mb_s: f64,
    /// `cp -r` out of a fresh mount at titech1, plus `sync -f`, MB/s.
    pub renkei_mount_mb_s: f64,
    /// `renkei rep` one file per request, one at a time, MB/s.
    pub per_file_mb_s: f64,
    /// Gfarm's `gfrep -D titech1` of the set (one file at a time: its default with one source and
    /// one destination host), MB/s; `None` if Gfarm did not run (the report's notes say why).
    pub gfarm_gfrep_mb_s: Option<f64>,
    /// Gfarm per file: one `gfrep -D titech1 FILE` process per file, one after another, MB/s.
    pub gfarm_per_file_mb_s: Option<f64>,
}

impl Row {
    /// renkei rep over Gfarm's per-file copy (acceptance 4 wants at least 5 on the WAN paths).
    pub fn renkei_over_gfarm_per_file(&self) -> Option<f64> {
        self.gfarm_per_file_mb_s.map(|g| self.renkei_rep_mb_s / g)
    }
}

fn mb_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

/// Copy the set to titech1 from each of `o.fig6_from`. What Gfarm could not measure, and why,
/// goes to `notes`.
pub fn run(
    rt: &tokio::runtime::Runtime,
    wan: &Wan,
    fed: &WanFederation,
    o: &PaperOptions,
    notes: &mut Vec<String>,
) -> anyhow::Result<(Dataset, Vec<Row>)> {
    let files = dataset::plan(o.dataset_scale, o.seed);
    let bytes = dataset::total_bytes(&files);
    let set = o.scratch.join("set");
    info!(scale = o.dataset_scale, files = files.len(), bytes, "writing the Montage-like set");
    dataset::write(&set, &files).context("writing the dataset")?;
    let d = Dataset { scale: o.dataset_scale, files: files.len(), bytes };
    let gfarm = if o.gfarm {
        let mut sites = vec![META_SITE.to_string()];
        sites.extend(o.fig6_from.iter().filter(|s| *s != META_SITE).cloned());
        let _span = tracing::info_span!("gfarm_start").entered();
        match Gfarm::start(wan, META_SITE, &sites).and_then(|g| Ok((g.stage(&set)?, g))) {
            Ok((staged, g)) => Some((g, staged)),
            Err(e) => {
                notes.push(format!("gfarm_gfrep_mb_s, gfarm_per_file_mb_s: not measured: Gfarm did not start: {e:#}"));
                None
            }
        }
    } else {
        notes.push("gfarm_gfrep_mb_s, gfarm_per_file_mb_s: skipped (--no-gfarm)".into());
        None
    };
    let rel: Vec<_> = files.iter().map(|f| f.path.clone()).collect();
    let mut rows = Vec::new();
    for from in &o.fig6_from {
        let _span = tracing::info_span!("from", site = %from).entered();
        let mut row = one_source(rt, wan, fed, o, &set, &d, from)?;
        if let Some((g, staged)) = &gfarm {
            let _span = tracing::info_span!("gfarm").entered();
            match gfarm_source(g, staged, &rel, &d, from) {
                Ok((gfrep, per_file)) => {
                    row.gfarm_gfrep_mb_s = Some(gfrep);
                    row.gfarm_per_file_mb_s = Some(per_file);
                }
                Err(e) => notes.push(format!("gfarm from {from}: not measured: {e:#}")),
            }
        }
        info!(?row, "source done");
        rows.push(row);
    }
    Ok((d, rows))
}

/// Gfarm on the path `from` -> titech1: the set uploaded twice at `from` (untimed, only `from`'s
/// gfsd holds it), then the timed `gfrep -D titech1` of one copy and the timed per-file copy of
/// the other, by a client at titech1. MB/s of file bytes, (gfrep, per file).
fn gfarm_source(
    g: &Gfarm,
    staged: &Path,
    rel: &[std::path::PathBuf],
    d: &Dataset,
    from: &str,
) -> anyhow::Result<(f64, f64)> {
    let name = staged.file_name().context("staged set")?.to_string_lossy().to_string();
    let dir = |copy: &str| format!("/fig6-{from}-gfarm-{copy}");
    info!("uploading two copies to the gfsd at {from} (gfpcopy, untimed)");
    for copy in ["gfrep", "perfile"] {
        g.upload(from, staged, &dir(copy), d.files)?;
    }
    info!("gfrep -D {META_SITE}");
    drop_caches();
    let gfrep_secs = g.gfrep_tree(META_SITE, &format!("{}/{name}", dir("gfrep")), META_SITE, d.files)?;
    info!("gfrep one process per file");
    drop_caches();
    let per_file_secs = g.gfrep_per_file(META_SITE, &format!("{}/{name}", dir("perfile")), rel, META_SITE)?;
    for copy in ["gfrep", "perfile"] {
        g.remove(&dir(copy))?;
    }
    Ok((mb_s(d.bytes, gfrep_secs), mb_s(d.bytes, per_file_secs)))
}

fn one_source(
    rt: &tokio::runtime::Runtime,
    wan: &Wan,
    fed: &WanFederation,
    o: &PaperOptions,
    set: &Path,
    d: &Dataset,
    from: &str,
) -> anyhow::Result<Row> {
    anyhow::ensure!(from != META_SITE, "Figure 6 copies to {META_SITE}; pick another source");
    let paper = renkei2011_rate_mbyte(from, META_SITE, Tuning::After)
        .with_context(|| format!("{from}->{META_SITE} is not a path of Table 4"))?;
    let root = |copy: &str| format!("/fig6-{from}-{copy}");
    info!("uploading three copies at {from} (untimed)");
    rt.block_on(async {
        let c = fed.client(wan, from, DATA_USER).await?;
        for copy in ["rep", "mount", "perfile"] {
            c.put_tree(set, &root(copy), &|_| {}).await.with_context(|| format!("uploading {}", root(copy)))?;
        }
        anyhow::Ok(())
    })?;

    info!("tar {from} -> {META_SITE}");
    drop_caches();
    let tar_secs = tar_between_sites(wan, from, META_SITE, set, &o.scratch.join("tar-dst"))?;

    info!("renkei rep -j {}", o.parallel);
    let rep_secs = replicate(rt, wan, fed, &root("rep"), o.parallel, None, d.bytes)?;

    info!("cp -r out of a mount at {META_SITE}");
    let mount_secs = copy_out_of_mount(wan, fed, o, &root("mount"), d.bytes)?;

    info!("renkei rep one file per request");
    let per_file_secs = replicate(rt, wan, fed, &root("perfile"), 1, Some(1), d.bytes)?;

    rt.block_on(async {
        let c = fed.client(wan, META_SITE, DATA_USER).await?;
        for copy in ["rep", "mount", "perfile"] {
            c.remove(&root(copy), true).await.with_context(|| format!("removing {}", root(copy)))?;
        }
        anyhow::Ok(())
    })?;
    let row = Row {
        from: from.to_string(),
        link_mb_s: paper * o.scale,
        tar_mb_s: mb_s(d.bytes, tar_secs),
        renkei_rep_mb_s: mb_s(d.bytes, rep_secs),
        renkei_mount_mb_s: mb_s(d.bytes, mount_secs),
        per_file_mb_s: mb_s(d.bytes, per_file_secs),
        gfarm_gfrep_mb_s: None,
        gfarm_per_file_mb_s: None,
    };
    Ok(row)
}

/// `rep -D titech1` of `dir` by a fresh client at titech1; seconds. Checks every byte was copied.
fn replicate(
    rt: &tokio::runtime::Runtime,
    wan: &Wan,
    fed: &WanFederation,
    dir: &str,
    parallel: usize,
    batch_files: Option<usize>,
    bytes: u64,
) -> anyhow::Result<f64> {
    rt.block_on(async {
        let c = fed.client(wan, META_SITE, DATA_USER).await?;
        let mut opts = RepOptions { parallel: parallel.max(1), to: Some(META_SITE.into()), ..Default::default() };
        if let Some(n) = batch_files {
            opts.batch_files = n;
        }
        let t = Instant::now();
        let r = c.replicate(&[dir.to_string()], &opts, &|_| {}).await.with_context(|| format!("rep {dir}"))?;
        let secs = t.elapsed().as_secs_f64();
        anyhow::ensure!(r.failed.is_empty(), "rep {dir}: {} files failed, e.g. {:?}", r.failed.len(), r.failed.first());
        anyhow::ensure!(r.copied_bytes == bytes, "rep {dir}: copied {} of {bytes} bytes", r.copied_bytes);
        Ok(secs)
    })
}

/// `cp -r` of `dir` out of a fresh `renkei mount` at titech1 onto local disk, then `sync -f`;
/// seconds. Checks the copy's size.
fn copy_out_of_mount(wan: &Wan, fed: &WanFederation, o: &PaperOptions, dir: &str, bytes: u64) -> anyhow::Result<f64> {
    let (_, cfg) = fed.client_config(META_SITE, DATA_USER)?;
    let out = o.scratch.join("mount-out");
    let _ = std::fs::remove_dir_all(&out);
    let mut m = BinMount::start(&wan.site(META_SITE)?, &o.bin_dir, &cfg, &o.scratch.join("mnt"), "", &o.scratch)?;
    drop_caches();
    let t = Instant::now();
    let src = m.mp.join(dir.trim_start_matches('/'));
    let st = Command::new("cp").arg("-r").arg(&src).arg(&out).status().context("running cp -r")?;
    anyhow::ensure!(st.success(), "cp -r {} failed: {st}; mount log: {}", src.display(), m.log_tail());
    let st = Command::new("sync").arg("-f").arg(&out).status().context("running sync -f")?;
    anyhow::ensure!(st.success(), "sync -f failed: {st}");
    let secs = t.elapsed().as_secs_f64();
    m.stop(Duration::from_secs(60));
    let got = tree_bytes(&out)?;
    std::fs::remove_dir_all(&out)?;
    anyhow::ensure!(got == bytes, "cp -r out of the mount gave {got} of {bytes} bytes");
    Ok(secs)
}

/// Bytes of the regular files under `root`.
fn tree_bytes(root: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let ty = e.file_type()?;
            if ty.is_dir() {
                todo.push(e.path());
            } else if ty.is_file() {
                total += e.metadata()?.len();
            }
        }
    }
    Ok(total)
}
