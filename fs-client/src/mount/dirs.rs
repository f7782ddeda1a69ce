//! Open directories and creating open files: a directory handle holds a
//! snapshot of the listing taken at opendir (from the cache when the lease
//! holds), with `.` and `..`, so that readdir offsets stay stable.

use super::fs::{Inner, Op};
use fs_proto::{Attr, Cred, FileKind, Ino};
use fuser::{Errno, FileAttr, INodeNo};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One entry of an open directory.
pub struct DirItem {
    /// Name.
    pub name: String,
    /// Attributes as shown (with the FUSE inode number).
    pub attr: FileAttr,
}

static NEXT_DIR: AtomicU64 = AtomicU64::new(1);

impl Inner {
    /// Open a directory: snapshot its listing.
    pub async fn opendir(&self, cred: Option<&Cred>, ino: Ino) -> Op<u64> {
        let (me, _) = self.attr(cred, ino).await?;
        if me.kind != FileKind::Directory {
            return Err(Errno::ENOTDIR);
        }
        let list = self.listing(cred, ino).await?;
        let mut items = Vec::with_capacity(list.len() + 2);
        let dot = self.file_attr(&me);
        items.push(DirItem { name: ".".into(), attr: dot });
        let mut dotdot = dot;
        if self.inodes.to_fuse(ino) != super::inodes::FUSE_ROOT {
            if let Some((p, _)) = self.cache.name(ino, "..").and_then(|(p, l)| p.map(|p| (p, l))) {
                dotdot.ino = INodeNo(self.inodes.to_fuse(p));
            }
        }
        items.push(DirItem { name: "..".into(), attr: dotdot });
        for e in list.iter().filter(|e| !e.name.starts_with(super::entries::HIDDEN_PREFIX)) {
            let Some(a) = &e.attr else { continue };
            let a = self.overlay(a.clone()).await;
            items.push(DirItem { name: e.name.clone(), attr: self.file_attr(&a) });
        }
        let fh = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        self.dirs.lock().unwrap_or_else(|p| p.into_inner()).insert(fh, Arc::new(items));
        Ok(fh)
    }

    /// The snapshot of an open directory.
    pub fn dir(&self, fh: u64) -> Option<Arc<Vec<DirItem>>> {
        self.dirs.lock().unwrap_or_else(|p| p.into_inner()).get(&fh).cloned()
    }

    /// Close a directory handle.
    pub fn close_dir(&self, fh: u64) {
        self.dirs.lock().unwrap_or_else(|p| p.into_inner()).remove(&fh);
    }

    /// Create and open a regular file.
    ///
    /// POSIX lets the descriptor that created a file write it whatever its
    /// mode; the meta server checks the mode at each commit. So a file
    /// created without owner write permission (git's objects are 0444) is
    /// made writable for its owner until its last close, then given its
    /// mode; it shows that mode all along. With `-o cred` commits run with
    /// the open's authority and this is not needed.
    #[allow(clippy::too_many_arguments)]
    pub async fn create(
        &self,
        cred: Option<&Cred>,
        parent: Ino,
        name: &str,
        mode: u32,
        exclusive: bool,
        read: bool,
        write: bool,
    ) -> Op<(Attr, Duration, u64)> {
        if let Some(r) = self.local_create(cred, parent, name, mode, exclusive, write).await {
            return r;
        }
        let perm = mode & 0o7777;
        let defer = write && !self.opts.cred && perm & 0o200 == 0;
        let made = if defer { perm | 0o200 } else { perm };
        let (a, ttl) = match self.mknod(cred, parent, name, made | libc::S_IFREG, 0, exclusive).await {
            Ok(r) => r,
            Err(e) if !exclusive && e.code() == libc::EEXIST => self.lookup(cred, parent, name).await?,
            Err(e) => return Err(e),
        };
        if a.kind != FileKind::Regular {
            return Err(if a.kind == FileKind::Directory { Errno::EISDIR } else { Errno::EINVAL });
        }
        let (fh, file) = self.files.open(a.ino, write);
        let mut st = file.state.lock().await;
        if st.dirty.is_none() {
            st.attr = Some(a.clone());
            st.grant = None;
        }
        let created = a.perm == made && a.size == 0;
        if defer && created {
            st.final_perm = Some(perm);
        }
        drop(st);
        let a = self.overlay(a).await;
        // A new file has no bytes to fetch; `read` matters only to the kernel.
        let _ = read;
        self.keep_pages(a.ino, a.gen);
        Ok((a, ttl, fh))
    }
}
