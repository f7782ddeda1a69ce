//! Counters of requests sent per kind, so tests and `--debug` output can show
//! exactly what went over the wire (e.g. that a warm `stat` sends nothing).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Requests sent, by kind, plus data-plane byte counts.
pub struct Counters {
    by_kind: Mutex<BTreeMap<&'static str, u64>>,
    meta_wait_us: AtomicU64,
    /// Moves on every change: what [`Counters::wait_until`] waits for.
    changes: tokio::sync::watch::Sender<u64>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            by_kind: Mutex::default(),
            meta_wait_us: AtomicU64::new(0),
            changes: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Counters {
    /// Count one request of `kind`.
    pub fn bump(&self, kind: &'static str) {
        self.add(kind, 1);
    }

    /// Add `n` to the counter `kind`.
    pub fn add(&self, kind: &'static str, n: u64) {
        *self.by_kind.lock().unwrap_or_else(|p| p.into_inner()).entry(kind).or_insert(0) += n;
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Wait until `cond` holds of these counters, re-checking it at every
    /// change of any counter (an event, not a timer), at most `bound`;
    /// whether it holds.
    pub async fn wait_until(&self, bound: Duration, cond: impl Fn(&Self) -> bool) -> bool {
        let mut changed = self.changes.subscribe();
        let until = tokio::time::Instant::now() + bound;
        loop {
            changed.borrow_and_update();
            if cond(self) {
                return true;
            }
            match tokio::time::timeout_at(until, changed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return cond(self),
            }
        }
    }

    /// Add time spent waiting for metadata replies.
    pub fn add_meta_wait(&self, d: Duration) {
        self.meta_wait_us.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Time spent waiting for metadata replies so far (summed over calls:
    /// calls in flight at once each count).
    pub fn meta_wait(&self) -> Duration {
        Duration::from_micros(self.meta_wait_us.load(Ordering::Relaxed))
    }

    /// The current value of one counter.
    pub fn get(&self, kind: &str) -> u64 {
        self.by_kind.lock().unwrap_or_else(|p| p.into_inner()).get(kind).copied().unwrap_or(0)
    }

    /// Every counter.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        self.by_kind.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sum of the metadata request counters (every name not starting with
    /// `data.`, data plane, `fuse.`, requests the kernel made, or `cache.`).
    pub fn meta_requests(&self) -> u64 {
        self.snapshot().iter().filter(|(k, _)| is_meta_request(k)).map(|(_, v)| v).sum()
    }
}

/// Whether counter `kind` counts metadata requests (not `data.`, the data
/// plane, nor `fuse.`, requests the kernel made to the mount, nor `cache.`,
/// what happened to the mount's cache).
pub fn is_meta_request(kind: &str) -> bool {
    !kind.starts_with("data.") && !kind.starts_with("fuse.") && !kind.starts_with("cache.")
}
