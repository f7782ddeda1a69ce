//! The model of one directed link, without any I/O: given when a packet arrives and how big it is,
//! decide whether it is dropped (queue full, random loss) or when it must be delivered.
//!
//! The link is a bottleneck that serialises packets at `rate` bytes per second behind a drop-tail
//! FIFO of `queue_limit` bytes, followed by a wire of fixed one-way `delay`. That is a token bucket
//! whose depth is one packet: no burst ever leaves faster than the rate, as on a real link. Because
//! the FIFO never reorders, the whole state is the instant the transmitter becomes idle; the backlog
//! at any instant is `(busy_until - now) * rate`. Every delivery time is therefore known on arrival
//! and the router only has to hold packets until then ([`super::router`]).

use std::time::{Duration, Instant};

use super::topology::LinkParams;

/// What happens to one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand the packet to the receiving site at this instant.
    Deliver(Instant),
    /// The queue in front of the bottleneck was full (a congestion drop).
    DropQueue,
    /// Random loss on the wire (after using its share of the link, as a corrupted frame does).
    DropLoss,
}

/// State and parameters of one directed link.
#[derive(Debug, Clone)]
pub struct LinkModel {
    delay: Duration,
    /// Bytes per second; `None` = infinitely fast.
    rate: Option<f64>,
    queue_limit: usize,
    loss: f64,
    /// When the transmitter finishes the last packet it accepted.
    busy_until: Option<Instant>,
}

impl LinkModel {
    /// A link with these parameters; `mtu` sizes the default queue.
    pub fn new(params: &LinkParams, mtu: u32) -> Self {
        LinkModel {
            delay: params.delay(),
            rate: params.rate_bytes_per_sec(),
            queue_limit: params.queue_bytes(mtu),
            loss: params.loss_percent / 100.0,
            busy_until: None,
        }
    }

    /// The one-way delay.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// The drop-tail queue limit in bytes.
    pub fn queue_limit(&self) -> usize {
        self.queue_limit
    }

    /// Bytes waiting for (or in) transmission at `now`.
    pub fn backlog(&self, now: Instant) -> usize {
        match (self.rate, self.busy_until) {
            (Some(rate), Some(busy)) => (busy.saturating_duration_since(now).as_secs_f64() * rate).round() as usize,
            _ => 0,
        }
    }

    /// Decide the fate of a packet of `len` bytes arriving at `now`. `coin` is a uniform random
    /// number in `[0, 1)` that decides random loss.
    pub fn admit(&mut self, now: Instant, len: usize, coin: f64) -> Verdict {
        let sent_at = match self.rate {
            None => now,
            Some(rate) => {
                if self.backlog(now) + len > self.queue_limit {
                    return Verdict::DropQueue;
                }
                let start = self.busy_until.map_or(now, |b| b.max(now));
                let done = start + Duration::from_secs_f64(len as f64 / rate);
                self.busy_until = Some(done);
                done
            }
        };
        if coin < self.loss {
            return Verdict::DropLoss;
        }
        Verdict::Deliver(sent_at + self.delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(delay_ms: f64, rate_mbit: Option<f64>, queue_kib: Option<f64>, loss_percent: f64) -> LinkModel {
        LinkModel::new(&LinkParams { delay_ms, rate_mbit, queue_kib, loss_percent }, 1500)
    }

    #[test]
    fn unlimited_link_only_delays() {
        let mut l = link(10.0, None, None, 0.0);
        let t0 = Instant::now();
        for _ in 0..1000 {
            assert_eq!(l.admit(t0, 65000, 0.5), Verdict::Deliver(t0 + Duration::from_millis(10)));
        }
    }

    #[test]
    fn rate_spaces_a_burst_and_the_queue_drops_the_excess() {
        // 12 Mbit/s = 1.5 MB/s: one 1500-byte packet per millisecond; queue of 15 packets.
        let mut l = link(5.0, Some(12.0), Some(1500.0 * 15.0 / 1024.0), 0.0);
        let t0 = Instant::now();
        let verdicts: Vec<_> = (0..20).map(|_| l.admit(t0, 1500, 0.9)).collect();
        let delivered: Vec<_> = verdicts
            .iter()
            .filter_map(|v| match v {
                Verdict::Deliver(at) => Some(*at),
                _ => None,
            })
            .collect();
        assert_eq!(delivered.len(), 15, "{verdicts:?}");
        assert!(verdicts[15..].iter().all(|v| *v == Verdict::DropQueue));
        for (i, at) in delivered.iter().enumerate() {
            let want = Duration::from_millis(5 + 1 + i as u64);
            let got = at.duration_since(t0);
            assert!(got.abs_diff(want) < Duration::from_micros(1), "packet {i}: {got:?} vs {want:?}");
        }
        // After 10 ms the transmitter has drained 10 packets, so 10 more fit.
        let later = t0 + Duration::from_millis(10);
        assert_eq!(l.backlog(later), 7500);
        let more = (0..12).filter(|_| matches!(l.admit(later, 1500, 0.9), Verdict::Deliver(_))).count();
        assert_eq!(more, 10);
    }

    #[test]
    fn an_idle_link_sends_immediately() {
        let mut l = link(1.0, Some(8.0), None, 0.0);
        let t0 = Instant::now();
        assert!(matches!(l.admit(t0, 1000, 0.0), Verdict::Deliver(_)));
        let later = t0 + Duration::from_secs(1);
        // 1000 bytes at 1 MB/s = 1 ms, plus 1 ms delay.
        assert_eq!(l.admit(later, 1000, 0.0), Verdict::Deliver(later + Duration::from_millis(2)));
    }

    #[test]
    fn loss_follows_the_coin() {
        let mut l = link(0.0, None, None, 1.0);
        let t0 = Instant::now();
        assert_eq!(l.admit(t0, 100, 0.0099), Verdict::DropLoss);
        assert!(matches!(l.admit(t0, 100, 0.01), Verdict::Deliver(_)));
        let lost = (0..10_000).filter(|i| l.admit(t0, 100, *i as f64 / 10_000.0) == Verdict::DropLoss).count();
        assert_eq!(lost, 100);
    }
}
