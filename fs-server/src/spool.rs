//! The spool: where a server keeps its replicas on local disk. Paths are
//! derived only from numbers (inode, generation), so nothing a request says
//! can name a file outside the spool.

use fs_proto::{Gen, Ino};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The file naming the namespace a spool's replicas belong to.
pub const NAMESPACE_FILE: &str = "namespace-id";

/// The spool directory.
pub struct Spool {
    root: PathBuf,
    seq: AtomicU64,
}

impl Spool {
    /// Open (creating `data/00..ff` and `tmp/`) and remove leftovers of
    /// writes that never finished.
    pub fn open(root: &Path) -> io::Result<Self> {
        let data = root.join("data");
        for i in 0..256 {
            std::fs::create_dir_all(data.join(format!("{i:02x}")))?;
        }
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        let mut stale = 0;
        for e in std::fs::read_dir(&tmp)? {
            let e = e?;
            if std::fs::remove_file(e.path()).is_ok() {
                stale += 1;
            }
        }
        if stale > 0 {
            tracing::info!(stale, "removed unfinished writes from the spool");
        }
        Ok(Spool { root: root.to_path_buf(), seq: AtomicU64::new(0) })
    }

    /// The namespace whose replicas this spool holds (None: not stamped
    /// yet, a new spool or one made before stamps existed).
    pub fn namespace(&self) -> io::Result<Option<u128>> {
        match std::fs::read_to_string(self.root.join(NAMESPACE_FILE)) {
            Ok(s) => u128::from_str_radix(s.trim(), 16)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{NAMESPACE_FILE}: {e}"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stamp the spool with the namespace its replicas belong to (durably).
    pub fn set_namespace(&self, id: u128) -> io::Result<()> {
        let tmp = self.root.join(format!("{NAMESPACE_FILE}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, format!("{id:032x}\n").as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, self.root.join(NAMESPACE_FILE))?;
        std::fs::File::open(&self.root)?.sync_all()
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the replica of `(ino, gen)` lives.
    pub fn replica_path(&self, ino: Ino, gen: Gen) -> PathBuf {
        self.root.join("data").join(format!("{:02x}", ino & 0xff)).join(format!("{ino:016x}.{gen:016x}"))
    }

    /// A fresh temporary path for writing `(ino, gen)`.
    pub fn tmp_path(&self, ino: Ino, gen: Gen) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.root.join("tmp").join(format!("{ino:016x}.{gen:016x}.{}.{n}", std::process::id()))
    }

    /// Every replica in the spool.
    pub fn list(&self) -> io::Result<Vec<(Ino, Gen)>> {
        let mut out = Vec::new();
        for d in std::fs::read_dir(self.root.join("data"))? {
            let d = d?;
            if !d.file_type()?.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(d.path())? {
                let f = f?;
                if let Some(id) = parse_name(&f.file_name().to_string_lossy()) {
                    out.push(id);
                }
            }
        }
        Ok(out)
    }

    /// Delete a replica; Ok(false) if it was not there.
    pub fn delete(&self, ino: Ino, gen: Gen) -> io::Result<bool> {
        match std::fs::remove_file(self.replica_path(ino, gen)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// (capacity, free) bytes of the spool's file system.
    pub fn usage(&self) -> io::Result<(u64, u64)> {
        let c = std::ffi::CString::new(self.root.as_os_str().as_encoded_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out-pointer.
        let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let frsize = st.f_frsize as u64;
        Ok((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
    }

    /// A service check: can we create, write, sync and remove a file?
    pub fn probe_writable(&self) -> Option<String> {
        let p = self.root.join("tmp").join(format!(".probe.{}", std::process::id()));
        let r = std::fs::write(&p, b"probe").and_then(|_| std::fs::remove_file(&p));
        r.err().map(|e| format!("spool {} is not writable: {e}", self.root.display()))
    }
}

fn parse_name(name: &str) -> Option<(Ino, Gen)> {
    let (a, b) = name.split_once('.')?;
    if a.len() != 16 || b.len() != 16 {
        return None;
    }
    Some((Ino::from_str_radix(a, 16).ok()?, Gen::from_str_radix(b, 16).ok()?))
}

/// The one-minute load average.
pub fn load_average() -> f32 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_listing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path()).unwrap();
        let p = s.replica_path(0x1234, 7);
        assert!(p.starts_with(dir.path().join("data/34")));
        std::fs::write(&p, b"x").unwrap();
        assert_eq!(s.list().unwrap(), vec![(0x1234, 7)]);
        assert!(s.delete(0x1234, 7).unwrap());
        assert!(!s.delete(0x1234, 7).unwrap());
        assert!(s.usage().unwrap().0 > 0);
        assert!(s.probe_writable().is_none());
    }
}
