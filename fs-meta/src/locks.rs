//! POSIX byte-range locks across mounts (`fcntl` F_SETLK/F_SETLKW/F_GETLK,
//! OFD locks, and `flock`, which mounts send as whole-file locks as NFS
//! does). The meta server is the one place that knows every lock.
//!
//! A lock belongs to (callback session, lock owner): it lives only as long
//! as its holder's session, so a dead mount's locks go when its session
//! does (the connection closes, or falls silent past the idle bound). Locks
//! are memory only: a restart of the meta server ends every session, and
//! with it every lock (a mount logs that its locks are gone).
//!
//! [`Table`] is the sans-IO core (POSIX rules: an owner never conflicts with
//! itself; reads share; setting a range replaces what the owner held there,
//! splitting ranges as needed). [`Locks`] adds waiting: a blocked
//! `F_SETLKW` waits for a release or the end of a session, never polls,
//! and is answered "still waiting" after [`LOCK_WAIT_MS`] so that no call
//! outlives its client's bound (the client asks again at once).

use crate::callbacks::{Callbacks, SessionId};
use fs_proto::meta::{LockInfo, LockKind, LockRequest, MetaResponse, LOCK_WAIT_MS};
use fs_proto::{ErrorCode, Ino, RemoteError};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// Most lock ranges one session may hold.
pub const MAX_LOCKS_PER_SESSION: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    session: SessionId,
    owner: u64,
    write: bool,
    start: u64,
    end: u64,
    pid: u32,
}

impl Held {
    fn info(&self) -> LockInfo {
        LockInfo {
            kind: if self.write { LockKind::Write } else { LockKind::Read },
            start: self.start,
            end: self.end,
            pid: self.pid,
        }
    }
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 <= b.1 && b.0 <= a.1
}

/// Every lock, by file.
#[derive(Debug, Default)]
pub struct Table {
    by_ino: HashMap<Ino, Vec<Held>>,
    per_session: HashMap<SessionId, usize>,
}

impl Table {
    /// The first lock of another owner that stands in the way of `r` by
    /// `session` (locks of sessions that are not `live` are dropped first).
    pub fn conflict(
        &mut self,
        session: SessionId,
        r: &LockRequest,
        live: impl Fn(SessionId) -> bool,
    ) -> Option<LockInfo> {
        self.sweep_ino(r.ino, &live);
        if r.kind == LockKind::Unlock {
            return None;
        }
        let write = r.kind == LockKind::Write;
        self.by_ino.get(&r.ino)?.iter().find_map(|h| {
            let mine = h.session == session && h.owner == r.owner;
            (!mine && (write || h.write) && overlaps((h.start, h.end), (r.start, r.end))).then(|| h.info())
        })
    }

    /// Apply `r` for `session` (the caller checked [`Self::conflict`]):
    /// what the owner held in the range is replaced. False if the session
    /// would hold more than [`MAX_LOCKS_PER_SESSION`] ranges.
    pub fn set(&mut self, session: SessionId, r: &LockRequest) -> bool {
        let list = self.by_ino.entry(r.ino).or_default();
        let before = list.clone();
        let mut kept = Vec::with_capacity(list.len() + 2);
        let mut delta: isize = 0;
        for h in list.drain(..) {
            if h.session != session || h.owner != r.owner || !overlaps((h.start, h.end), (r.start, r.end)) {
                kept.push(h);
                continue;
            }
            delta -= 1;
            if h.start < r.start {
                kept.push(Held { end: r.start - 1, ..h });
                delta += 1;
            }
            if h.end > r.end {
                kept.push(Held { start: r.end + 1, ..h });
                delta += 1;
            }
        }
        if r.kind != LockKind::Unlock {
            kept.push(Held {
                session,
                owner: r.owner,
                write: r.kind == LockKind::Write,
                start: r.start,
                end: r.end,
                pid: r.pid,
            });
            delta += 1;
        }
        let count = self.per_session.get(&session).copied().unwrap_or(0) as isize + delta;
        if count > MAX_LOCKS_PER_SESSION as isize {
            // Refused whole: the owner keeps what it held.
            *list = before;
            return false;
        }
        if kept.is_empty() {
            self.by_ino.remove(&r.ino);
        } else {
            *list = kept;
        }
        self.per_session.insert(session, count.max(0) as usize);
        true
    }

    fn sweep_ino(&mut self, ino: Ino, live: &impl Fn(SessionId) -> bool) {
        if let Some(list) = self.by_ino.get_mut(&ino) {
            let before = list.len();
            list.retain(|h| live(h.session));
            if list.len() != before {
                if list.is_empty() {
                    self.by_ino.remove(&ino);
                }
                self.per_session.retain(|s, _| live(*s));
            }
        }
    }

    /// Number of lock ranges held.
    pub fn len(&self) -> usize {
        self.by_ino.values().map(Vec::len).sum()
    }

    /// No locks at all.
    pub fn is_empty(&self) -> bool {
        self.by_ino.is_empty()
    }
}

/// The lock table and its waiters.
#[derive(Default)]
pub struct Locks {
    table: Mutex<Table>,
    /// Bumped on every release.
    released: watch::Sender<u64>,
}

impl Locks {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of lock ranges held (tests, status).
    pub fn len(&self) -> usize {
        self.table().len()
    }

    /// No locks held.
    pub fn is_empty(&self) -> bool {
        self.table().is_empty()
    }

    /// Serve a `Lock` (`test`: a `TestLock`) from `session`.
    pub async fn serve(
        &self,
        cbs: &Callbacks,
        session: SessionId,
        r: &LockRequest,
        test: bool,
    ) -> Result<MetaResponse, RemoteError> {
        if r.start > r.end {
            return Err(RemoteError::new(ErrorCode::InvalidArgument, "lock range ends before it starts"));
        }
        let live = |s: SessionId| cbs.is_subscribed(s);
        if test {
            return Ok(MetaResponse::LockHeld(self.table().conflict(session, r, live)));
        }
        if !live(session) {
            return Err(RemoteError::new(
                ErrorCode::Unavailable,
                "locks need a callback session (the mount has none right now); try again",
            ));
        }
        let give_up = tokio::time::Instant::now() + Duration::from_millis(LOCK_WAIT_MS);
        loop {
            let mut released = self.released.subscribe();
            let mut endings = cbs.endings();
            {
                let mut t = self.table();
                match t.conflict(session, r, live) {
                    None => {
                        if !t.set(session, r) {
                            return Err(RemoteError::new(
                                ErrorCode::NoLocks,
                                format!("a session may hold at most {MAX_LOCKS_PER_SESSION} lock ranges"),
                            ));
                        }
                        drop(t);
                        if r.kind != LockKind::Write {
                            // Unlocking, or a write lock made a read lock:
                            // someone may be waiting for it.
                            self.released.send_modify(|n| *n += 1);
                        }
                        return Ok(MetaResponse::Done);
                    }
                    Some(held) if !r.wait => return Ok(MetaResponse::LockHeld(Some(held))),
                    Some(_) => {}
                }
            }
            let woken = tokio::time::timeout_at(give_up, async {
                tokio::select! {
                    _ = released.changed() => {}
                    _ = endings.changed() => {}
                }
            })
            .await;
            if woken.is_err() {
                return Ok(MetaResponse::LockWaiting);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(owner: u64, kind: LockKind, start: u64, end: u64) -> LockRequest {
        LockRequest { ino: 7, owner, kind, start, end, pid: owner as u32, wait: false }
    }

    #[test]
    fn posix_rules() {
        let mut t = Table::default();
        let all = |_| true;
        assert!(t.set(1, &req(1, LockKind::Write, 0, 99)));
        assert_eq!(t.conflict(1, &req(1, LockKind::Write, 0, 10), all), None, "an owner never conflicts with itself");
        assert_eq!(
            t.conflict(1, &req(2, LockKind::Read, 50, 60), all).map(|i| i.pid),
            Some(1),
            "same session, other owner"
        );
        assert_eq!(t.conflict(2, &req(1, LockKind::Read, 100, 200), all), None, "no overlap");
        // Unlock the middle: two ranges remain.
        assert!(t.set(1, &req(1, LockKind::Unlock, 40, 59)));
        assert_eq!(t.len(), 2);
        assert_eq!(t.conflict(2, &req(9, LockKind::Write, 40, 59), all), None);
        assert!(t.conflict(2, &req(9, LockKind::Write, 39, 39), all).is_some());
        // Reads share; a write waits for every reader.
        assert!(t.set(2, &req(5, LockKind::Read, 200, 300)));
        assert_eq!(t.conflict(3, &req(6, LockKind::Read, 250, 260), all), None);
        assert!(t.conflict(3, &req(6, LockKind::Write, 250, 260), all).is_some());
        // Down-grading in place.
        assert!(t.set(1, &req(1, LockKind::Read, 0, 39)));
        assert_eq!(t.conflict(3, &req(6, LockKind::Read, 0, 39), all), None);
        // A dead session's locks are gone.
        assert_eq!(t.conflict(3, &req(6, LockKind::Write, 0, u64::MAX), |s| s != 1 && s != 2), None);
        assert!(t.is_empty());
    }

    #[test]
    fn a_session_holds_a_bounded_number_of_ranges() {
        let mut t = Table::default();
        for i in 0..MAX_LOCKS_PER_SESSION as u64 - 1 {
            assert!(t.set(1, &req(1, LockKind::Write, i * 2, i * 2)));
        }
        let wide = (1u64 << 40, (1u64 << 40) + 10);
        assert!(t.set(1, &req(1, LockKind::Write, wide.0, wide.1)));
        assert!(!t.set(1, &req(1, LockKind::Write, u64::MAX - 1, u64::MAX - 1)), "one more is refused");
        assert!(!t.set(1, &req(1, LockKind::Unlock, wide.0 + 5, wide.0 + 5)), "as is a split that makes one more");
        assert!(t.conflict(2, &req(2, LockKind::Write, wide.0 + 5, wide.0 + 5), |_| true).is_some(), "still held");
        assert!(t.set(2, &req(2, LockKind::Write, u64::MAX - 1, u64::MAX - 1)), "another session is not refused");
        assert!(t.set(1, &req(1, LockKind::Unlock, 0, u64::MAX)));
        assert_eq!(t.len(), 1);
    }
}
