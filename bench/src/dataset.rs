//! The "Montage-like" dataset of the original measurements: 6,756 files of
//! 292 B to 27 MB with a mean near 2 MB (about 14 GB), laid out like a
//! Montage astronomy mosaic run (raw images, reprojections, differences,
//! corrections, tables). Deterministic for a seed; `scale` keeps that
//! fraction of the files (0.25 gives the 1,689 files / ~3.5 GB used on
//! this kind of machine).

use std::io::Write;
use std::path::{Path, PathBuf};

/// Files in the full set.
pub const FULL_FILES: usize = 6_756;
/// Smallest file.
pub const MIN_SIZE: u64 = 292;
/// Largest file.
pub const MAX_SIZE: u64 = 27 * 1_000_000;

/// One file of the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Path relative to the dataset root.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Seed of its contents.
    pub seed: u64,
}

/// splitmix64: a tiny, fully specified generator, so a seed means the same
/// dataset on every build.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Log-uniform in [lo, hi].
    fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + self.unit() * (hi.ln() - lo.ln())).exp()
    }
}

/// The file list for `scale` (0 < scale <= 1) and `seed`.
pub fn plan(scale: f64, seed: u64) -> Vec<DataFile> {
    let n = ((FULL_FILES as f64 * scale).round() as usize).clamp(2, FULL_FILES);
    let mut rng = Mix(seed);
    let mut files = Vec::with_capacity(n);
    for i in 0..n {
        let r = rng.unit();
        // 25 % small headers and tables, 70 % image tiles around 2 MB,
        // 5 % large mosaics; the two extremes are pinned so every scale
        // spans the whole range.
        let (dir, size) = if i == 0 {
            ("tables", MIN_SIZE as f64)
        } else if i == 1 {
            ("mosaic", MAX_SIZE as f64)
        } else if r < 0.25 {
            ("tables", rng.log_uniform(MIN_SIZE as f64, 64_000.0))
        } else if r < 0.95 {
            let sub = ["raw", "proj", "diff", "corr"][(rng.next() % 4) as usize];
            (sub, 1_500_000.0 + rng.unit() * 1_100_000.0)
        } else {
            ("mosaic", rng.log_uniform(4_000_000.0, MAX_SIZE as f64))
        };
        let name = match dir {
            "tables" => format!("{dir}/t{i:05}.tbl"),
            _ => format!("{dir}/f{i:05}.fits"),
        };
        files.push(DataFile { path: PathBuf::from(name), size: size as u64, seed: rng.next() });
    }
    files
}

/// Total bytes of a plan.
pub fn total_bytes(files: &[DataFile]) -> u64 {
    files.iter().map(|f| f.size).sum()
}

/// Fill `buf` with the incompressible contents for `seed`.
fn fill(buf: &mut [u8], seed: u64) {
    let mut rng = Mix(seed);
    for w in buf.chunks_mut(8) {
        let v = rng.next().to_le_bytes();
        w.copy_from_slice(&v[..w.len()]);
    }
}

/// Write the files of `plan` under `root` (existing files of the right size
/// are kept, so re-running is cheap). Returns the bytes written.
pub fn write(root: &Path, files: &[DataFile]) -> std::io::Result<u64> {
    let mut written = 0;
    let mut buf = vec![0u8; 1 << 20];
    for f in files {
        let p = root.join(&f.path);
        if std::fs::metadata(&p).map(|m| m.len() == f.size).unwrap_or(false) {
            continue;
        }
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&p)?);
        let mut left = f.size;
        let mut block = 0u64;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            fill(&mut buf[..n], f.seed ^ block.wrapping_mul(0x2545_F491_4F6C_DD1D));
            out.write_all(&buf[..n])?;
            left -= n as u64;
            block += 1;
            written += n as u64;
        }
        out.flush()?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_set_matches_the_original_shape() {
        let p = plan(1.0, 1);
        assert_eq!(p.len(), FULL_FILES);
        let min = p.iter().map(|f| f.size).min().unwrap();
        let max = p.iter().map(|f| f.size).max().unwrap();
        assert_eq!((min, max), (MIN_SIZE, MAX_SIZE));
        let mean = total_bytes(&p) as f64 / p.len() as f64;
        assert!((1.8e6..2.3e6).contains(&mean), "mean {mean}");
        assert_eq!(plan(1.0, 1), p, "deterministic for a seed");
        assert_ne!(plan(1.0, 2), p);
        let quarter = plan(0.25, 1);
        assert_eq!(quarter.len(), 1689);
    }

    #[test]
    fn writes_what_it_plans() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan(0.002, 3);
        let small: Vec<_> = p.into_iter().filter(|f| f.size < 100_000).collect();
        write(dir.path(), &small).unwrap();
        for f in &small {
            assert_eq!(std::fs::metadata(dir.path().join(&f.path)).unwrap().len(), f.size);
        }
        assert_eq!(write(dir.path(), &small).unwrap(), 0, "kept on a second run");
    }
}
