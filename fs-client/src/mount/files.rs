//! Open files: FUSE file handles, and per inode the state every handle of
//! it shares (the read grant of the current generation, the latest known
//! attributes, dirty data not yet committed).
//!
//! Reads of a clean file need no lock beyond their handle's reader; writes
//! and reads of a dirty file take the inode's state lock, so a reader always
//! sees the bytes written through any handle of this mount.

use super::dirty::Dirty;
use super::reader::SharedReader;
use fs_proto::meta::ReadGrant;
use fs_proto::{Attr, Ino};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// What every handle of one inode shares.
#[derive(Default)]
pub struct FileState {
    /// Grant to read the current generation (None: not fetched or stale).
    pub grant: Option<ReadGrant>,
    /// Latest attributes known (from open or the last commit).
    pub attr: Option<Attr>,
    /// Uncommitted writes.
    pub dirty: Option<Dirty>,
    /// Removed while open: the hidden name it lives under until the last
    /// close (directory, name).
    pub hidden: Option<(Ino, String)>,
    /// Created without owner write permission but opened for writing: the
    /// mode to set once the last handle is closed (see `Inner::create`).
    pub final_perm: Option<u32>,
    /// Write-behind of a sequentially written file.
    pub upload: Option<super::upload::Upload>,
    /// Access and modification times set while data was pending (the
    /// kernel's write-back cache sends them as it writes the inode back):
    /// applied right after the data's commit, which would overwrite them.
    pub pending_times: Option<(Option<fs_proto::meta::TimeSet>, Option<fs_proto::meta::TimeSet>)>,
    /// Set-user-id and set-group-id bits were cleared for a write by a
    /// non-root writer (until the mode is changed again).
    pub privs_killed: bool,
}

/// One open inode.
pub struct OpenFile {
    /// The inode.
    pub ino: Ino,
    /// Shared state.
    pub state: tokio::sync::Mutex<FileState>,
}

/// One FUSE file handle.
#[derive(Clone)]
pub struct Handle {
    /// The inode's shared state.
    pub file: Arc<OpenFile>,
    /// This handle's read stream.
    pub reader: SharedReader,
    /// Opened for writing.
    pub write: bool,
}

#[derive(Default)]
struct Table {
    handles: HashMap<u64, Handle>,
    open: HashMap<Ino, (Arc<OpenFile>, usize)>,
}

/// The open-file table.
#[derive(Default)]
pub struct Files {
    next: AtomicU64,
    table: Mutex<Table>,
}

impl Files {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open a handle on `ino`; returns the handle number and the shared state.
    pub fn open(&self, ino: Ino, write: bool) -> (u64, Arc<OpenFile>) {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut t = self.table();
        let entry = t.open.entry(ino).or_insert_with(|| (Arc::new(OpenFile { ino, state: Default::default() }), 0));
        entry.1 += 1;
        let file = entry.0.clone();
        t.handles.insert(fh, Handle { file: file.clone(), reader: Default::default(), write });
        (fh, file)
    }

    /// The handle `fh`.
    pub fn handle(&self, fh: u64) -> Option<Handle> {
        self.table().handles.get(&fh).cloned()
    }

    /// The open state of `ino`, if any handle is open.
    pub fn file(&self, ino: Ino) -> Option<Arc<OpenFile>> {
        self.table().open.get(&ino).map(|(f, _)| f.clone())
    }

    /// Close handle `fh`; returns the inode state if it was the last handle.
    pub fn close(&self, fh: u64) -> Option<Arc<OpenFile>> {
        let mut t = self.table();
        let h = t.handles.remove(&fh)?;
        let ino = h.file.ino;
        let last = match t.open.get_mut(&ino) {
            Some((_, n)) => {
                *n -= 1;
                *n == 0
            }
            None => false,
        };
        if last {
            t.open.remove(&ino);
            return Some(h.file);
        }
        None
    }

    /// How many handles of `ino` are open.
    pub fn handles(&self, ino: Ino) -> usize {
        self.table().open.get(&ino).map_or(0, |(_, n)| *n)
    }

    /// Every open inode (to commit at unmount).
    pub fn all(&self) -> Vec<Arc<OpenFile>> {
        self.table().open.values().map(|(f, _)| f.clone()).collect()
    }
}
