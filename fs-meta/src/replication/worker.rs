//! The background replication worker: keeps every file at its copy count.
//!
//! One pass looks at every file with replicas, plans with the sans-IO
//! [`super::plan`] (counting a replica on a host that is down for less than
//! `replica_down_grace_ms`, never reading a bad one, trimming surplus only
//! for files with an explicit copy count and only once every holder is
//! alive), removes the surplus at once (the holders delete the files after
//! the GC grace), moves replicas off draining hosts (a copy that replaces
//! one drops it once registered), and sends copy orders to the destination servers, a few
//! at a time, each a stream of many files. A pass is woken by writes,
//! copy-count changes, bad replicas and hosts returning, by the moment a
//! down host crosses the grace period, or by the interval.
//!
//! A pass woken only by changed files (new generations, bad replicas)
//! looks at those files alone: a burst of writes costs work in proportion
//! to the burst, not to the namespace. Everything is looked at on the
//! first pass, when hosts come or go, when a copy count changes, after a
//! pass with failures or more copies than one pass orders, and at the
//! interval. The status totals are kept per file between passes, so a pass
//! over a few files still reports the whole backlog.

use super::orders::sign_copy;
use super::plan::{plan_file, Outcome, Policy, Want};
use super::view::{file_view, HostTable};
use crate::service::MetaService;
use crate::worker::{Worker, WorkerState};
use fs_proto::replication::{CopyItem, ReplicateEvent};
use fs_proto::rpc::{call_streaming, Dialer, PeerAddr};
use fs_proto::server::{ServerRequest, ServerResponse};
use fs_proto::{Ino, ServerLoc, Timestamp};
use futures::stream::{self, StreamExt};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Most copies one pass orders; more make the next pass start at once.
const PASS_COPIES: usize = 4096;
/// Files per copy order (one stream at the destination).
const ORDER_FILES: usize = 256;
/// After a nudge, wait this long for related changes to arrive (a tree
/// being written) before planning.
const SETTLE: Duration = Duration::from_millis(300);
/// After a pass with failures, try again this soon (unless the interval is
/// shorter).
const RETRY: Duration = Duration::from_secs(5);
/// Bound on waiting for one event of a copy order.
const EVENT_IDLE: Duration = Duration::from_secs(300);

/// Where a file stands after the pass that last looked at it (kept only
/// for files that count in a status total).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Standing {
    /// Short of its copy count (copies ordered or impossible now).
    backlog: bool,
    /// Bytes still to copy for it.
    bytes: u64,
    /// Cannot reach its copy count now.
    stuck: bool,
    /// Had more replicas than wanted.
    surplus: bool,
}

/// The worker.
pub struct ReplicationWorker {
    svc: Arc<MetaService>,
    dialer: Dialer,
    failed_last_pass: bool,
    /// The next pass looks at every file (the interval passed, a pass
    /// failed or left copies for later).
    full_due: bool,
    /// Files that count in the status totals, as of the pass that last
    /// looked at each.
    standing: HashMap<Ino, Standing>,
}

impl ReplicationWorker {
    /// A worker dialling file servers through `endpoint`.
    pub fn new(svc: Arc<MetaService>, endpoint: quinn::Endpoint) -> Self {
        ReplicationWorker {
            svc,
            dialer: Dialer::new(endpoint, Duration::from_secs(10)),
            failed_last_pass: false,
            full_due: true,
            standing: HashMap::new(),
        }
    }

    /// One pass; returns whether more copies wait than one pass orders.
    async fn pass(&mut self) -> bool {
        let svc = self.svc.clone();
        let cfg = &svc.config;
        let grace = cfg.replica_down_grace_ms;
        let table = HostTable::now(&svc);
        let changed = svc.replication.take_pending();
        let full = std::mem::take(&mut self.full_due) | changed.full;
        debug!(full, nudged_full = changed.full, files = changed.files.len(), "replication pass starts");
        let scanned = if full {
            svc.ns.replication_scan()
        } else {
            svc.ns.replication_files(&changed.files.iter().copied().collect::<Vec<_>>())
        };
        let files = match scanned {
            Ok(f) => f,
            Err(e) => {
                warn!("replication scan failed: {e}");
                svc.replication.update(|s| s.last_error = Some(format!("scan: {e}")));
                return false;
            }
        };
        let policy = Policy {
            want: Want::Ncopy { default: cfg.default_ncopy.max(1) },
            from: None,
            to: None,
            remove_surplus: true,
            down_grace_ms: grace,
        };
        if full {
            self.standing.clear();
        } else {
            // Those looked at now are judged again below (a file gone or
            // without replicas drops out).
            for ino in &changed.files {
                self.standing.remove(ino);
            }
        }
        let mut removed = 0u64;
        let mut by_dst: BTreeMap<String, Vec<CopyItem>> = BTreeMap::new();
        // (file, destination) -> the draining host whose replica the copy
        // replaces.
        let mut moves: HashMap<(Ino, String), String> = HashMap::new();
        // Per file: copies still to complete, and whether it stays short
        // even when they do (it leaves the backlog only if not).
        let mut pending: HashMap<Ino, (u32, bool)> = HashMap::new();
        let mut ordered = 0usize;
        let mut more = false;
        for (ino, inode, reps) in &files {
            let Some(hash) = inode.hash.filter(|_| inode.size > 0 && inode.gen > 0) else { continue };
            let fp = plan_file(&file_view(*ino, inode, reps, Vec::new()), &table.views, &policy);
            let short = matches!(fp.outcome, Outcome::Short { .. });
            let mut st = Standing {
                backlog: !fp.copies.is_empty() || short,
                bytes: 0,
                stuck: short,
                // Set below if a surplus replica could not be removed.
                surplus: false,
            };
            if let Outcome::Short { missing, .. } = fp.outcome {
                st.bytes += missing as u64 * inode.size;
            }
            for host in &fp.removals {
                match svc.ns.drop_replica(*ino, inode.gen, host) {
                    Ok(true) => {
                        removed += 1;
                        debug!(ino, host = %host, "removed a surplus replica");
                    }
                    Ok(false) => {}
                    Err(e) => {
                        st.surplus = true;
                        self.full_due = true;
                        warn!(ino, host = %host, "removing a surplus replica failed: {e}");
                    }
                }
            }
            for copy in fp.copies {
                st.bytes += inode.size;
                if ordered >= PASS_COPIES {
                    more = true;
                    continue;
                }
                ordered += 1;
                pending.entry(*ino).or_insert((0, short)).0 += 1;
                if let Some(from) = copy.replaces {
                    moves.insert((*ino, copy.dst.clone()), from);
                }
                let cap = sign_copy(&svc, *ino, inode.gen, &copy.dst, inode.size, hash);
                let item = CopyItem {
                    ino: *ino,
                    gen: inode.gen,
                    size: inode.size,
                    hash,
                    cap,
                    sources: table.locs_of(&copy.sources),
                };
                by_dst.entry(copy.dst).or_default().push(item);
            }
            if st != Standing::default() {
                self.standing.insert(*ino, st);
            }
        }
        if more {
            // The copies left out are ordered by a pass over everything.
            self.full_due = true;
        }
        let (mut backlog_files, mut backlog_bytes, mut surplus, mut stuck) = (0u64, 0u64, 0u64, 0u64);
        for st in self.standing.values() {
            backlog_files += st.backlog as u64;
            backlog_bytes += st.bytes;
            surplus += st.surplus as u64;
            stuck += st.stuck as u64;
        }
        let lost: Vec<String> =
            table.views.iter().filter(|h| h.down_for_ms.is_some_and(|d| d >= grace)).map(|h| h.host.clone()).collect();
        svc.replication.update(|s| {
            s.files_checked = files.len() as u64;
            s.backlog_files = backlog_files;
            s.backlog_bytes = backlog_bytes;
            s.surplus_files = surplus;
            s.stuck_files = stuck;
            s.removed += removed;
            s.hosts_lost = lost;
            s.in_flight = ordered as u64;
        });
        if ordered > 0 || removed > 0 {
            info!(copies = ordered, removed, stuck, "replication pass");
        }
        let mut orders: Vec<(ServerLoc, Vec<CopyItem>)> = Vec::new();
        for (dst, items) in by_dst {
            let Some(loc) = table.locs.get(&dst) else { continue };
            let mut items = items;
            while !items.is_empty() {
                let rest = items.split_off(items.len().min(ORDER_FILES));
                orders.push((loc.clone(), items));
                items = rest;
            }
        }
        let pending = Mutex::new(pending);
        let moves = &moves;
        let failed = stream::iter(orders)
            .map(|(loc, items)| self.run_order(loc, items, &pending, moves))
            .buffer_unordered(svc.config.replication_parallel.max(1))
            .fold(0u64, |acc, f| async move { acc + f })
            .await;
        self.failed_last_pass = failed > 0;
        self.full_due |= failed > 0;
        // Files whose copies all completed left the backlog.
        for (ino, (left, short)) in pending.into_inner().unwrap_or_else(|p| p.into_inner()) {
            if left == 0 && !short {
                if let Some(st) = self.standing.get_mut(&ino) {
                    (st.backlog, st.bytes) = (false, 0);
                    if *st == Standing::default() {
                        self.standing.remove(&ino);
                    }
                }
            }
        }
        svc.replication.update(|s| {
            s.passes += 1;
            s.last_pass_ms = Timestamp::now().as_millis();
            s.in_flight = 0;
        });
        more
    }

    /// Send one copy order; returns how many items failed. A copy that
    /// replaces a draining host's replica (`moves`) drops that replica as
    /// soon as it is registered.
    async fn run_order(
        &self,
        loc: ServerLoc,
        items: Vec<CopyItem>,
        pending: &Mutex<HashMap<Ino, (u32, bool)>>,
        moves: &HashMap<(Ino, String), String>,
    ) -> u64 {
        let svc = &self.svc;
        let n = items.len() as u64;
        let peer = PeerAddr { addr: loc.addr, name: loc.host.clone() };
        let sizes: BTreeMap<u64, u64> = items.iter().map(|i| (i.ino, i.size)).collect();
        let mut done = 0u64;
        let mut failed = 0u64;
        let result = match self.dialer.connect(&peer).await {
            Err(e) => Err(e),
            Ok(conn) => {
                call_streaming::<_, ServerResponse, ReplicateEvent>(
                    &conn,
                    &loc.host,
                    &ServerRequest::Replicate { items },
                    EVENT_IDLE,
                    |ev| {
                        done += 1;
                        match ev {
                            ReplicateEvent::Copied { ino, gen, bytes, .. } => {
                                if let Some(from) = moves.get(&(ino, loc.host.clone())) {
                                    match svc.ns.finish_move(ino, gen, from, &loc.host) {
                                        Ok(true) => {
                                            debug!(ino, from = %from, to = %loc.host, "moved off a draining host")
                                        }
                                        Ok(false) => {}
                                        Err(e) => warn!(ino, from = %from, "dropping a drained replica failed: {e}"),
                                    }
                                }
                                let size = sizes.get(&ino).copied().unwrap_or(0);
                                let file_done = {
                                    let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
                                    match p.get_mut(&ino) {
                                        Some((left, short)) => {
                                            *left = left.saturating_sub(1);
                                            *left == 0 && !*short
                                        }
                                        None => false,
                                    }
                                };
                                svc.replication.update(|s| {
                                    s.copies_done += 1;
                                    s.bytes_copied += bytes;
                                    if file_done {
                                        s.backlog_files = s.backlog_files.saturating_sub(1);
                                    }
                                    s.backlog_bytes = s.backlog_bytes.saturating_sub(size);
                                    s.in_flight = s.in_flight.saturating_sub(1);
                                });
                                // Fault tests: the meta server dies while
                                // a destination is copying.
                                fs_proto::process::crash_point("meta.replication.copied");
                            }
                            ReplicateEvent::Failed { ino, error, .. } => {
                                failed += 1;
                                warn!(ino, dst = %loc.host, "background copy failed: {error}");
                                svc.replication.update(|s| {
                                    s.copies_failed += 1;
                                    s.in_flight = s.in_flight.saturating_sub(1);
                                    s.last_error = Some(format!("copy of inode {ino} to {}: {error}", loc.host));
                                });
                            }
                        }
                    },
                )
                .await
            }
        };
        if let Err(e) = result {
            let lost = n.saturating_sub(done);
            warn!(dst = %loc.host, lost, "copy order failed: {e}");
            self.dialer.forget(&peer).await;
            svc.replication.update(|s| {
                s.copies_failed += lost;
                s.in_flight = s.in_flight.saturating_sub(lost);
                s.last_error = Some(format!("copy order to {}: {e}", loc.host));
            });
            failed += lost;
        }
        failed
    }
}

impl Worker for ReplicationWorker {
    fn name(&self) -> &'static str {
        "replication"
    }

    async fn work(&mut self) -> WorkerState {
        let t = Instant::now();
        let more = self.pass().await;
        debug!(ms = t.elapsed().as_millis() as u64, more, "replication pass done");
        if more {
            WorkerState::Busy
        } else {
            WorkerState::Idle
        }
    }

    async fn wait_for_work(&mut self) {
        let cfg = &self.svc.config;
        let mut wait = Duration::from_millis(cfg.replication_interval_ms.max(100));
        if self.failed_last_pass {
            wait = wait.min(RETRY);
        }
        // Wake when the next down host crosses the grace period.
        if let Some(ms) = HostTable::now(&self.svc).next_grace_expiry(cfg.replica_down_grace_ms) {
            wait = wait.min(Duration::from_millis(ms + 50));
        }
        tokio::select! {
            _ = self.svc.replication.nudged() => tokio::time::sleep(SETTLE).await,
            _ = tokio::time::sleep(wait) => self.full_due = true,
        }
    }
}
