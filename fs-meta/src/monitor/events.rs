//! Recent errors and recoveries for the status page: a bounded ring, newest
//! last, with running totals per level for `/metrics`.

use fs_proto::monitor::{Event, EventLevel};
use fs_proto::Timestamp;
use std::collections::VecDeque;
use std::sync::Mutex;

/// The ring.
pub struct Events {
    inner: Mutex<Inner>,
}

struct Inner {
    ring: VecDeque<Event>,
    cap: usize,
    /// Totals since start: errors, warnings, infos.
    totals: [u64; 3],
}

fn slot(level: EventLevel) -> usize {
    match level {
        EventLevel::Error => 0,
        EventLevel::Warning => 1,
        EventLevel::Info => 2,
    }
}

impl Events {
    /// Keep at most `cap` events (at least one).
    pub fn new(cap: usize) -> Self {
        Events { inner: Mutex::new(Inner { ring: VecDeque::new(), cap: cap.max(1), totals: [0; 3] }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record an event now; also logged.
    pub fn record(&self, level: EventLevel, host: Option<&str>, message: impl Into<String>) {
        let message = message.into();
        match level {
            EventLevel::Error => tracing::warn!(host, "{message}"),
            EventLevel::Warning => tracing::warn!(host, "{message}"),
            EventLevel::Info => tracing::info!(host, "{message}"),
        }
        let ev = Event { at_ms: Timestamp::now().as_millis(), level, host: host.map(str::to_string), message };
        let mut g = self.lock();
        g.totals[slot(level)] += 1;
        if g.ring.len() == g.cap {
            g.ring.pop_front();
        }
        g.ring.push_back(ev);
    }

    /// The events, newest first.
    pub fn recent(&self) -> Vec<Event> {
        self.lock().ring.iter().rev().cloned().collect()
    }

    /// Events recorded since start at `level`.
    pub fn total(&self, level: EventLevel) -> u64 {
        self.lock().totals[slot(level)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_newest_first_with_totals() {
        let e = Events::new(3);
        for i in 0..5 {
            e.record(EventLevel::Error, Some("pop1"), format!("e{i}"));
        }
        e.record(EventLevel::Info, None, "back");
        let r = e.recent();
        assert_eq!(r.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["back", "e4", "e3"]);
        assert_eq!(e.total(EventLevel::Error), 5);
        assert_eq!(e.total(EventLevel::Info), 1);
        assert_eq!(e.total(EventLevel::Warning), 0);
    }
}
