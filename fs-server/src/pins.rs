//! Replicas that must not be deleted right now: copies being made or just
//! registered. The meta server cancels a pending deletion of a replica when
//! the same replica is registered again, but a heartbeat answer listing it
//! may already be on its way; a pinned replica is skipped by heartbeat
//! deletions (and not acknowledged, so nothing is lost if the deletion was
//! meant).

use fs_proto::{Gen, Ino};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a replica stays pinned after its copy finished.
pub const AFTER: Duration = Duration::from_secs(30);

/// The pinned replicas.
#[derive(Default)]
pub struct Pins {
    map: Mutex<HashMap<(Ino, Gen), Option<Instant>>>,
}

impl Pins {
    /// Pin while a copy is being made.
    pub fn hold(&self, ino: Ino, gen: Gen) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).insert((ino, gen), None);
    }

    /// The copy finished: keep the pin for [`AFTER`] more.
    pub fn release(&self, ino: Ino, gen: Gen) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).insert((ino, gen), Some(Instant::now() + AFTER));
    }

    /// Whether `(ino, gen)` must not be deleted now.
    pub fn is_pinned(&self, ino: Ino, gen: Gen) -> bool {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, until| until.is_none_or(|t| t > now));
        map.contains_key(&(ino, gen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_then_released_stays_pinned_a_while() {
        let p = Pins::default();
        assert!(!p.is_pinned(1, 2));
        p.hold(1, 2);
        assert!(p.is_pinned(1, 2));
        assert!(!p.is_pinned(1, 3));
        p.release(1, 2);
        assert!(p.is_pinned(1, 2), "still pinned right after the copy");
    }
}
