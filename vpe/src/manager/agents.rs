//! The PoP agents the manager knows: their connections (which the manager
//! opens request streams on), their last reports, and whether they are alive.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fs_proto::vpe::{PopInfo, PopReport};

use crate::manager::registry::{Candidate, Registry};
use crate::placement::PopLoad;

/// One PoP agent.
#[derive(Debug)]
pub struct Agent {
    /// Site (from its certificate).
    pub site: String,
    /// The connection it dialled.
    pub conn: quinn::Connection,
    /// When it was last heard from.
    pub last_seen: Instant,
    /// Its last report.
    pub report: Option<PopReport>,
}

/// Every agent that ever connected, by host name.
#[derive(Debug, Default)]
pub struct Agents {
    agents: BTreeMap<String, Agent>,
}

impl Agents {
    /// An agent (re)connected; a previous connection of it is replaced.
    pub fn connected(&mut self, name: &str, site: &str, conn: quinn::Connection, now: Instant) {
        let report = self.agents.remove(name).and_then(|a| a.report);
        self.agents.insert(name.into(), Agent { site: site.into(), conn, last_seen: now, report });
    }

    /// A heartbeat arrived on connection `conn_id`.
    pub fn heartbeat(&mut self, name: &str, conn_id: usize, report: PopReport, now: Instant) {
        if let Some(a) = self.agents.get_mut(name).filter(|a| a.conn.stable_id() == conn_id) {
            a.last_seen = now;
            a.report = Some(report);
        }
    }

    fn alive(a: &Agent, timeout: Duration, now: Instant) -> bool {
        a.conn.close_reason().is_none() && now.duration_since(a.last_seen) <= timeout && a.report.is_some()
    }

    /// The live connection to `pop`.
    pub fn conn(&self, pop: &str, timeout: Duration, now: Instant) -> Option<quinn::Connection> {
        self.agents.get(pop).filter(|a| Self::alive(a, timeout, now)).map(|a| a.conn.clone())
    }

    /// Forgets VM `vm` from PoP `pop`'s last report (it was just stopped,
    /// and the next heartbeat would say so).
    pub fn forget_vm(&mut self, pop: &str, vm: &str) {
        if let Some(r) = self.agents.get_mut(pop).and_then(|a| a.report.as_mut()) {
            r.vms.retain(|v| v.name != vm);
        }
    }

    /// VMs on `pop`: those the registry placed there, plus those the PoP
    /// reports that the registry does not know (left by an earlier manager).
    fn load(reg: &Registry, pop: &str, report: &PopReport) -> u32 {
        let unknown = report.vms.iter().filter(|v| reg.vms.get(&v.name).is_none_or(|e| e.pop != pop)).count();
        reg.load_on(pop) + unknown as u32
    }

    /// Live PoPs as placement sees them.
    pub fn candidates(&self, reg: &Registry, timeout: Duration, now: Instant) -> Vec<Candidate> {
        self.agents
            .iter()
            .filter(|(_, a)| Self::alive(a, timeout, now))
            .filter_map(|(name, a)| {
                let r = a.report.as_ref()?;
                let vms = Self::load(reg, name, r);
                Some(Candidate {
                    load: PopLoad { pop: name.clone(), site: a.site.clone(), vms, max_vms: r.max_vms },
                    problems: r.problems.clone(),
                })
            })
            .collect()
    }

    /// Every PoP, live or not.
    pub fn infos(&self, reg: &Registry, timeout: Duration, now: Instant) -> Vec<PopInfo> {
        self.agents
            .iter()
            .map(|(name, a)| {
                let r = a.report.clone().unwrap_or(PopReport {
                    max_vms: 0,
                    vms: vec![],
                    accel: None,
                    cached_images: vec![],
                    image_bytes_fetched: 0,
                    problems: vec![],
                });
                PopInfo {
                    name: name.clone(),
                    site: a.site.clone(),
                    alive: Self::alive(a, timeout, now),
                    vms: Self::load(reg, name, &r),
                    max_vms: r.max_vms,
                    accel: r.accel,
                    problems: r.problems,
                    cached_images: r.cached_images.len() as u32,
                    image_bytes_fetched: r.image_bytes_fetched,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::registry::VmEntry;
    use fs_proto::vpe::{PopVm, VmPhase};

    fn entry(pop_name: &str, pop: &str) -> VmEntry {
        VmEntry {
            name: pop_name.into(),
            owner: "a".into(),
            pop_name: pop_name.into(),
            site: "S".into(),
            pop: pop.into(),
            phase: VmPhase::Running,
            image: "i:1".into(),
            image_id: String::new(),
            cpus: 1,
            memory_mib: 256,
            nics: vec![],
            accel: None,
            timings: None,
            created_ms: 0,
        }
    }

    #[test]
    fn load_counts_placed_vms_and_unknown_reported_ones_once() {
        let mut reg = Registry::default();
        for e in [entry("a", "p1"), entry("b", "p1"), entry("c", "p2")] {
            reg.vms.insert(e.pop_name.clone(), e);
        }
        let vm = |n: &str| PopVm { name: n.into(), state: "Running".into() };
        let report = PopReport {
            max_vms: 4,
            // "a" is known, "x" was left by an earlier manager, "c" is the registry's but placed elsewhere.
            vms: vec![vm("a"), vm("x"), vm("c")],
            accel: None,
            cached_images: vec![],
            image_bytes_fetched: 0,
            problems: vec![],
        };
        assert_eq!(Agents::load(&reg, "p1", &report), 2 + 2);
        // A VM just stopped is in neither the registry nor (once forgotten) the report.
        reg.vms.remove("b");
        assert_eq!(Agents::load(&reg, "p1", &report), 1 + 2);
    }
}
