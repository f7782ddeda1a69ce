//! The capability clock and the log of voided capabilities (issue 12,
//! finding 11).
//!
//! Every capability carries the stamp it was issued at, from one clock
//! ([`VoidLog::stamp`]: microseconds since the epoch, strictly increasing,
//! so a later meta server's stamps follow an earlier one's). A request that
//! hands out a capability takes its stamp *before* it checks permission;
//! a change of a file's mode or owner that may take access away is logged
//! with a stamp taken *after* it committed. So a capability whose check saw
//! the old mode always has a stamp before the voiding's and is void.
//!
//! The log keeps the voidings of the last capability lifetime (older ones
//! void nothing that has not expired anyway), at most [`MAX_KEPT`]; when
//! more must go, the newest dropped stamp becomes the floor under which
//! every user capability is void (safe, if coarse). File servers fetch what
//! is new with each heartbeat ([`VoidLog::since`]).

use fs_proto::capability::{CapVoid, CapVoids};
use fs_proto::Ino;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Most voidings kept (beyond this the floor rises).
pub const MAX_KEPT: usize = 100_000;

/// Most voidings one heartbeat answer carries (the rest come with the
/// next ones).
pub const MAX_PER_ANSWER: usize = 10_000;

/// One logged voiding: stamp, file, new owner's uid.
#[derive(Debug, Clone, Copy)]
struct Entry {
    stamp: u64,
    ino: Ino,
    owner: u32,
}

/// The clock and the log.
#[derive(Debug)]
pub struct VoidLog {
    clock: AtomicU64,
    hold_us: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    entries: VecDeque<Entry>,
    floor: u64,
}

fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

impl VoidLog {
    /// A log that keeps voidings for `hold_ms` (the capability lifetime).
    pub fn new(hold_ms: u64) -> Self {
        VoidLog {
            clock: AtomicU64::new(0),
            hold_us: AtomicU64::new(hold_ms.saturating_mul(1000)),
            state: Mutex::default(),
        }
    }

    /// Keep voidings for `hold_ms` from now on.
    pub fn set_hold(&self, hold_ms: u64) {
        self.hold_us.store(hold_ms.saturating_mul(1000), Ordering::Relaxed);
    }

    fn hold_us(&self) -> u64 {
        self.hold_us.load(Ordering::Relaxed)
    }

    /// A new stamp, later than every one handed out before.
    pub fn stamp(&self) -> u64 {
        let now = now_us();
        let mut cur = self.clock.load(Ordering::Relaxed);
        loop {
            let next = now.max(cur + 1);
            match self.clock.compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(seen) => cur = seen,
            }
        }
    }

    /// The latest stamp handed out.
    fn current(&self) -> u64 {
        self.clock.load(Ordering::Acquire)
    }

    /// Void the users' capabilities for `inos` issued until now, except
    /// their new owners' (call after the change committed).
    pub fn void(&self, inos: &[(Ino, u32)]) {
        if inos.is_empty() {
            return;
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for &(ino, owner) in inos {
            let stamp = self.stamp();
            st.entries.push_back(Entry { stamp, ino, owner });
        }
        self.prune(&mut st);
    }

    fn prune(&self, st: &mut State) {
        let old = now_us().saturating_sub(self.hold_us());
        while st.entries.front().is_some_and(|e| e.stamp < old) {
            st.entries.pop_front();
        }
        while st.entries.len() > MAX_KEPT {
            if let Some(e) = st.entries.pop_front() {
                st.floor = st.floor.max(e.stamp + 1);
            }
        }
    }

    /// What a file server that has the voidings up to `seen` needs next
    /// (`name`: the user name of a uid). A `seen` ahead of this clock
    /// (another meta server's, or a clock stepped back) gets everything.
    pub fn since(&self, seen: u64, name: impl Fn(u32) -> Option<String>) -> CapVoids {
        let seen = if seen > self.current() { 0 } else { seen };
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.prune(&mut st);
        let start = st.entries.partition_point(|e| e.stamp <= seen);
        let batch: Vec<Entry> = st.entries.iter().skip(start).take(MAX_PER_ANSWER).copied().collect();
        let upto = match batch.last() {
            Some(last) if start + batch.len() < st.entries.len() => last.stamp,
            _ => self.current(),
        };
        let floor = st.floor;
        drop(st);
        CapVoids {
            entries: batch.into_iter().map(|e| CapVoid { ino: e.ino, before: e.stamp, owner: name(e.owner) }).collect(),
            upto,
            floor,
            hold_ms: self.hold_us() / 1000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_increase_and_voidings_come_once_in_order() {
        let log = VoidLog::new(600_000);
        let a = log.stamp();
        let b = log.stamp();
        assert!(b > a);
        log.void(&[(7, 1000), (8, 1001)]);
        let name = |uid: u32| Some(format!("u{uid}"));
        let v = log.since(0, name);
        assert_eq!(v.entries.iter().map(|e| e.ino).collect::<Vec<_>>(), [7, 8]);
        assert!(v.entries[0].before > b && v.entries[1].before > v.entries[0].before);
        assert_eq!(v.entries[0].owner.as_deref(), Some("u1000"));
        assert_eq!(v.floor, 0);
        // Up to date: nothing again; a later voiding only.
        assert!(log.since(v.upto, name).entries.is_empty());
        log.void(&[(9, 1000)]);
        let w = log.since(v.upto, name);
        assert_eq!(w.entries.iter().map(|e| e.ino).collect::<Vec<_>>(), [9]);
        // A server that saw a stamp this clock never gave gets everything.
        assert_eq!(log.since(u64::MAX, name).entries.len(), 3);
    }

    #[test]
    fn too_many_voidings_raise_the_floor_and_answers_are_paged() {
        let log = VoidLog::new(600_000);
        let many: Vec<(Ino, u32)> = (0..(MAX_KEPT as u64 + 5)).map(|i| (i, 1)).collect();
        log.void(&many);
        let first = log.since(0, |_| None);
        assert!(first.floor > 0, "the five oldest were dropped into the floor");
        assert_eq!(first.entries.len(), MAX_PER_ANSWER);
        assert_eq!(first.entries[0].ino, 5);
        assert_eq!(first.upto, first.entries.last().unwrap().before);
        let second = log.since(first.upto, |_| None);
        assert_eq!(second.entries[0].ino, 5 + MAX_PER_ANSWER as u64);
    }
}
