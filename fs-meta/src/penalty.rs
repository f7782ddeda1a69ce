//! Back-off for peers that hold others up (sans IO): a session that does not
//! acknowledge invalidations within the bound, or does not give back a
//! recalled directory lease, costs everyone else a wait. The session gets
//! no more directory leases and its connection may not subscribe again for
//! [`FIRST_BAR`]; if the connection is still alive a while later (a live
//! peer, not a killed mount), its principal gets a strike: while barred it
//! is granted no callback subscription and no directory lease on any
//! connection, so the next change or access does not wait for it again.
//! Each strike doubles the bar (from [`FIRST_BAR`] up to [`MAX_BAR`]); a
//! principal without a strike for [`FORGIVE_AFTER`] starts over.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The bar after a first strike.
pub const FIRST_BAR: Duration = Duration::from_secs(1);
/// The longest bar.
pub const MAX_BAR: Duration = Duration::from_secs(300);
/// Strikes older than this are forgotten.
pub const FORGIVE_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy)]
struct Record {
    strikes: u32,
    last: Instant,
    until: Instant,
}

/// Strikes per principal.
#[derive(Debug, Default)]
pub struct Penalties {
    by: HashMap<String, Record>,
}

impl Penalties {
    /// `who` held others up at `now`; returns how long it is barred.
    pub fn strike(&mut self, who: &str, now: Instant) -> Duration {
        self.by.retain(|_, r| now.saturating_duration_since(r.last) < FORGIVE_AFTER);
        let strikes = self.by.get(who).map_or(0, |r| r.strikes) + 1;
        let bar = FIRST_BAR.saturating_mul(1 << (strikes - 1).min(16)).min(MAX_BAR);
        self.by.insert(who.to_string(), Record { strikes, last: now, until: now + bar });
        bar
    }

    /// How much longer `who` is barred at `now`, if it is.
    pub fn barred(&self, who: &str, now: Instant) -> Option<Duration> {
        self.by.get(who).map(|r| r.until.saturating_duration_since(now)).filter(|d| !d.is_zero())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strikes_double_the_bar_and_are_forgiven() {
        let t0 = Instant::now();
        let mut p = Penalties::default();
        assert_eq!(p.barred("m", t0), None);
        assert_eq!(p.strike("m", t0), FIRST_BAR);
        assert_eq!(p.barred("m", t0), Some(FIRST_BAR));
        assert_eq!(p.barred("alice", t0), None, "only the one who struck");
        let t1 = t0 + FIRST_BAR;
        assert_eq!(p.barred("m", t1), None, "the bar ends");
        assert_eq!(p.strike("m", t1), FIRST_BAR * 2);
        for i in 0..20 {
            p.strike("m", t1 + Duration::from_secs(i));
        }
        assert_eq!(p.barred("m", t1 + Duration::from_secs(19)), Some(MAX_BAR), "capped");
        let later = t1 + Duration::from_secs(19) + FORGIVE_AFTER;
        assert_eq!(p.strike("m", later), FIRST_BAR, "forgiven after a quiet while");
    }
}
