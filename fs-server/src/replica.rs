//! The on-disk format of one replica, and blocking readers and writers.
//!
//! A replica file is `[data][chunk values][footer]`: the file's bytes, one
//! 32-byte BLAKE3 value per [`CHUNK`] (see [`crate::tree_hash`]), then a
//! 64-byte footer (magic, chunk size, data size, root hash, and a check over
//! the footer itself). Opening a replica checks that the chunk values merge to
//! the root hash; every read checks each chunk it touches against its value,
//! so a flipped byte is detected before it is sent.

use crate::tree_hash::{self, chunk_count, chunk_value, ChunkHasher, CHUNK};
use fs_proto::Hash;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"RNKREP01";
/// A writer starts the kernel's writeback of every this many bytes written
/// in order, so the fsync that seals a large replica finds little left to
/// write: without it a 2 GiB upload stays dirty in the page cache and its
/// fsync adds most of a second after the last byte arrived.
const WRITEBACK_STEP: u64 = 32 << 20;
/// Bytes of the footer.
pub const FOOTER_LEN: u64 = 64;

/// Failures reading or writing replicas.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// An I/O failure on a path.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A replica is already stored at the destination; it was left as it is
    /// (a replica is never replaced: a new generation has a new path).
    #[error("{path}: a replica is already stored there")]
    Exists {
        /// The destination.
        path: PathBuf,
    },
    /// The bytes on disk do not match their hashes.
    #[error("{path}: corrupt replica: {what}")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// What did not match.
        what: String,
    },
}

impl ReplicaError {
    /// The errno of an I/O failure (e.g. ENOSPC).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            ReplicaError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReplicaError + '_ {
    move |source| ReplicaError::Io { path: path.to_path_buf(), source }
}

fn corrupt(path: &Path, what: impl Into<String>) -> ReplicaError {
    ReplicaError::Corrupt { path: path.to_path_buf(), what: what.into() }
}

fn footer(size: u64, hash: &Hash) -> [u8; FOOTER_LEN as usize] {
    let mut f = [0u8; FOOTER_LEN as usize];
    f[..8].copy_from_slice(MAGIC);
    f[8..12].copy_from_slice(&(CHUNK as u32).to_be_bytes());
    f[16..24].copy_from_slice(&size.to_be_bytes());
    f[24..56].copy_from_slice(hash);
    let check = blake3::hash(&f[..56]);
    f[56..64].copy_from_slice(&check.as_bytes()[..8]);
    f
}

/// An open replica whose chunk table has been checked against its root hash.
pub struct ReplicaFile {
    file: File,
    path: PathBuf,
    size: u64,
    hash: Hash,
    values: Vec<[u8; 32]>,
}

impl ReplicaFile {
    /// Open and check the footer and chunk table.
    pub fn open(path: &Path) -> Result<Self, ReplicaError> {
        let file = File::open(path).map_err(io(path))?;
        let len = file.metadata().map_err(io(path))?.len();
        if len < FOOTER_LEN {
            return Err(corrupt(path, "shorter than its footer"));
        }
        let mut f = [0u8; FOOTER_LEN as usize];
        file.read_exact_at(&mut f, len - FOOTER_LEN).map_err(io(path))?;
        if &f[..8] != MAGIC || blake3::hash(&f[..56]).as_bytes()[..8] != f[56..64] {
            return Err(corrupt(path, "footer damaged"));
        }
        if u32::from_be_bytes([f[8], f[9], f[10], f[11]]) as u64 != CHUNK {
            return Err(corrupt(path, "unexpected chunk size"));
        }
        let size = u64::from_be_bytes(f[16..24].try_into().unwrap_or_default());
        let hash: Hash = f[24..56].try_into().unwrap_or_default();
        let n = chunk_count(size);
        if len != size + n * 32 + FOOTER_LEN {
            return Err(corrupt(path, format!("length {len} does not fit data size {size}")));
        }
        let mut table = vec![0u8; (n * 32) as usize];
        file.read_exact_at(&mut table, size).map_err(io(path))?;
        let values: Vec<[u8; 32]> = table.chunks_exact(32).map(|c| c.try_into().unwrap_or_default()).collect();
        if tree_hash::root_hash(&values, size) != hash {
            return Err(corrupt(path, "chunk table does not match the root hash"));
        }
        Ok(ReplicaFile { file, path: path.to_path_buf(), size, hash, values })
    }

    /// Data size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Root hash (BLAKE3 of the data).
    pub fn hash(&self) -> Hash {
        self.hash
    }

    /// Read `len` bytes at `offset` (clipped to the data), verifying every
    /// chunk touched, appending to `out`.
    pub fn read_verified(&self, offset: u64, len: u64, out: &mut Vec<u8>) -> Result<(), ReplicaError> {
        let end = offset.saturating_add(len).min(self.size);
        if offset >= end {
            return Ok(());
        }
        let first = offset / CHUNK;
        let last = (end - 1) / CHUNK;
        let count = self.values.len() as u64;
        let mut buf = vec![0u8; CHUNK as usize];
        for i in first..=last {
            let start = i * CHUNK;
            let clen = CHUNK.min(self.size - start) as usize;
            let chunk = &mut buf[..clen];
            self.file.read_exact_at(chunk, start).map_err(io(&self.path))?;
            if chunk_value(i, count, chunk) != self.values[i as usize] {
                return Err(corrupt(
                    &self.path,
                    format!("chunk {i} (bytes {start}..{}) fails its hash", start + clen as u64),
                ));
            }
            let from = offset.max(start) - start;
            let to = end.min(start + clen as u64) - start;
            out.extend_from_slice(&chunk[from as usize..to as usize]);
        }
        Ok(())
    }

    /// Verify every chunk (a full scrub).
    pub fn verify_all(&self) -> Result<(), ReplicaError> {
        let mut sink = Vec::with_capacity(CHUNK as usize);
        let mut off = 0;
        while off < self.size {
            sink.clear();
            self.read_verified(off, CHUNK, &mut sink)?;
            off += CHUNK;
        }
        Ok(())
    }

    /// Copy the verified data into `dst` (used to start a new generation
    /// from this one).
    pub fn copy_data_to(&self, dst: &mut ReplicaWriter) -> Result<(), ReplicaError> {
        let mut buf = Vec::with_capacity(4 * CHUNK as usize);
        let mut off = 0;
        while off < self.size {
            buf.clear();
            self.read_verified(off, 4 * CHUNK, &mut buf)?;
            dst.write_at(off, &buf)?;
            off += buf.len() as u64;
        }
        Ok(())
    }
}

/// A replica given its final name by [`ReplicaWriter::finish_unsynced`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Data bytes.
    pub size: u64,
    /// Root hash.
    pub hash: Hash,
    /// This writer created the file (false: an identical replica was there).
    pub created: bool,
}

/// Writes a new replica into a temporary file; [`ReplicaWriter::finish`]
/// appends the chunk table and footer, syncs and renames it into place.
pub struct ReplicaWriter {
    file: File,
    tmp: PathBuf,
    /// Chunk values computed inline while writes are sequential from 0.
    hasher: Option<ChunkHasher>,
    len: u64,
    /// Data before this offset has had its writeback started.
    written_back: u64,
}

impl ReplicaWriter {
    /// Create the temporary file.
    pub fn create(tmp: PathBuf) -> Result<Self, ReplicaError> {
        let file = File::options().write(true).read(true).create_new(true).open(&tmp).map_err(io(&tmp))?;
        Ok(ReplicaWriter { file, tmp, hasher: Some(ChunkHasher::new()), len: 0, written_back: 0 })
    }

    /// Start writeback (without waiting) of what sequential writes have
    /// filled since the last call, once it is [`WRITEBACK_STEP`] or more.
    fn start_writeback(&mut self) {
        let Some(h) = &self.hasher else { return };
        let upto = h.len() - h.len() % WRITEBACK_STEP;
        if upto <= self.written_back {
            return;
        }
        use std::os::fd::AsRawFd;
        let (off, len) = (self.written_back, upto - self.written_back);
        // SAFETY: a valid descriptor; SYNC_FILE_RANGE_WRITE only queues I/O.
        // Best effort: a real error surfaces at the final fsync.
        unsafe {
            libc::sync_file_range(self.file.as_raw_fd(), off as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
        }
        self.written_back = upto;
    }

    /// The temporary path.
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// Current data length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Nothing written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Write bytes at an offset.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), ReplicaError> {
        self.file.write_all_at(data, offset).map_err(io(&self.tmp))?;
        match &mut self.hasher {
            Some(h) if h.len() == offset => h.update(data),
            _ => self.hasher = None,
        }
        self.len = self.len.max(offset + data.len() as u64);
        self.start_writeback();
        Ok(())
    }

    /// Truncate or extend (with zeros).
    pub fn set_len(&mut self, size: u64) -> Result<(), ReplicaError> {
        self.file.set_len(size).map_err(io(&self.tmp))?;
        if size != self.len || self.hasher.as_ref().is_some_and(|h| h.len() != size) {
            self.hasher = None;
        }
        self.len = size;
        Ok(())
    }

    fn rehash(&self) -> Result<(Vec<[u8; 32]>, Hash), ReplicaError> {
        let mut h = ChunkHasher::new();
        let mut buf = vec![0u8; 4 * CHUNK as usize];
        let mut off = 0;
        while off < self.len {
            let n = (self.len - off).min(buf.len() as u64) as usize;
            self.file.read_exact_at(&mut buf[..n], off).map_err(io(&self.tmp))?;
            h.update(&buf[..n]);
            off += n as u64;
        }
        Ok(h.finish())
    }

    /// Append the chunk table and footer, fsync, and rename to `dst`
    /// (fsyncing its directory). Returns size and root hash.
    pub fn finish(mut self, dst: &Path) -> Result<(u64, Hash), ReplicaError> {
        let done = self.seal()?;
        self.publish(dst)?;
        Ok(done)
    }

    /// Like [`Self::finish`], but only if the data has exactly the size and
    /// hash `expect`; otherwise the temporary file is removed and nothing
    /// appears at `dst` (a copy that does not match what it copies).
    pub fn finish_expecting(mut self, dst: &Path, expect: (u64, Hash)) -> Result<(u64, Hash), ReplicaError> {
        let done = match self.seal() {
            Ok(d) => d,
            Err(e) => {
                self.abort();
                return Err(e);
            }
        };
        if done != expect {
            let what = format!("copy holds {} bytes with another hash than the {} bytes expected", done.0, expect.0);
            let err = corrupt(&self.tmp, what);
            self.abort();
            return Err(err);
        }
        if dst.exists() && !sound(dst, expect.0, &expect.1) {
            // What a repair is ordered for: the replica here fails its own
            // check. This copy, verified against the generation's hash,
            // takes its place; a sound replica is never touched.
            std::fs::rename(&self.tmp, dst).map_err(io(dst))?;
            if let Some(dir) = dst.parent() {
                File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
            }
            return Ok(done);
        }
        self.publish(dst)?;
        Ok(done)
    }

    fn publish(&self, dst: &Path) -> Result<(), ReplicaError> {
        link_new(&self.tmp, dst)?;
        if let Some(dir) = dst.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
        }
        Ok(())
    }

    /// Like [`Self::finish`], but without syncing: for many replicas made
    /// durable at once by syncing the whole spool (a bundle) before any of
    /// them is registered. The temporary file is always removed. If `dst`
    /// already holds exactly these bytes (a retried bundle), that replica is
    /// kept and the answer says it was not created here; if it holds other
    /// bytes, `Exists` and nothing changes.
    pub fn finish_unsynced(mut self, dst: &Path) -> Result<Published, ReplicaError> {
        let (size, hash) = match self.write_tail() {
            Ok(d) => d,
            Err(e) => {
                self.abort();
                return Err(e);
            }
        };
        match link_new(&self.tmp, dst) {
            Ok(()) => Ok(Published { size, hash, created: true }),
            Err(ReplicaError::Exists { .. }) if holds(dst, size, &hash) => Ok(Published { size, hash, created: false }),
            Err(e) => Err(e),
        }
    }

    /// Append the chunk table and footer and fsync the temporary file.
    fn seal(&mut self) -> Result<(u64, Hash), ReplicaError> {
        let done = self.write_tail()?;
        self.file.sync_all().map_err(io(&self.tmp))?;
        Ok(done)
    }

    /// Append the chunk table and footer.
    fn write_tail(&mut self) -> Result<(u64, Hash), ReplicaError> {
        let (values, hash) = match self.hasher.take() {
            Some(h) if h.len() == self.len => h.finish(),
            _ => self.rehash()?,
        };
        let mut tail = Vec::with_capacity(values.len() * 32 + FOOTER_LEN as usize);
        for v in &values {
            tail.extend_from_slice(v);
        }
        tail.extend_from_slice(&footer(self.len, &hash));
        self.file.set_len(self.len).map_err(io(&self.tmp))?;
        self.file.write_all_at(&tail, self.len).map_err(io(&self.tmp))?;
        Ok((self.len, hash))
    }

    /// Give up: remove the temporary file.
    pub fn abort(self) {
        // (Drop removes the temporary file.)
    }
}

impl Drop for ReplicaWriter {
    /// Whatever ended the writer (finished, aborted, failed, or dropped with
    /// its session), its temporary file goes: a published replica has its
    /// own name by now, and nothing else ever names a temporary file.
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Give the finished temporary file `tmp` its final name `dst`, never
/// replacing a file already there (`link` fails with EEXIST where `rename`
/// would silently replace), then drop the temporary name. On any error the
/// temporary file is removed and `dst` is untouched.
fn link_new(tmp: &Path, dst: &Path) -> Result<(), ReplicaError> {
    let linked = std::fs::hard_link(tmp, dst);
    let _ = std::fs::remove_file(tmp);
    match linked {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(ReplicaError::Exists { path: dst.to_path_buf() })
        }
        Err(e) => Err(io(dst)(e)),
    }
}

/// Whether the replica stored at `path` holds exactly `size` bytes hashing
/// to `hash` (its footer says so and it opens as a replica).
pub fn holds(path: &Path, size: u64, hash: &Hash) -> bool {
    ReplicaFile::open(path).is_ok_and(|r| r.size() == size && &r.hash() == hash)
}

/// Whether the replica at `path` holds `size` bytes hashing to `hash` and
/// every chunk verifies (reads it all: for the rare case of a copy arriving
/// where a replica already is).
pub fn sound(path: &Path, size: u64, hash: &Hash) -> bool {
    ReplicaFile::open(path).is_ok_and(|r| r.size() == size && &r.hash() == hash && r.verify_all().is_ok())
}

/// Read a whole replica into memory after full verification (tests, tools).
pub fn read_all(path: &Path) -> Result<Vec<u8>, ReplicaError> {
    let r = ReplicaFile::open(path)?;
    let mut out = Vec::with_capacity(r.size() as usize);
    r.read_verified(0, r.size(), &mut out)?;
    Ok(out)
}

/// Write a replica from a reader in one go (tests, tools).
pub fn write_from(tmp: PathBuf, dst: &Path, mut src: impl Read) -> Result<(u64, Hash), ReplicaError> {
    let mut w = ReplicaWriter::create(tmp)?;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut off = 0;
    loop {
        let n = src.read(&mut buf).map_err(io(dst))?;
        if n == 0 {
            break;
        }
        w.write_at(off, &buf[..n])?;
        off += n as u64;
    }
    w.finish(dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However a writer ends, its temporary file goes (one used to stay
    /// until the next restart when a finish failed or a session broke).
    #[test]
    fn no_temporary_file_outlives_its_writer() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = |n: &str| dir.path().join(n);
        // Dropped mid-write (a broken session).
        let mut w = ReplicaWriter::create(tmp("a")).unwrap();
        w.write_at(0, b"hello").unwrap();
        drop(w);
        assert!(!tmp("a").exists());
        // A finish that fails: the name is taken by other bytes.
        let dst = tmp("dst");
        std::fs::write(&dst, b"something else").unwrap();
        let mut w = ReplicaWriter::create(tmp("b")).unwrap();
        w.write_at(0, b"hello").unwrap();
        assert!(w.finish(&dst).is_err());
        assert!(!tmp("b").exists());
        assert_eq!(std::fs::read(&dst).unwrap(), b"something else", "nothing replaced");
        // A finish that fails before publishing: no such directory.
        let mut w = ReplicaWriter::create(tmp("c")).unwrap();
        w.write_at(0, b"hello").unwrap();
        assert!(w.finish(&tmp("missing/dst")).is_err());
        assert!(!tmp("c").exists());
        // A finished one: only the replica remains.
        let mut w = ReplicaWriter::create(tmp("d")).unwrap();
        w.write_at(0, b"hello").unwrap();
        w.finish(&tmp("ok")).unwrap();
        assert!(!tmp("d").exists() && tmp("ok").exists());
    }

    #[test]
    fn round_trip_and_detect_flip() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(3 * CHUNK as usize + 5)).map(|i| (i % 251) as u8).collect();
        let dst = dir.path().join("r");
        let (size, hash) = write_from(dir.path().join("t"), &dst, &data[..]).unwrap();
        assert_eq!(size, data.len() as u64);
        assert_eq!(hash, *blake3::hash(&data).as_bytes());
        assert_eq!(read_all(&dst).unwrap(), data);
        let r = ReplicaFile::open(&dst).unwrap();
        let mut part = Vec::new();
        r.read_verified(CHUNK - 3, 10, &mut part).unwrap();
        assert_eq!(part, data[CHUNK as usize - 3..CHUNK as usize + 7]);

        // Flip one byte in chunk 2.
        let f = File::options().write(true).open(&dst).unwrap();
        f.write_all_at(&[data[2 * CHUNK as usize + 1] ^ 0xff], 2 * CHUNK + 1).unwrap();
        let r = ReplicaFile::open(&dst).unwrap();
        let mut ok = Vec::new();
        r.read_verified(0, CHUNK, &mut ok).unwrap(); // chunk 0 still fine
        assert!(matches!(r.read_verified(2 * CHUNK, 10, &mut Vec::new()), Err(ReplicaError::Corrupt { .. })));
        assert!(r.verify_all().is_err());
    }

    #[test]
    fn random_writes_rehash() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ReplicaWriter::create(dir.path().join("t")).unwrap();
        w.write_at(10, b"world").unwrap();
        w.write_at(0, b"hello").unwrap();
        w.set_len(20).unwrap();
        let dst = dir.path().join("r");
        let (size, hash) = w.finish(&dst).unwrap();
        let mut expect = vec![0u8; 20];
        expect[..5].copy_from_slice(b"hello");
        expect[10..15].copy_from_slice(b"world");
        assert_eq!(size, 20);
        assert_eq!(hash, *blake3::hash(&expect).as_bytes());
        assert_eq!(read_all(&dst).unwrap(), expect);
    }

    #[test]
    fn finish_expecting_refuses_other_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let data = vec![7u8; 3 * CHUNK as usize + 1];
        let want = (data.len() as u64, *blake3::hash(&data).as_bytes());
        let mut w = ReplicaWriter::create(dir.path().join("t1")).unwrap();
        w.write_at(0, &data).unwrap();
        let dst = dir.path().join("r");
        assert_eq!(w.finish_expecting(&dst, want).unwrap(), want);
        assert_eq!(read_all(&dst).unwrap(), data);

        let mut w = ReplicaWriter::create(dir.path().join("t2")).unwrap();
        w.write_at(0, &data[1..]).unwrap();
        let other = dir.path().join("r2");
        assert!(matches!(w.finish_expecting(&other, want), Err(ReplicaError::Corrupt { .. })));
        assert!(!other.exists(), "nothing published");
        assert!(!dir.path().join("t2").exists(), "temporary file removed");
    }

    #[test]
    fn a_replica_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join("r");
        let write = |name: &str, data: &[u8]| {
            let mut w = ReplicaWriter::create(dir.path().join(name)).unwrap();
            w.write_at(0, data).unwrap();
            w
        };
        let first = write("t1", b"first").finish_unsynced(&dst).unwrap();
        assert!(first.created);
        // The same bytes again (a retried bundle): found in place, kept.
        let again = write("t2", b"first").finish_unsynced(&dst).unwrap();
        assert_eq!((again.size, again.hash, again.created), (first.size, first.hash, false));
        // Other bytes: refused, the replica untouched, no temporary left.
        assert!(matches!(write("t3", b"other").finish_unsynced(&dst), Err(ReplicaError::Exists { .. })));
        assert!(matches!(write("t4", b"other").finish(&dst), Err(ReplicaError::Exists { .. })));
        assert_eq!(read_all(&dst).unwrap(), b"first");
        for t in ["t1", "t2", "t3", "t4"] {
            assert!(!dir.path().join(t).exists(), "{t} left behind");
        }
    }

    #[test]
    fn empty_replica() {
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join("r");
        let (size, hash) = write_from(dir.path().join("t"), &dst, &[][..]).unwrap();
        assert_eq!(size, 0);
        assert_eq!(hash, *blake3::hash(&[]).as_bytes());
        assert!(read_all(&dst).unwrap().is_empty());
    }
}
