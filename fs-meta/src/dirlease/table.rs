//! The lease table, sans IO: which callback session holds the write lease
//! on which directory, which leases are being recalled since when, and
//! which stand in the way of a request. Time comes in as `now`; liveness of
//! sessions comes in as a predicate.

use crate::callbacks::SessionId;
use fs_proto::Ino;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One write lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lease {
    holder: SessionId,
    /// When the holder was asked to give it back.
    recalled: Option<Instant>,
}

/// A lease in the way of a request, and what to do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// Ask `holder` to give `dir` back (first time).
    Recall {
        /// Directory.
        dir: Ino,
        /// Holding session.
        holder: SessionId,
    },
    /// Recalled more than the timeout ago and not given back: the lease
    /// is broken (the holder is to be penalised; nothing to wait for).
    Broken {
        /// Directory.
        dir: Ino,
        /// The session that kept it.
        holder: SessionId,
    },
    /// Already recalled; wait until this instant at most.
    Wait {
        /// Directory.
        dir: Ino,
        /// When the recall times out.
        until: Instant,
    },
}

/// The table.
#[derive(Debug, Default)]
pub struct Table {
    leases: HashMap<Ino, Lease>,
}

impl Table {
    /// Whether any lease is held by a session other than `acting`.
    pub fn any_other(&self, acting: SessionId) -> bool {
        self.leases.values().any(|l| l.holder != acting)
    }

    /// Number of leases.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// No leases at all.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Who holds `dir`.
    pub fn holder(&self, dir: Ino) -> Option<SessionId> {
        self.leases.get(&dir).map(|l| l.holder)
    }

    /// The leases on `dirs` held by sessions other than `acting`: leases of
    /// dead sessions are dropped, leases recalled more than `timeout` ago are
    /// broken (the holder did not answer; reported as [`Conflict::Broken`]),
    /// the others are recalled (marked here; the caller sends the recall) or
    /// waited for.
    pub fn conflicts(
        &mut self,
        dirs: &[Ino],
        acting: SessionId,
        now: Instant,
        timeout: Duration,
        live: impl Fn(SessionId) -> bool,
    ) -> Vec<Conflict> {
        let mut out = Vec::new();
        for &dir in dirs {
            let Some(l) = self.leases.get_mut(&dir) else { continue };
            if l.holder == acting {
                continue;
            }
            if !live(l.holder) {
                self.leases.remove(&dir);
                continue;
            }
            match l.recalled {
                None => {
                    l.recalled = Some(now);
                    out.push(Conflict::Recall { dir, holder: l.holder });
                }
                Some(at) if now.duration_since(at) >= timeout => {
                    tracing::warn!(
                        dir,
                        holder = l.holder,
                        "lease holder did not give the directory back; lease broken"
                    );
                    out.push(Conflict::Broken { dir, holder: l.holder });
                    self.leases.remove(&dir);
                }
                Some(at) => out.push(Conflict::Wait { dir, until: at + timeout }),
            }
        }
        out.dedup();
        out
    }

    /// Grant `dir` to `session` unless another live session holds it.
    pub fn grant(&mut self, dir: Ino, session: SessionId, live: impl Fn(SessionId) -> bool) -> bool {
        match self.leases.get(&dir) {
            Some(l) if l.holder != session && live(l.holder) => false,
            Some(l) if l.holder == session => true,
            _ => {
                self.leases.insert(dir, Lease { holder: session, recalled: None });
                true
            }
        }
    }

    /// A directory `session` created under its leases: it holds it too.
    pub fn adopt(&mut self, dir: Ino, session: SessionId) {
        self.leases.entry(dir).or_insert(Lease { holder: session, recalled: None });
    }

    /// `session` gives `dirs` back; returns how many it held.
    pub fn release(&mut self, session: SessionId, dirs: &[Ino]) -> usize {
        let mut n = 0;
        for d in dirs {
            if self.leases.get(d).is_some_and(|l| l.holder == session) {
                self.leases.remove(d);
                n += 1;
            }
        }
        n
    }

    /// Forget the leases of sessions that ended.
    pub fn sweep(&mut self, live: impl Fn(SessionId) -> bool) {
        self.leases.retain(|_, l| live(l.holder));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn recall_wait_release() {
        let now = Instant::now();
        let mut t = Table::default();
        assert!(t.grant(5, 1, |_| true));
        assert!(!t.grant(5, 2, |_| true), "held by a live session");
        assert!(t.conflicts(&[5], 1, now, T, |_| true).is_empty(), "the holder is never in its own way");
        assert_eq!(t.conflicts(&[5, 6], 2, now, T, |_| true), vec![Conflict::Recall { dir: 5, holder: 1 }]);
        let later = now + Duration::from_secs(1);
        assert_eq!(t.conflicts(&[5], 3, later, T, |_| true), vec![Conflict::Wait { dir: 5, until: now + T }]);
        assert_eq!(t.release(2, &[5]), 0, "only the holder releases");
        assert_eq!(t.release(1, &[5]), 1);
        assert!(t.conflicts(&[5], 2, later, T, |_| true).is_empty());
        assert!(t.is_empty());
    }

    #[test]
    fn dead_and_unresponsive_holders_lose_their_leases() {
        let now = Instant::now();
        let mut t = Table::default();
        t.grant(5, 1, |_| true);
        t.grant(6, 2, |_| true);
        assert!(t.conflicts(&[5], 3, now, T, |s| s != 1).is_empty(), "a dead holder's lease is dropped");
        assert_eq!(t.holder(5), None);
        assert!(t.grant(5, 3, |_| true));
        assert_eq!(t.conflicts(&[6], 3, now, T, |_| true).len(), 1);
        assert_eq!(
            t.conflicts(&[6], 3, now + T, T, |_| true),
            vec![Conflict::Broken { dir: 6, holder: 2 }],
            "a recall that timed out breaks the lease"
        );
        assert_eq!(t.holder(6), None);
        assert!(t.grant(6, 1, |_| true) && t.grant(6, 1, |_| true));
        t.sweep(|s| s == 3);
        assert_eq!(t.len(), 1);
        assert!(t.any_other(1) && !t.any_other(3));
    }

    #[test]
    fn adopted_directories_follow_their_creator() {
        let mut t = Table::default();
        t.adopt(9, 4);
        t.adopt(9, 5);
        assert_eq!(t.holder(9), Some(4), "adoption never takes a lease from its holder");
        assert!(!t.grant(9, 5, |_| true));
    }
}
