//! POSIX locks across mounts: `fcntl` F_GETLK/F_SETLK/F_SETLKW (process and
//! OFD locks) and `flock` (which the kernel sends as whole-file locks of the
//! open file, as NFS does them) are taken at the meta server
//! (`fs_meta::locks`), so processes on different mounts exclude each other.
//!
//! Locks also order data as NFS's do: before a lock is given back, what
//! this mount wrote to the file is committed; once a lock is taken, what
//! this mount cached of the file (kernel pages, read grant, read-ahead) is
//! dropped, so the holder reads what the previous holder wrote. A lock
//! lives as long as the mount's callback session: if the session is lost
//! (meta restart, long partition), so are its locks (the mount logs the lost session).

use super::fs::{errno, unexpected, Inner, Op};
use fs_proto::callback::Invalidation;
use fs_proto::meta::{LockKind, LockRequest, MetaRequest, MetaResponse};
use fs_proto::{Cred, Ino};
use fuser::Errno;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// The lock owners that took locks through this mount, by file: a close
/// gives their locks back only where there are some (a close of any other
/// file costs no request).
#[derive(Debug, Default)]
pub struct Held(Mutex<HashMap<Ino, HashSet<u64>>>);

impl Held {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Ino, HashSet<u64>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, ino: Ino, owner: u64) {
        self.map().entry(ino).or_default().insert(owner);
    }

    /// Whether `owner` took locks on `ino` (and forget it).
    fn take(&self, ino: Ino, owner: u64) -> bool {
        let mut m = self.map();
        let Some(set) = m.get_mut(&ino) else { return false };
        let had = set.remove(&owner);
        if set.is_empty() {
            m.remove(&ino);
        }
        had
    }
}

/// How long a lock request waits for the mount's callback session.
const NO_SESSION_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// A lock operation as the kernel asked for it.
#[derive(Debug, Clone, Copy)]
pub struct LockAsk {
    /// The file.
    pub ino: Ino,
    /// The handle it came through.
    pub fh: u64,
    /// The kernel's lock owner.
    pub owner: u64,
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive; the kernel's OFFSET_MAX means "to the end").
    pub end: u64,
    /// `F_RDLCK`, `F_WRLCK` or `F_UNLCK`.
    pub typ: i32,
    /// The asking process.
    pub pid: u32,
}

fn kind_of(typ: i32) -> Op<LockKind> {
    match typ {
        libc::F_RDLCK => Ok(LockKind::Read),
        libc::F_WRLCK => Ok(LockKind::Write),
        libc::F_UNLCK => Ok(LockKind::Unlock),
        _ => Err(Errno::EINVAL),
    }
}

fn typ_of(kind: LockKind) -> i32 {
    match kind {
        LockKind::Read => libc::F_RDLCK,
        LockKind::Write => libc::F_WRLCK,
        LockKind::Unlock => libc::F_UNLCK,
    }
}

impl LockAsk {
    fn request(&self, wait: bool) -> Op<LockRequest> {
        Ok(LockRequest {
            ino: self.ino,
            owner: self.owner,
            kind: kind_of(self.typ)?,
            start: self.start,
            end: self.end.max(self.start),
            pid: self.pid,
            wait,
        })
    }
}

impl Inner {
    /// `F_GETLK`: the lock that would stand in the way, as (start, end,
    /// type, pid); type `F_UNLCK` when none would.
    pub async fn getlk(&self, cred: Option<&Cred>, ask: LockAsk) -> Op<(u64, u64, i32, u32)> {
        let req = MetaRequest::TestLock(ask.request(false)?);
        match self.call(cred, req).await?.0 {
            MetaResponse::LockHeld(None) => Ok((ask.start, ask.end, libc::F_UNLCK, 0)),
            MetaResponse::LockHeld(Some(h)) => Ok((h.start, h.end, typ_of(h.kind), h.pid)),
            other => Err(unexpected(other)),
        }
    }

    /// `F_SETLK` (`sleep` false: EAGAIN if another owner's lock stands in
    /// the way) or `F_SETLKW` (wait until it goes).
    pub async fn setlk(&self, cred: Option<&Cred>, ask: LockAsk, sleep: bool) -> Op<()> {
        let req = ask.request(sleep)?;
        if req.kind == LockKind::Unlock {
            // What was written under the lock is out before anyone else
            // may take it.
            self.flush(ask.fh).await?;
        }
        // Without a callback session (re-subscribing after a lost one) the
        // meta server takes no lock: wait for it, bounded.
        let no_session_until = std::time::Instant::now() + NO_SESSION_WAIT;
        loop {
            let r = self.remote.call(cred, MetaRequest::Lock(req)).await;
            match r.map(|(a, _)| a) {
                Ok(MetaResponse::Done) => break,
                Err(e) if e.code() == Some(fs_proto::ErrorCode::Unavailable) => {
                    if std::time::Instant::now() >= no_session_until {
                        return Err(Errno::ENOLCK);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Ok(MetaResponse::LockHeld(_)) => return Err(Errno::EAGAIN),
                // Still blocked after the meta server's wait bound: ask again.
                Ok(MetaResponse::LockWaiting) => continue,
                Ok(other) => return Err(unexpected(other)),
                Err(e) => return Err(errno(&e)),
            }
        }
        if req.kind != LockKind::Unlock {
            self.locks.add(ask.ino, ask.owner);
            self.drop_cached_data(ask.ino).await;
        }
        Ok(())
    }

    /// Give back every lock `owner` holds on `ino` (its process closed a
    /// descriptor of the file, or its flocked file was closed).
    pub async fn unlock_owner(&self, ino: Ino, owner: u64) {
        if !self.locks.take(ino, owner) {
            return;
        }
        let req = LockRequest { ino, owner, kind: LockKind::Unlock, start: 0, end: u64::MAX, pid: 0, wait: false };
        if let Err(e) = self.remote.call(None, MetaRequest::Lock(req)).await {
            tracing::debug!(ino, owner, "giving locks back: {e}");
        }
    }

    /// Forget what this mount cached of `ino`'s bytes: the next read asks
    /// the meta server for the current generation.
    /// Revalidate what this mount knows of `ino` (as NFS does on taking a
    /// lock): its attributes are asked again (an open file's size is the
    /// base of its next write), its read grant, read-ahead and kernel pages
    /// dropped, so reads fetch the current generation.
    async fn drop_cached_data(&self, ino: Ino) {
        self.cache.forget_attr(ino);
        self.prefetch.forget(ino);
        let fresh = self.call_attr(self.file_cred().as_ref(), MetaRequest::GetAttr { ino }).await;
        if let Some(f) = self.files.file(ino) {
            let mut st = f.state.lock().await;
            if st.dirty.is_none() {
                st.grant = None;
                match &fresh {
                    Ok((a, _)) => st.attr = Some(a.clone()),
                    Err(e) => tracing::debug!(ino, "attributes not revalidated after a lock: {e:?}"),
                }
            }
        }
        self.notes.send(&[Invalidation::Attr { ino }]);
    }
}
