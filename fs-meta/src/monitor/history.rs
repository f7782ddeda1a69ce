//! Per-host rates and trends, sans IO: [`Tracker::observe`] takes the host
//! registry at a time and returns what changed (a host went down or came
//! back, a problem appeared or went away). Rates come from the byte counters
//! of successive heartbeats; history is two bounded rings per host, a fine
//! one (every observation, a few minutes) and a coarse one (averages over a
//! step, hours).

use fs_proto::monitor::{HistorySample, HostHistory};
use fs_proto::HostInfo;
use std::collections::{HashMap, VecDeque};

/// Rates are averaged over heartbeats of the last this many ms.
pub const RATE_WINDOW_MS: u64 = 5_000;

/// Sizes of the rings.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Observation interval (ms), for the page's time axis.
    pub fine_step_ms: u64,
    /// Recent samples kept per host.
    pub fine_samples: usize,
    /// Coarse interval (ms).
    pub coarse_step_ms: u64,
    /// Coarse samples kept per host.
    pub coarse_samples: usize,
}

/// Something worth an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A live host stopped heartbeating.
    Down {
        /// Host.
        host: String,
        /// Its last heartbeat (ms since the epoch).
        last_heartbeat_ms: u64,
    },
    /// A down host heartbeats again.
    Up {
        /// Host.
        host: String,
    },
    /// A host reports a new problem.
    Problem {
        /// Host.
        host: String,
        /// The problem.
        problem: String,
    },
    /// A problem a host reported is gone.
    Resolved {
        /// Host.
        host: String,
        /// The problem.
        problem: String,
    },
}

#[derive(Default)]
struct Accum {
    start_ms: u64,
    in_bytes: u64,
    out_bytes: u64,
    load_sum: f64,
    n: u64,
}

struct Track {
    site: String,
    /// (heartbeat ms, bytes in, bytes out) of distinct heartbeats.
    beats: VecDeque<(u64, u64, u64)>,
    last_counters: Option<(u64, u64)>,
    alive: bool,
    problems: Vec<String>,
    fine: VecDeque<HistorySample>,
    coarse: VecDeque<HistorySample>,
    acc: Accum,
}

/// Rates and history of every host.
pub struct Tracker {
    bounds: Bounds,
    hosts: HashMap<String, Track>,
}

fn push_bounded<T>(q: &mut VecDeque<T>, v: T, cap: usize) {
    if q.len() >= cap.max(1) {
        q.pop_front();
    }
    q.push_back(v);
}

/// Bytes per second between two counter readings `ms` apart.
fn per_second(bytes: u64, ms: u64) -> u64 {
    if ms == 0 {
        0
    } else {
        (bytes as u128 * 1000 / ms as u128) as u64
    }
}

impl Track {
    fn rates(&self) -> (u64, u64) {
        if !self.alive {
            return (0, 0);
        }
        match (self.beats.front(), self.beats.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => (per_second(b.1 - a.1, b.0 - a.0), per_second(b.2 - a.2, b.0 - a.0)),
            _ => (0, 0),
        }
    }

    /// Take a heartbeat's counters (once per distinct heartbeat).
    fn beat(&mut self, h: &HostInfo) {
        if h.last_heartbeat_ms == 0 || self.beats.back().is_some_and(|b| b.0 == h.last_heartbeat_ms) {
            return;
        }
        if self.beats.back().is_some_and(|b| h.bytes_in < b.1 || h.bytes_out < b.2) {
            // The server restarted: its counters start again from zero.
            self.beats.clear();
        }
        self.beats.push_back((h.last_heartbeat_ms, h.bytes_in, h.bytes_out));
        while self.beats.len() > 2 && self.beats.front().is_some_and(|f| h.last_heartbeat_ms - f.0 > RATE_WINDOW_MS) {
            self.beats.pop_front();
        }
    }

    /// Add the bytes moved since the last reading to the coarse accumulator.
    fn accumulate(&mut self, h: &HostInfo) {
        let (din, dout) = match self.last_counters {
            Some((i, o)) if h.bytes_in >= i && h.bytes_out >= o => (h.bytes_in - i, h.bytes_out - o),
            Some(_) => (h.bytes_in, h.bytes_out),
            None => (0, 0),
        };
        self.last_counters = Some((h.bytes_in, h.bytes_out));
        self.acc.in_bytes += din;
        self.acc.out_bytes += dout;
        self.acc.load_sum += h.load as f64;
        self.acc.n += 1;
    }
}

impl Tracker {
    /// An empty tracker.
    pub fn new(bounds: Bounds) -> Self {
        Tracker { bounds, hosts: HashMap::new() }
    }

    /// Take the registry as it is at `now_ms`; returns what changed.
    pub fn observe(&mut self, now_ms: u64, hosts: &[HostInfo]) -> Vec<Change> {
        let mut changes = Vec::new();
        let b = self.bounds;
        for h in hosts {
            let t = self.hosts.entry(h.host.clone()).or_insert_with(|| Track {
                site: h.site.clone(),
                beats: VecDeque::new(),
                last_counters: None,
                alive: h.alive,
                problems: Vec::new(),
                fine: VecDeque::new(),
                coarse: VecDeque::new(),
                acc: Accum { start_ms: now_ms, ..Accum::default() },
            });
            t.site = h.site.clone();
            if t.alive && !h.alive {
                changes.push(Change::Down { host: h.host.clone(), last_heartbeat_ms: h.last_heartbeat_ms });
            } else if !t.alive && h.alive {
                changes.push(Change::Up { host: h.host.clone() });
            }
            t.alive = h.alive;
            for p in h.problems.iter().filter(|p| !t.problems.contains(p)) {
                changes.push(Change::Problem { host: h.host.clone(), problem: p.clone() });
            }
            for p in t.problems.iter().filter(|p| !h.problems.contains(p)) {
                changes.push(Change::Resolved { host: h.host.clone(), problem: p.clone() });
            }
            t.problems = h.problems.clone();
            t.beat(h);
            t.accumulate(h);
            let (rin, rout) = t.rates();
            let sample = HistorySample {
                at_ms: now_ms,
                alive: h.alive,
                capacity: h.capacity,
                free: h.free,
                in_bytes_per_s: rin,
                out_bytes_per_s: rout,
                load_centi: (h.load.max(0.0) * 100.0) as u32,
            };
            push_bounded(&mut t.fine, sample, b.fine_samples);
            let span = now_ms.saturating_sub(t.acc.start_ms);
            if span >= b.coarse_step_ms {
                let a = std::mem::replace(&mut t.acc, Accum { start_ms: now_ms, ..Accum::default() });
                let avg = HistorySample {
                    in_bytes_per_s: per_second(a.in_bytes, span),
                    out_bytes_per_s: per_second(a.out_bytes, span),
                    load_centi: if a.n == 0 { 0 } else { (a.load_sum / a.n as f64 * 100.0) as u32 },
                    ..sample
                };
                push_bounded(&mut t.coarse, avg, b.coarse_samples);
            }
        }
        // Hosts no longer in the registry take their history with them.
        self.hosts.retain(|name, _| hosts.iter().any(|h| &h.host == name));
        changes
    }

    /// (in, out) bytes per second of a host over the last few seconds.
    pub fn rates(&self, host: &str) -> (u64, u64) {
        self.hosts.get(host).map(Track::rates).unwrap_or((0, 0))
    }

    /// Every host's history, sorted by site then name.
    pub fn history(&self) -> Vec<HostHistory> {
        let mut out: Vec<HostHistory> = self
            .hosts
            .iter()
            .map(|(name, t)| HostHistory {
                host: name.clone(),
                site: t.site.clone(),
                fine_step_ms: self.bounds.fine_step_ms,
                fine: t.fine.iter().copied().collect(),
                coarse_step_ms: self.bounds.coarse_step_ms,
                coarse: t.coarse.iter().copied().collect(),
            })
            .collect();
        out.sort_by(|a, b| (&a.site, &a.host).cmp(&(&b.site, &b.host)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, hb: u64, alive: bool, bytes_in: u64, bytes_out: u64, problems: &[&str]) -> HostInfo {
        HostInfo {
            host: name.into(),
            site: "s1".into(),
            addr: "127.0.0.1:1".parse().expect("addr"),
            capacity: 1000,
            free: 400,
            load: 0.5,
            last_heartbeat_ms: hb,
            alive,
            replicas: 0,
            problems: problems.iter().map(|p| p.to_string()).collect(),
            bytes_in,
            bytes_out,
            draining: false,
        }
    }

    fn bounds() -> Bounds {
        Bounds { fine_step_ms: 1000, fine_samples: 3, coarse_step_ms: 10_000, coarse_samples: 2 }
    }

    #[test]
    fn rates_come_from_heartbeat_counters_and_survive_restarts() {
        let mut t = Tracker::new(bounds());
        t.observe(1000, &[host("a", 1000, true, 0, 0, &[])]);
        // 2 MB in and 1 MB out over 2 s of heartbeats.
        t.observe(2000, &[host("a", 2000, true, 1_000_000, 500_000, &[])]);
        t.observe(3000, &[host("a", 3000, true, 2_000_000, 1_000_000, &[])]);
        assert_eq!(t.rates("a"), (1_000_000, 500_000));
        // The same heartbeat seen twice changes nothing.
        t.observe(3500, &[host("a", 3000, true, 2_000_000, 1_000_000, &[])]);
        assert_eq!(t.rates("a"), (1_000_000, 500_000));
        // A restart resets the counters: no negative or huge rate.
        t.observe(4000, &[host("a", 4000, true, 10, 10, &[])]);
        assert_eq!(t.rates("a"), (0, 0));
        t.observe(5000, &[host("a", 5000, true, 3_010, 10, &[])]);
        assert_eq!(t.rates("a"), (3_000, 0));
        assert_eq!(t.history()[0].fine.len(), 3, "fine ring bounded");
    }

    #[test]
    fn old_heartbeats_leave_the_rate_window() {
        let mut t = Tracker::new(bounds());
        t.observe(0, &[host("a", 1, true, 0, 0, &[])]);
        t.observe(1000, &[host("a", 1000, true, 9_000_000, 0, &[])]);
        for s in 2..=8u64 {
            t.observe(s * 1000, &[host("a", s * 1000, true, 9_000_000, 0, &[])]);
        }
        assert_eq!(t.rates("a"), (0, 0), "a burst 7 s ago no longer counts");
    }

    #[test]
    fn down_up_and_problems_are_changes() {
        let mut t = Tracker::new(bounds());
        assert!(t.observe(0, &[host("a", 1, true, 0, 0, &[])]).is_empty());
        let c = t.observe(1000, &[host("a", 1, false, 0, 0, &["disk"])]);
        assert_eq!(
            c,
            vec![
                Change::Down { host: "a".into(), last_heartbeat_ms: 1 },
                Change::Problem { host: "a".into(), problem: "disk".into() }
            ]
        );
        assert_eq!(t.rates("a"), (0, 0), "a down host moves nothing");
        let c = t.observe(2000, &[host("a", 2000, true, 0, 0, &[])]);
        assert_eq!(
            c,
            vec![Change::Up { host: "a".into() }, Change::Resolved { host: "a".into(), problem: "disk".into() }]
        );
    }

    #[test]
    fn coarse_samples_average_a_step_and_are_bounded() {
        let mut t = Tracker::new(bounds());
        for s in 0..=35u64 {
            // 1000 bytes in per second, steadily.
            t.observe(s * 1000, &[host("a", s * 1000 + 1, true, s * 1000, 0, &[])]);
        }
        let h = &t.history()[0];
        assert_eq!(h.coarse.len(), 2, "three steps made, two kept");
        assert!(h.coarse.iter().all(|c| c.in_bytes_per_s == 1000), "{:?}", h.coarse);
        assert_eq!(h.coarse[1].load_centi, 50);
        assert!(t.observe(36_000, &[]).is_empty());
        assert!(t.history().is_empty(), "a host gone from the registry is forgotten");
    }
}
