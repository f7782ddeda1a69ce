//! The PoP's content-addressed image cache: pristine, verified base images.
//!
//! Layout under the cache root:
//!
//! ```text
//! <root>/<image id>/kernel|initrd|disk   read-only copies, named by role
//! <root>/<image id>/image.toml           the sealed manifest, files named by role
//! <root>/.incoming-XXXX/                 a fetch in progress (renamed into place when verified)
//! ```
//!
//! An image enters the cache only after every byte hashed to what its
//! manifest promised, and is re-verified each time it is staged, so a
//! corrupted cache entry is never booted: it is evicted and fetched again.
//! VMs never write here: they get a qcow2 overlay over `disk`.

use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::error::{CacheError, SourceError};
use crate::image::{hash_file, ImageId, ImageManifest, ImageSource, Role};

/// The cache of verified base images on this PoP's local disk.
#[derive(Debug, Clone)]
pub struct ImageCache {
    root: PathBuf,
}

/// An image present and verified in the cache.
#[derive(Debug, Clone)]
pub struct CachedImage {
    /// The image's content identity.
    pub id: ImageId,
    /// Its directory in the cache.
    pub dir: PathBuf,
    /// Its manifest (files named by role).
    pub manifest: ImageManifest,
}

impl CachedImage {
    /// The cached file playing `role`.
    pub fn path(&self, role: Role) -> PathBuf {
        self.dir.join(role.as_str())
    }
}

/// What staging an image cost.
#[derive(Debug, Clone)]
pub struct StageReport {
    /// The staged image.
    pub image: CachedImage,
    /// Image bytes moved from the source (0 when the cache already had it).
    pub fetched_bytes: u64,
    /// Time spent fetching from the source (zero on a cache hit).
    pub fetch_time: Duration,
    /// Time spent re-verifying the cached copy.
    pub verify_time: Duration,
    /// True when a corrupt cached copy was found, evicted and fetched again.
    pub repaired: bool,
}

/// A writer that hashes and counts what it writes.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: blake3::Hasher,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), CacheError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(CacheError::io(path))
}

impl ImageCache {
    /// Opens (creating) the cache at `root`. The directory is made
    /// world-traversable because qemu runs as its own user.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, CacheError> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(CacheError::io(&root))?;
        set_mode(&root, 0o755)?;
        Ok(Self { root })
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn entry_dir(&self, id: ImageId) -> PathBuf {
        self.root.join(id.to_string())
    }

    /// Makes the image of `source` present and verified in the cache,
    /// fetching only if it is missing or its cached copy is corrupt.
    pub fn stage(&self, source: &dyn ImageSource) -> Result<StageReport, CacheError> {
        let manifest = source.manifest()?;
        let id = manifest.id().ok_or_else(|| SourceError::Manifest {
            path: PathBuf::from(source.describe()),
            reason: "manifest is not sealed".into(),
        })?;
        let dir = self.entry_dir(id);
        let mut repaired = false;
        let verify_start = Instant::now();
        if dir.exists() {
            match self.verify_entry(&dir, &manifest) {
                Ok(()) => {
                    let verify_time = verify_start.elapsed();
                    debug!(%id, ?verify_time, "image cache hit");
                    let image = CachedImage { id, dir, manifest: by_role(&manifest) };
                    return Ok(StageReport {
                        image,
                        fetched_bytes: 0,
                        fetch_time: Duration::ZERO,
                        verify_time,
                        repaired,
                    });
                }
                Err(e @ CacheError::HashMismatch { .. }) | Err(e @ CacheError::Io { .. }) => {
                    warn!(%id, error = %e, "cached image is corrupt: evicting and fetching again");
                    self.evict(id)?;
                    repaired = true;
                }
                Err(e) => return Err(e),
            }
        }
        let verify_time = verify_start.elapsed();
        let fetch_start = Instant::now();
        let fetched_bytes = self.fetch(source, &manifest, &dir)?;
        let fetch_time = fetch_start.elapsed();
        info!(%id, fetched_bytes, ?fetch_time, source = %source.describe(), "image fetched into cache");
        let image = CachedImage { id, dir, manifest: by_role(&manifest) };
        Ok(StageReport { image, fetched_bytes, fetch_time, verify_time, repaired })
    }

    /// Fetches every file into a scratch directory, verifying as the bytes
    /// arrive, then renames the directory into place.
    fn fetch(&self, source: &dyn ImageSource, manifest: &ImageManifest, dir: &Path) -> Result<u64, CacheError> {
        let scratch =
            tempfile::Builder::new().prefix(".incoming-").tempdir_in(&self.root).map_err(CacheError::io(&self.root))?;
        let mut total = 0;
        for role in Role::ALL {
            let (expected, expected_size) = manifest.expected(role).ok_or_else(|| SourceError::Manifest {
                path: PathBuf::from(source.describe()),
                reason: format!("no hash for {role}"),
            })?;
            let path = scratch.path().join(role.as_str());
            let file = fs::File::create(&path).map_err(CacheError::io(&path))?;
            let mut writer = HashingWriter {
                inner: BufWriter::with_capacity(1 << 20, file),
                hasher: blake3::Hasher::new(),
                written: 0,
            };
            source.read(role, &mut writer)?;
            writer.flush().map_err(CacheError::io(&path))?;
            let actual = writer.hasher.finalize();
            if actual != expected || writer.written != expected_size {
                return Err(CacheError::HashMismatch {
                    role: role.to_string(),
                    expected: expected.to_hex().to_string(),
                    actual: actual.to_hex().to_string(),
                    size: writer.written,
                });
            }
            let file =
                writer.inner.into_inner().map_err(|e| CacheError::Io { path: path.clone(), source: e.into_error() })?;
            file.sync_all().map_err(CacheError::io(&path))?;
            set_mode(&path, 0o444)?;
            total += writer.written;
        }
        by_role(manifest).store(scratch.path())?;
        set_mode(scratch.path(), 0o755)?;
        let scratch = scratch.keep();
        if let Err(e) = fs::rename(&scratch, dir) {
            // Someone staged the same image concurrently: theirs is as good as ours.
            let _ = fs::remove_dir_all(&scratch);
            if !dir.exists() {
                return Err(CacheError::Io { path: dir.to_path_buf(), source: e });
            }
        }
        Ok(total)
    }

    fn verify_entry(&self, dir: &Path, manifest: &ImageManifest) -> Result<(), CacheError> {
        for role in Role::ALL {
            let Some((expected, expected_size)) = manifest.expected(role) else {
                continue;
            };
            let path = dir.join(role.as_str());
            let (actual, size) = hash_file(&path).map_err(CacheError::io(&path))?;
            if actual != expected || size != expected_size {
                return Err(CacheError::HashMismatch {
                    role: role.to_string(),
                    expected: expected.to_hex().to_string(),
                    actual: actual.to_hex().to_string(),
                    size,
                });
            }
        }
        Ok(())
    }

    /// Re-hashes a cached image against its manifest.
    pub fn verify(&self, id: ImageId) -> Result<(), CacheError> {
        let dir = self.entry_dir(id);
        let manifest = ImageManifest::load(&dir)?;
        self.verify_entry(&dir, &manifest)
    }

    /// The cached image `id`, if present (not re-verified).
    pub fn get(&self, id: ImageId) -> Option<CachedImage> {
        let dir = self.entry_dir(id);
        let manifest = ImageManifest::load(&dir).ok()?;
        Some(CachedImage { id, dir, manifest })
    }

    /// Removes image `id` from the cache (a no-op if absent).
    pub fn evict(&self, id: ImageId) -> Result<(), CacheError> {
        let dir = self.entry_dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CacheError::Io { path: dir, source: e }),
        }
    }

    /// The ids of every cached image.
    pub fn list(&self) -> Result<Vec<ImageId>, CacheError> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(CacheError::io(&self.root))? {
            let entry = entry.map_err(CacheError::io(&self.root))?;
            if let Some(hash) = entry.file_name().to_str().and_then(|n| blake3::Hash::from_hex(n).ok()) {
                ids.push(ImageId(hash));
            }
        }
        Ok(ids)
    }
}

/// The manifest as stored in the cache: files named after their roles.
fn by_role(manifest: &ImageManifest) -> ImageManifest {
    let mut m = manifest.clone();
    m.files = Role::ALL.iter().map(|r| (*r, r.as_str().to_string())).collect();
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{seal, LocalDirSource, MANIFEST_FILE};

    fn image(dir: &Path, disk: &[u8]) -> LocalDirSource {
        fs::write(dir.join("vmlinuz"), b"kernel").unwrap();
        fs::write(dir.join("initrd.gz"), b"initrd").unwrap();
        fs::write(dir.join("root.img"), disk).unwrap();
        fs::write(
            dir.join(MANIFEST_FILE),
            "name = \"t\"\ncmdline = \"c\"\n[files]\nkernel = \"vmlinuz\"\ninitrd = \"initrd.gz\"\ndisk = \"root.img\"\n",
        )
        .unwrap();
        seal(dir).unwrap();
        LocalDirSource::open(dir).unwrap()
    }

    #[test]
    fn second_stage_fetches_nothing() {
        let (src_dir, cache_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let src = image(src_dir.path(), &[7u8; 4096]);
        let cache = ImageCache::open(cache_dir.path().join("c")).unwrap();
        let first = cache.stage(&src).unwrap();
        assert_eq!(first.fetched_bytes, 6 + 6 + 4096);
        assert_eq!(fs::read(first.image.path(Role::Disk)).unwrap(), vec![7u8; 4096]);
        let second = cache.stage(&src).unwrap();
        assert_eq!(second.fetched_bytes, 0);
        assert_eq!(second.image.id, first.image.id);
        assert_eq!(cache.list().unwrap(), vec![first.image.id]);
    }

    #[test]
    fn corrupt_source_is_refused_and_leaves_nothing() {
        let (src_dir, cache_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let src = image(src_dir.path(), b"good disk");
        fs::write(src_dir.path().join("root.img"), b"evil disk").unwrap();
        let cache = ImageCache::open(cache_dir.path()).unwrap();
        let err = cache.stage(&src).unwrap_err();
        assert!(matches!(err, CacheError::HashMismatch { ref role, .. } if role == "disk"), "{err}");
        assert_eq!(fs::read_dir(cache_dir.path()).unwrap().count(), 0, "scratch or entry left behind");
    }

    #[test]
    fn corrupt_cache_entry_is_detected_evicted_and_refetched() {
        let (src_dir, cache_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let src = image(src_dir.path(), b"good disk");
        let cache = ImageCache::open(cache_dir.path()).unwrap();
        let first = cache.stage(&src).unwrap();
        let disk = first.image.path(Role::Disk);
        set_mode(&disk, 0o644).unwrap();
        fs::write(&disk, b"bad! disk").unwrap();
        assert!(matches!(cache.verify(first.image.id), Err(CacheError::HashMismatch { .. })));
        let again = cache.stage(&src).unwrap();
        assert!(again.repaired);
        assert_eq!(again.fetched_bytes, first.fetched_bytes);
        assert_eq!(fs::read(&disk).unwrap(), b"good disk");
        cache.verify(first.image.id).unwrap();
    }
}
