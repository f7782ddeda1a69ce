//! The host registry: file servers, their sites, addresses, capacity, load
//! and liveness (a host is alive while its heartbeats arrive within the
//! configured bound), and which are being drained (`renkei host drain`: no
//! new data goes there). Also chooses where a write goes.

use crate::keys::{TREE_DRAINING, TREE_HOSTS};
use crate::record::{self, DrainRecord, HostRecord};
use fs_proto::meta::HeartbeatReport;
use fs_proto::{ErrorCode, HostInfo, RemoteError, ServerLoc, Timestamp};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;

/// The registry, cached in memory and persisted in sled.
pub struct Hosts {
    tree: crate::store::Tree,
    map: RwLock<HashMap<String, HostRecord>>,
    draining_tree: crate::store::Tree,
    draining: RwLock<BTreeSet<String>>,
    timeout_ms: u64,
    rotate: AtomicUsize,
    /// Moves on every heartbeat and every change of the registry: what a
    /// waiter for a host's state (alive, counters, draining) wakes on.
    changes: tokio::sync::watch::Sender<u64>,
}

fn internal(e: impl std::fmt::Display) -> RemoteError {
    RemoteError::new(ErrorCode::Internal, e.to_string())
}

impl Hosts {
    /// Load the registry. Hosts start as not alive until they heartbeat.
    pub fn open(db: &crate::store::Store, timeout_ms: u64) -> Result<Self, RemoteError> {
        let tree = db.open_tree(TREE_HOSTS).map_err(internal)?;
        let mut map = HashMap::new();
        for kv in tree.iter() {
            let (k, v) = kv.map_err(internal)?;
            let mut rec: HostRecord = record::decode(&v).map_err(internal)?;
            rec.last_heartbeat_ms = 0;
            map.insert(String::from_utf8_lossy(&k).into_owned(), rec);
        }
        let draining_tree = db.open_tree(TREE_DRAINING).map_err(internal)?;
        let mut draining = BTreeSet::new();
        for k in draining_tree.iter().keys() {
            draining.insert(String::from_utf8_lossy(&k.map_err(internal)?).into_owned());
        }
        Ok(Hosts {
            tree,
            map: RwLock::new(map),
            draining_tree,
            draining: RwLock::new(draining),
            timeout_ms,
            rotate: AtomicUsize::new(0),
            changes: tokio::sync::watch::channel(0).0,
        })
    }

    /// A receiver that sees every heartbeat and change of the registry
    /// (liveness lapsing by silence is judged when asked: no event).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    /// Whether `host` is being drained.
    pub fn is_draining(&self, host: &str) -> bool {
        self.draining.read().unwrap_or_else(|p| p.into_inner()).contains(host)
    }

    /// Drain `host` (true) or take it back into service (false); the host
    /// must be known.
    pub fn set_draining(&self, host: &str, on: bool) -> Result<(), RemoteError> {
        if !self.map.read().unwrap_or_else(|p| p.into_inner()).contains_key(host) {
            return Err(RemoteError::new(
                ErrorCode::NotFound,
                format!("no file server named {host:?} (`renkei hosts`)"),
            ));
        }
        if on {
            let rec = DrainRecord { since_ms: Timestamp::now().as_millis() };
            self.draining_tree.insert(host.as_bytes(), record::encode(&rec)).map_err(internal)?;
            self.draining.write().unwrap_or_else(|p| p.into_inner()).insert(host.to_string());
        } else {
            self.draining_tree.remove(host.as_bytes()).map_err(internal)?;
            self.draining.write().unwrap_or_else(|p| p.into_inner()).remove(host);
        }
        self.changed();
        Ok(())
    }

    /// Forget `host` (`renkei host rm`): refused while it is alive. The
    /// caller checked it holds no replica. A server that heartbeats again
    /// joins again (leave it out of `file_servers` to keep it out).
    pub fn remove(&self, host: &str) -> Result<(), RemoteError> {
        if self.live_loc(host).is_some() {
            return Err(RemoteError::new(
                ErrorCode::InvalidArgument,
                format!("{host} is alive: stop its renkei-server first (and drain it before that)"),
            ));
        }
        if self.map.write().unwrap_or_else(|p| p.into_inner()).remove(host).is_none() {
            return Err(RemoteError::new(
                ErrorCode::NotFound,
                format!("no file server named {host:?} (`renkei hosts`)"),
            ));
        }
        self.tree.remove(host.as_bytes()).map_err(internal)?;
        self.draining_tree.remove(host.as_bytes()).map_err(internal)?;
        self.draining.write().unwrap_or_else(|p| p.into_inner()).remove(host);
        self.changed();
        Ok(())
    }

    fn alive_at(&self, rec: &HostRecord, now: u64) -> bool {
        rec.last_heartbeat_ms != 0 && now.saturating_sub(rec.last_heartbeat_ms) <= self.timeout_ms
    }

    /// Record a heartbeat.
    pub fn heartbeat(&self, host: &str, site: &str, r: &HeartbeatReport) -> Result<(), RemoteError> {
        let now = Timestamp::now().as_millis();
        let rec = HostRecord {
            site: site.to_string(),
            addr: r.addr,
            capacity: r.capacity,
            free: r.free,
            load: r.load,
            last_heartbeat_ms: now,
            problems: r.problems.clone(),
            bytes_in: r.bytes_in,
            bytes_out: r.bytes_out,
        };
        let changed = {
            let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
            let prev = map.insert(host.to_string(), rec.clone());
            prev.is_none_or(|p| p.site != rec.site || p.addr != rec.addr)
        };
        if changed {
            tracing::info!(host, site, addr = %r.addr, "file server registered");
        }
        // Persist so `hosts` lists known hosts after a meta restart; the
        // heartbeat time itself needs no durability.
        self.tree.insert(host.as_bytes(), record::encode(&rec)).map_err(internal)?;
        self.changed();
        Ok(())
    }

    /// Where a host can be reached, if it is alive.
    pub fn live_loc(&self, host: &str) -> Option<ServerLoc> {
        let now = Timestamp::now().as_millis();
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.get(host).filter(|r| self.alive_at(r, now)).map(|r| ServerLoc {
            host: host.to_string(),
            site: r.site.clone(),
            addr: r.addr,
        })
    }

    /// Where a host was last seen, alive or not.
    pub fn loc(&self, host: &str) -> Option<(ServerLoc, bool)> {
        let now = Timestamp::now().as_millis();
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.get(host)
            .map(|r| (ServerLoc { host: host.to_string(), site: r.site.clone(), addr: r.addr }, self.alive_at(r, now)))
    }

    /// Pick a live server for a write by a client at `site`: the local site
    /// if it has one with room, else any; most free space first, ties
    /// rotated so equal servers share the load. Never a draining one.
    pub fn choose_write_target(&self, site: &str) -> Result<ServerLoc, RemoteError> {
        let now = Timestamp::now().as_millis();
        let draining = self.draining.read().unwrap_or_else(|p| p.into_inner()).clone();
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        let mut live: Vec<(&String, &HostRecord)> =
            map.iter().filter(|(h, r)| self.alive_at(r, now) && r.free > 0 && !draining.contains(h.as_str())).collect();
        if live.is_empty() {
            return Err(RemoteError::new(
                ErrorCode::NoServer,
                "no live file server with free space (that is not being drained)",
            ));
        }
        // A server reporting problems (a spool it cannot write, a failing
        // check) is chosen only when every other one reports some too.
        if live.iter().any(|(_, r)| r.problems.is_empty()) {
            live.retain(|(_, r)| r.problems.is_empty());
        }
        live.sort_by(|a, b| a.0.cmp(b.0));
        let local: Vec<_> = live.iter().filter(|(_, r)| r.site == site).cloned().collect();
        let pool = if local.is_empty() { live } else { local };
        let best = pool.iter().map(|(_, r)| r.free).max().unwrap_or(0);
        // Servers within 10% of the best free space count as equal.
        let near: Vec<_> = pool.iter().filter(|(_, r)| r.free >= best - best / 10).collect();
        let pick = near[self.rotate.fetch_add(1, Ordering::Relaxed) % near.len()];
        Ok(ServerLoc { host: pick.0.clone(), site: pick.1.site.clone(), addr: pick.1.addr })
    }

    /// Every known host: (name, location, free bytes, last heartbeat ms,
    /// alive now, draining), sorted by name. For the replication planner.
    pub fn snapshot(&self) -> Vec<(ServerLoc, u64, u64, bool, bool)> {
        let now = Timestamp::now().as_millis();
        let draining = self.draining.read().unwrap_or_else(|p| p.into_inner()).clone();
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = map
            .iter()
            .map(|(h, r)| {
                let loc = ServerLoc { host: h.clone(), site: r.site.clone(), addr: r.addr };
                (loc, r.free, r.last_heartbeat_ms, self.alive_at(r, now), draining.contains(h))
            })
            .collect();
        out.sort_by(|a, b| a.0.host.cmp(&b.0.host));
        out
    }

    /// Every known host, with replica counts per host.
    pub fn list(&self, counts: &HashMap<String, u64>) -> Vec<HostInfo> {
        let now = Timestamp::now().as_millis();
        let draining = self.draining.read().unwrap_or_else(|p| p.into_inner()).clone();
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<HostInfo> = map
            .iter()
            .map(|(h, r)| HostInfo {
                host: h.clone(),
                site: r.site.clone(),
                addr: r.addr,
                capacity: r.capacity,
                free: r.free,
                load: r.load,
                last_heartbeat_ms: r.last_heartbeat_ms,
                alive: self.alive_at(r, now),
                replicas: counts.get(h).copied().unwrap_or(0),
                problems: r.problems.clone(),
                bytes_in: r.bytes_in,
                bytes_out: r.bytes_out,
                draining: draining.contains(h),
            })
            .collect();
        out.sort_by(|a, b| (&a.site, &a.host).cmp(&(&b.site, &b.host)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(port: u16, problems: &[&str]) -> HeartbeatReport {
        HeartbeatReport {
            addr: ([127, 0, 0, 1], port).into(),
            capacity: 100 << 30,
            free: 50 << 30,
            load: 0.0,
            deleted: Vec::new(),
            problems: problems.iter().map(|p| p.to_string()).collect(),
            bytes_in: 0,
            bytes_out: 0,
            voids_seen: 0,
        }
    }

    #[test]
    fn writes_avoid_a_server_reporting_problems_while_another_has_none() {
        let db = crate::store::Store::temporary().unwrap();
        let hosts = Hosts::open(&db, 60_000).unwrap();
        hosts.heartbeat("pop1", "site1", &report(1, &["spool not writable"])).unwrap();
        hosts.heartbeat("pop2", "site1", &report(2, &[])).unwrap();
        for _ in 0..10 {
            assert_eq!(hosts.choose_write_target("site1").unwrap().host, "pop2");
        }
        // Every server troubled: still served (the write may well work).
        hosts.heartbeat("pop2", "site1", &report(2, &["check failed"])).unwrap();
        let picked: std::collections::HashSet<String> =
            (0..10).map(|_| hosts.choose_write_target("site1").unwrap().host).collect();
        assert_eq!(picked.len(), 2, "{picked:?}");
        // A draining server gets no writes, and the mark survives a reopen.
        hosts.set_draining("pop1", true).unwrap();
        for _ in 0..10 {
            assert_eq!(hosts.choose_write_target("site1").unwrap().host, "pop2");
        }
        let hosts = Hosts::open(&db, 60_000).unwrap();
        assert!(hosts.is_draining("pop1") && !hosts.is_draining("pop2"));
        assert!(hosts.set_draining("nope", true).is_err());
    }
}
