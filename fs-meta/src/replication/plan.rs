//! Replication planning without I/O: from one file's replicas, the hosts
//! and a [`Policy`], decide which copies to make (destination and sources
//! in order of preference) and which replicas to remove.
//!
//! Everything here is a pure function of its inputs (host liveness comes in
//! as "down for so many ms"), so every edge case is a deterministic unit
//! test: hosts briefly down, hosts lost, hosts back, bad replicas, full
//! disks, source and destination filters.
//!
//! Rules:
//! - A replica counts when it holds the current generation, is not known
//!   bad, and its host is alive or down for less than the grace period.
//! - Only live, good replicas are sources (never a bad or stale one).
//! - New copies go first to sites that hold no counted replica yet, then to
//!   hosts holding a bad replica (repair in place), then spread over equal
//!   hosts by rendezvous hashing of (file, host).
//! - Surplus is removed only for files with an explicit copy count, only
//!   when every host holding a replica is alive and no copy is in flight;
//!   the replicas kept cover as many sites as possible.
//! - A draining host (`renkei host drain`) is never a destination and its
//!   replicas do not count, but are sources. The worker's policy moves them
//!   off: a copy elsewhere for each (the copy names the replica it
//!   replaces, dropped once the copy is registered), or, for a file whose
//!   copy count the other live replicas already meet, the replica is simply
//!   removed; a bad one goes once a good one lives elsewhere.

use fs_proto::replication::SkipReason;
use fs_proto::{Gen, Ino};
use std::collections::{BTreeSet, HashMap};

/// A file server as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    /// Host name.
    pub host: String,
    /// Site.
    pub site: String,
    /// Free bytes in its spool.
    pub free: u64,
    /// None while alive; otherwise how long it has been down (ms).
    pub down_for_ms: Option<u64>,
    /// Being drained: no new copies, its replicas moved elsewhere.
    pub draining: bool,
}

impl HostView {
    /// Whether the host is alive now.
    pub fn alive(&self) -> bool {
        self.down_for_ms.is_none()
    }
}

/// One registered replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaView {
    /// Host holding it.
    pub host: String,
    /// Generation it holds.
    pub gen: Gen,
    /// Known bad (failed verification or missing).
    pub bad: bool,
}

/// One file and its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileView {
    /// Inode.
    pub ino: Ino,
    /// Current generation.
    pub gen: Gen,
    /// Size of the current generation.
    pub size: u64,
    /// Explicit copy count (0: the federation default).
    pub ncopy: u32,
    /// Registered replicas.
    pub replicas: Vec<ReplicaView>,
    /// Hosts a copy of the current generation is being made to.
    pub in_flight: Vec<String>,
}

/// How many replicas a file should have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Exactly this many counted replicas on hosts matching the destination.
    Copies(u32),
    /// The file's copy count, or `default` when it has none.
    Ncopy {
        /// The federation default.
        default: u32,
    },
    /// As many as are registered (good or bad), at least the copy count.
    Repair {
        /// The federation default copy count.
        default: u32,
    },
}

/// A host or a site, as `-S`/`-D` name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// One host.
    Host(String),
    /// Every host of a site.
    Site(String),
}

impl Selector {
    /// Resolve a name against the known hosts: a host name first, then a
    /// site name; None when it names neither.
    pub fn resolve(name: &str, hosts: &[HostView]) -> Option<Selector> {
        if hosts.iter().any(|h| h.host == name) {
            Some(Selector::Host(name.to_string()))
        } else if hosts.iter().any(|h| h.site == name) {
            Some(Selector::Site(name.to_string()))
        } else {
            None
        }
    }

    fn matches(&self, h: &HostView) -> bool {
        match self {
            Selector::Host(n) => h.host == *n,
            Selector::Site(s) => h.site == *s,
        }
    }
}

/// What to plan for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The copy count to reach.
    pub want: Want,
    /// Read only from hosts matching this.
    pub from: Option<Selector>,
    /// Copy only to hosts matching this (and count only replicas there).
    pub to: Option<Selector>,
    /// The worker's policy: remove surplus and bad replicas of files with an
    /// explicit copy count, and move replicas off draining hosts.
    pub remove_surplus: bool,
    /// A replica on a host down for less than this still counts (ms).
    pub down_grace_ms: u64,
}

/// One copy to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedCopy {
    /// Destination host.
    pub dst: String,
    /// Hosts to read from, preferred first (the destination's site first).
    pub sources: Vec<String>,
    /// The draining host whose replica this copy replaces: dropped once
    /// the copy is registered.
    pub replaces: Option<String>,
}

/// How a file stands after planning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to copy (it may still have surplus to remove).
    Satisfied,
    /// Copies planned cover what is missing.
    Planned,
    /// Short of the goal even with the planned copies.
    Short {
        /// Why.
        reason: SkipReason,
        /// Copies still missing.
        missing: u32,
    },
}

/// The plan for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePlan {
    /// Copies to make.
    pub copies: Vec<PlannedCopy>,
    /// Hosts whose replica (of the current generation) to remove.
    pub removals: Vec<String>,
    /// Where that leaves the file.
    pub outcome: Outcome,
}

impl FilePlan {
    fn satisfied() -> Self {
        FilePlan { copies: Vec::new(), removals: Vec::new(), outcome: Outcome::Satisfied }
    }
}

/// Rendezvous weight of placing `ino` on `host`: spreads files over equal
/// hosts without any shared state (FNV-1a, stable across runs).
fn weight(ino: Ino, host: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ino.to_be_bytes().iter().chain(host.as_bytes()) {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Plan one file.
pub fn plan_file(file: &FileView, hosts: &[HostView], policy: &Policy) -> FilePlan {
    if file.gen == 0 || file.size == 0 {
        return FilePlan::satisfied();
    }
    let by_name: HashMap<&str, &HostView> = hosts.iter().map(|h| (h.host.as_str(), h)).collect();
    let in_to = |h: &HostView| policy.to.as_ref().is_none_or(|s| s.matches(h));
    let current: Vec<&ReplicaView> = file.replicas.iter().filter(|r| r.gen == file.gen).collect();

    // Classify the current generation's replicas.
    let mut counted: Vec<&HostView> = Vec::new(); // good, host alive or briefly down
    let mut live_good: Vec<&HostView> = Vec::new();
    let mut bad_hosts: BTreeSet<&str> = BTreeSet::new();
    // Good replicas on draining hosts (sources while alive, never counted),
    // and bad ones there.
    let mut draining: Vec<&HostView> = Vec::new();
    let mut draining_bad: Vec<&str> = Vec::new();
    let mut all_alive = true;
    for r in &current {
        let Some(h) = by_name.get(r.host.as_str()) else {
            all_alive = false;
            continue;
        };
        all_alive &= h.alive();
        if h.draining {
            if r.bad {
                draining_bad.push(h.host.as_str());
            } else {
                draining.push(h);
            }
            continue;
        }
        if r.bad {
            bad_hosts.insert(h.host.as_str());
            continue;
        }
        match h.down_for_ms {
            None => {
                counted.push(h);
                live_good.push(h);
            }
            Some(d) if d < policy.down_grace_ms => counted.push(h),
            Some(_) => {}
        }
    }
    let in_flight: Vec<&HostView> =
        file.in_flight.iter().filter_map(|h| by_name.get(h.as_str()).copied()).filter(|h| h.alive()).collect();

    let base = if file.ncopy > 0 { file.ncopy } else { 0 };
    let want = match policy.want {
        Want::Copies(n) => n,
        Want::Ncopy { default } => {
            if base > 0 {
                base
            } else {
                default
            }
        }
        Want::Repair { default } => (current.len() as u32).max(if base > 0 { base } else { default }),
    };
    let have = counted.iter().chain(in_flight.iter()).filter(|h| in_to(h)).count() as u32;
    let mut missing = want.saturating_sub(have);
    let managed = policy.remove_surplus && file.ncopy > 0 && matches!(policy.want, Want::Ncopy { .. });

    let mut plan = FilePlan::satisfied();
    // Moving off draining hosts (the worker only): a file whose copy count
    // the live replicas elsewhere meet loses the draining ones; any other
    // gets one copy elsewhere per draining replica, so it keeps as many
    // copies as it had.
    let mut replaces: Vec<&str> = Vec::new();
    if policy.remove_surplus && !draining.is_empty() {
        if managed && live_good.len() as u32 >= want {
            plan.removals.extend(draining.iter().map(|h| h.host.clone()));
        } else {
            replaces = draining.iter().map(|h| h.host.as_str()).collect();
            missing = missing.max(replaces.len() as u32);
        }
    }
    if policy.remove_surplus && !live_good.is_empty() {
        plan.removals.extend(draining_bad.iter().map(|h| h.to_string()));
    }
    if missing > 0 {
        // Sources: every live good replica, a draining host's too.
        let mut sources: Vec<&HostView> = live_good.clone();
        sources.extend(draining.iter().copied().filter(|h| h.alive()));
        plan_copies(file, hosts, policy, &counted, &in_flight, &sources, &bad_hosts, missing, &mut plan);
        for (copy, host) in plan.copies.iter_mut().zip(replaces) {
            copy.replaces = Some(host.to_string());
        }
    }

    // Surplus: only for files that asked for a copy count, only when the
    // picture is complete (every holder alive, nothing in flight, nothing
    // missing), never below the count.
    if managed && missing == 0 && in_flight.is_empty() && all_alive && live_good.len() as u32 >= want {
        plan.removals.extend(choose_surplus(&live_good, want));
        plan.removals.extend(bad_hosts.iter().map(|h| h.to_string()));
    }
    plan
}

#[allow(clippy::too_many_arguments)]
fn plan_copies(
    file: &FileView,
    hosts: &[HostView],
    policy: &Policy,
    counted: &[&HostView],
    in_flight: &[&HostView],
    live_good: &[&HostView],
    bad_hosts: &BTreeSet<&str>,
    missing: u32,
    plan: &mut FilePlan,
) {
    let sources: Vec<&HostView> =
        live_good.iter().copied().filter(|h| policy.from.as_ref().is_none_or(|s| s.matches(h))).collect();
    if sources.is_empty() {
        plan.outcome = Outcome::Short { reason: SkipReason::NoSource, missing };
        return;
    }
    let holding: BTreeSet<&str> = counted.iter().chain(in_flight.iter()).map(|h| h.host.as_str()).collect();
    let mut sites: BTreeSet<&str> = counted.iter().chain(in_flight.iter()).map(|h| h.site.as_str()).collect();
    let mut candidates: Vec<&HostView> = hosts
        .iter()
        .filter(|h| h.alive() && !h.draining && h.free >= file.size && !holding.contains(h.host.as_str()))
        .filter(|h| policy.to.as_ref().is_none_or(|s| s.matches(h)))
        .collect();
    for _ in 0..missing {
        let best = candidates
            .iter()
            .enumerate()
            .min_by_key(|(_, h)| {
                (
                    sites.contains(h.site.as_str()),
                    !bad_hosts.contains(h.host.as_str()),
                    std::cmp::Reverse(weight(file.ino, &h.host)),
                )
            })
            .map(|(i, _)| i);
        let Some(i) = best else { break };
        let dst = candidates.swap_remove(i);
        sites.insert(dst.site.as_str());
        let mut srcs: Vec<&HostView> = sources.clone();
        srcs.sort_by_key(|s| (s.site != dst.site, s.host.clone()));
        plan.copies.push(PlannedCopy {
            dst: dst.host.clone(),
            sources: srcs.iter().map(|s| s.host.clone()).collect(),
            replaces: None,
        });
    }
    let short = missing - plan.copies.len() as u32;
    plan.outcome =
        if short > 0 { Outcome::Short { reason: SkipReason::NoTarget, missing: short } } else { Outcome::Planned };
}

/// Which live good replicas to remove so `want` remain, keeping as many
/// sites as possible and, among equals, the hosts with the most free space.
fn choose_surplus(live_good: &[&HostView], want: u32) -> Vec<String> {
    let mut order: Vec<&HostView> = live_good.to_vec();
    order.sort_by(|a, b| b.free.cmp(&a.free).then_with(|| a.host.cmp(&b.host)));
    let mut keep: Vec<&HostView> = Vec::new();
    let mut sites: BTreeSet<&str> = BTreeSet::new();
    for h in &order {
        if (keep.len() as u32) < want && sites.insert(h.site.as_str()) {
            keep.push(h);
        }
    }
    for h in &order {
        if (keep.len() as u32) < want && !keep.iter().any(|k| k.host == h.host) {
            keep.push(h);
        }
    }
    order.iter().filter(|h| !keep.iter().any(|k| k.host == h.host)).map(|h| h.host.clone()).collect()
}

#[cfg(test)]
mod tests;
