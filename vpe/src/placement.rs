//! Where a VM runs, and whether its user may run it: pure functions.
//!
//! The manager calls [`check_limits`] then [`place`] with the loads its
//! agents last reported; both are deterministic functions of their inputs,
//! so the manager's policy is unit-tested without agents.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::PlacementError;

/// One PoP as the manager sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopLoad {
    /// The PoP's id.
    pub pop: String,
    /// Its site.
    pub site: String,
    /// VMs running there now.
    pub vms: u32,
    /// How many VMs it accepts.
    pub max_vms: u32,
}

impl PopLoad {
    fn has_room(&self) -> bool {
        self.vms < self.max_vms
    }
}

/// How to choose among a site's PoPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The next PoP after the last one chosen, in name order.
    RoundRobin,
    /// The PoP with the smallest fraction of its capacity in use; ties go
    /// round-robin, so equally loaded PoPs alternate.
    #[default]
    LeastLoaded,
}

/// What a user may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserLimits {
    /// Sites the user may run VMs at (`None`: every site).
    pub allowed_sites: Option<BTreeSet<String>>,
    /// How many VMs the user may run at once, federation-wide.
    pub max_vms: u32,
}

/// Refuses a run the user's limits do not allow.
pub fn check_limits(user: &str, limits: &UserLimits, running: u32, site: &str) -> Result<(), PlacementError> {
    if let Some(allowed) = &limits.allowed_sites {
        if !allowed.contains(site) {
            return Err(PlacementError::SiteNotAllowed {
                user: user.to_string(),
                site: site.to_string(),
                allowed: allowed.iter().cloned().collect::<Vec<_>>().join(", "),
            });
        }
    }
    if running >= limits.max_vms {
        return Err(PlacementError::TooManyVms { user: user.to_string(), running, max: limits.max_vms });
    }
    Ok(())
}

/// Chooses a PoP of `site` with room, given the PoP chosen last time at that site.
pub fn place(pops: &[PopLoad], site: &str, strategy: Strategy, last: Option<&str>) -> Result<String, PlacementError> {
    let mut candidates: Vec<&PopLoad> = pops.iter().filter(|p| p.site == site && p.has_room()).collect();
    candidates.sort_by(|a, b| a.pop.cmp(&b.pop));
    if candidates.is_empty() {
        return Err(PlacementError::NoCapacity(site.to_string()));
    }
    if strategy == Strategy::LeastLoaded {
        // Compare vms/max_vms exactly by cross-multiplying.
        let load = |p: &PopLoad| (u64::from(p.vms), u64::from(p.max_vms));
        let (min_v, min_m) =
            candidates.iter().map(|p| load(p)).min_by(|a, b| (a.0 * b.1).cmp(&(b.0 * a.1))).unwrap_or((0, 1));
        candidates.retain(|p| {
            let (v, m) = load(p);
            v * min_m == min_v * m
        });
    }
    let next = match last {
        Some(last) => candidates.iter().find(|p| p.pop.as_str() > last).unwrap_or(&candidates[0]),
        None => &candidates[0],
    };
    Ok(next.pop.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pop(pop: &str, site: &str, vms: u32, max_vms: u32) -> PopLoad {
        PopLoad { pop: pop.into(), site: site.into(), vms, max_vms }
    }

    #[test]
    fn round_robin_alternates_within_the_site() {
        let pops = [pop("a1", "A", 0, 10), pop("a2", "A", 5, 10), pop("b1", "B", 0, 10)];
        let mut last = None;
        let mut chosen = Vec::new();
        for _ in 0..4 {
            let p = place(&pops, "A", Strategy::RoundRobin, last.as_deref()).unwrap();
            chosen.push(p.clone());
            last = Some(p);
        }
        assert_eq!(chosen, ["a1", "a2", "a1", "a2"]);
    }

    #[test]
    fn least_loaded_prefers_free_pops_and_alternates_on_ties() {
        let pops = [pop("a1", "A", 3, 10), pop("a2", "A", 1, 10), pop("a3", "A", 1, 2)];
        assert_eq!(place(&pops, "A", Strategy::LeastLoaded, None).unwrap(), "a2");
        // Simulate consecutive runs: each adds a VM to the chosen PoP.
        let mut pops = vec![pop("p1", "S", 0, 4), pop("p2", "S", 0, 4)];
        let mut last: Option<String> = None;
        let mut chosen = Vec::new();
        for _ in 0..4 {
            let p = place(&pops, "S", Strategy::LeastLoaded, last.as_deref()).unwrap();
            pops.iter_mut().find(|x| x.pop == p).unwrap().vms += 1;
            chosen.push(p.clone());
            last = Some(p);
        }
        assert_eq!(chosen, ["p1", "p2", "p1", "p2"]);
    }

    #[test]
    fn full_or_unknown_site_has_no_capacity() {
        let pops = [pop("a1", "A", 2, 2)];
        assert_eq!(place(&pops, "A", Strategy::LeastLoaded, None), Err(PlacementError::NoCapacity("A".into())));
        assert!(place(&pops, "Z", Strategy::RoundRobin, None).is_err());
    }

    #[test]
    fn limits_refuse_other_sites_and_too_many_vms() {
        let limits = UserLimits { allowed_sites: Some(["A".to_string()].into()), max_vms: 2 };
        check_limits("alice", &limits, 1, "A").unwrap();
        let e = check_limits("alice", &limits, 0, "B").unwrap_err();
        assert!(e.to_string().contains("may not run VMs at site B"), "{e}");
        assert!(matches!(check_limits("alice", &limits, 2, "A"), Err(PlacementError::TooManyVms { max: 2, .. })));
        let open = UserLimits { allowed_sites: None, max_vms: 1 };
        check_limits("bob", &open, 0, "anywhere").unwrap();
    }
}
