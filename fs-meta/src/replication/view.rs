//! The planner's inputs, built from the host registry and the namespace.

use super::plan::{FileView, HostView, ReplicaView};
use crate::namespace::HostReplica;
use crate::record::InodeRecord;
use crate::service::MetaService;
use fs_proto::{Ino, ServerLoc, Timestamp};
use std::collections::HashMap;

/// The hosts as the planner sees them, and where to reach each.
pub struct HostTable {
    /// Views, sorted by host name.
    pub views: Vec<HostView>,
    /// Addresses by host name.
    pub locs: HashMap<String, ServerLoc>,
}

impl HostTable {
    /// Snapshot the registry now. A host not heard from since this meta
    /// server started counts as down since the start.
    pub fn now(svc: &MetaService) -> Self {
        let now = Timestamp::now().as_millis();
        let started = svc.replication.started_ms;
        let mut views = Vec::new();
        let mut locs = HashMap::new();
        for (loc, free, last_ms, alive, draining) in svc.hosts.snapshot() {
            let down_for_ms = (!alive).then(|| now.saturating_sub(last_ms.max(started)));
            views.push(HostView { host: loc.host.clone(), site: loc.site.clone(), free, down_for_ms, draining });
            locs.insert(loc.host.clone(), loc);
        }
        HostTable { views, locs }
    }

    /// Locations of hosts, in the order given (unknown names skipped).
    pub fn locs_of(&self, hosts: &[String]) -> Vec<ServerLoc> {
        hosts.iter().filter_map(|h| self.locs.get(h).cloned()).collect()
    }

    /// The soonest time (ms from now) a down host crosses `grace`, if any
    /// host is down and has not crossed it yet.
    pub fn next_grace_expiry(&self, grace: u64) -> Option<u64> {
        self.views.iter().filter_map(|h| h.down_for_ms).filter(|d| *d < grace).map(|d| grace - d).min()
    }
}

/// One file as the planner sees it.
pub fn file_view(ino: Ino, inode: &InodeRecord, reps: &[HostReplica], in_flight: Vec<String>) -> FileView {
    FileView {
        ino,
        gen: inode.gen,
        size: inode.size,
        ncopy: inode.ncopy,
        replicas: reps.iter().map(|(h, r)| ReplicaView { host: h.clone(), gen: r.gen, bad: r.bad }).collect(),
        in_flight,
    }
}
