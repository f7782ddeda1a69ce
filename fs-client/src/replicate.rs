//! `renkei rep` on the client: walk the paths, ask the meta server for a
//! replication plan (in chunks, as the copies proceed), hand each
//! destination server its copy orders and follow their per-file events.
//! The client only orchestrates: file bytes go from source server to
//! destination server and never through it.
//!
//! Re-running after an interruption is the resume: the plan counts what is
//! already registered, so only the remainder is copied.

use crate::error::ClientError;
use crate::walk::{regular_files, RemoteFile};
use crate::Client;
use fs_proto::meta::{MetaRequest, MetaResponse};
use fs_proto::replication::{CopyGoal, CopyItem, ReplicateEvent, ReplicationPlan, ReplicationQuery, SkipReason};
use fs_proto::rpc::{call_streaming, PeerAddr};
use fs_proto::server::{ServerRequest, ServerResponse};
use fs_proto::{Ino, ServerLoc};
use futures::stream::{self, StreamExt};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

type Result<T> = std::result::Result<T, ClientError>;

/// Files per plan request.
const PLAN_CHUNK: usize = 1024;
/// Bound on waiting for the next event of a copy order.
const EVENT_IDLE: Duration = Duration::from_secs(300);

/// How to replicate.
#[derive(Debug, Clone)]
pub struct RepOptions {
    /// Wanted replicas (on hosts matching `to`, or anywhere). Default 1.
    pub copies: Option<u32>,
    /// Read only from this host or site.
    pub from: Option<String>,
    /// Copy only to this host or site.
    pub to: Option<String>,
    /// Copy orders (streams) in flight at once.
    pub parallel: usize,
    /// Plan and print, copy nothing.
    pub dry_run: bool,
    /// Most files per copy order (1 = one file per request, like plain
    /// per-file replication).
    pub batch_files: usize,
    /// Most bytes per copy order.
    pub batch_bytes: u64,
}

impl Default for RepOptions {
    fn default() -> Self {
        RepOptions {
            copies: None,
            from: None,
            to: None,
            parallel: 8,
            dry_run: false,
            batch_files: 512,
            batch_bytes: 256 << 20,
        }
    }
}

/// Progress of a replication, for bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// The bytes to copy are now estimated at this total.
    Total(u64),
    /// One file is done (this many bytes of it).
    Done(u64),
}

/// Progress callback.
pub type OnTick<'a> = &'a (dyn Fn(Tick) + Send + Sync);

/// A file with a problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileIssue {
    /// Remote path.
    pub path: String,
    /// What went wrong.
    pub reason: String,
}

/// A copy a dry run would make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedView {
    /// Remote path.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Destination host.
    pub to: String,
    /// Its site.
    pub to_site: String,
    /// Source hosts, preferred first.
    pub from: Vec<String>,
}

/// What a replication did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RepReport {
    /// Regular files considered.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
    /// Files that already met the goal.
    pub satisfied: u64,
    /// Copies made.
    pub copied_files: u64,
    /// Bytes moved server to server for them.
    pub copied_bytes: u64,
    /// Copies found already on the destination's disk (registered, not
    /// moved again).
    pub reused_files: u64,
    /// Copy orders sent.
    pub orders: u64,
    /// Files left out (empty, no source, no destination...).
    pub skipped: Vec<FileIssue>,
    /// Files whose copy failed.
    pub failed: Vec<FileIssue>,
    /// What a dry run would copy.
    pub planned: Vec<PlannedView>,
    /// Wall time.
    pub elapsed_ms: u64,
}

impl RepReport {
    /// Whether everything asked for was done.
    pub fn complete(&self) -> bool {
        self.failed.is_empty()
            && self.skipped.iter().all(|s| s.reason == reason(SkipReason::Empty) || s.reason == UNREADABLE)
    }
}

/// Why a directory below the paths given was not walked (another user's
/// private directory is not the caller's to copy; not a failure).
const UNREADABLE: &str = "directory not readable by you: not replicated";

fn reason(r: SkipReason) -> String {
    match r {
        SkipReason::NotAFile => "not a regular file".into(),
        SkipReason::Empty => "empty file (nothing to copy)".into(),
        SkipReason::NoSource => "no live good replica to copy from".into(),
        SkipReason::NoTarget => "not enough live hosts with room to copy to".into(),
    }
}

/// One copy order.
struct Batch {
    target: ServerLoc,
    items: Vec<CopyItem>,
}

/// Split one destination's items into orders of at most `files` files and
/// about `bytes` bytes, and at least `streams` orders when there are
/// enough files, so parallel streams share the work.
fn split(items: Vec<CopyItem>, files: usize, bytes: u64, streams: usize) -> Vec<Vec<CopyItem>> {
    let total: u64 = items.iter().map(|i| i.size).sum();
    let per_stream = total.div_ceil(streams.max(1) as u64).max(1);
    let cap = bytes.min(per_stream).max(1);
    let mut out: Vec<Vec<CopyItem>> = Vec::new();
    let mut cur: Vec<CopyItem> = Vec::new();
    let mut cur_bytes = 0u64;
    for item in items {
        if !cur.is_empty() && (cur.len() >= files.max(1) || cur_bytes + item.size > cap) {
            out.push(std::mem::take(&mut cur));
            cur_bytes = 0;
        }
        cur_bytes += item.size;
        cur.push(item);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

impl Client {
    /// Replicate every regular file at or under `paths`.
    pub async fn replicate(&self, paths: &[String], opts: &RepOptions, on_tick: OnTick<'_>) -> Result<RepReport> {
        let (files, unreadable) = regular_files(self, paths).await?;
        let mut report = self.replicate_files(files, CopyGoal::Copies(opts.copies.unwrap_or(1)), opts, on_tick).await?;
        report.skipped.extend(unreadable.into_iter().map(|path| FileIssue { path, reason: UNREADABLE.into() }));
        Ok(report)
    }

    /// Replicate the given files towards `goal`.
    pub async fn replicate_files(
        &self,
        files: Vec<RemoteFile>,
        goal: CopyGoal,
        opts: &RepOptions,
        on_tick: OnTick<'_>,
    ) -> Result<RepReport> {
        let start = Instant::now();
        let names: HashMap<Ino, (String, u64)> = files.iter().map(|f| (f.ino, (f.path.clone(), f.size))).collect();
        let report = Mutex::new(RepReport {
            files: files.len() as u64,
            bytes: files.iter().map(|f| f.size).sum(),
            ..Default::default()
        });
        let estimate = Mutex::new(report.lock().unwrap_or_else(|p| p.into_inner()).bytes);
        on_tick(Tick::Total(*estimate.lock().unwrap_or_else(|p| p.into_inner())));
        let path_of = |ino: Ino| names.get(&ino).map(|(p, _)| p.clone()).unwrap_or_else(|| format!("inode {ino}"));
        let dead = Mutex::new(HashMap::new());
        let (tx, rx) = mpsc::channel::<Batch>(opts.parallel.max(1) * 2);

        let (report_ref, estimate_ref, files_ref, path_ref) = (&report, &estimate, &files, &path_of);
        let planner = async move {
            let (report, estimate, files, path_of) = (report_ref, estimate_ref, files_ref, path_ref);
            for chunk in files.chunks(PLAN_CHUNK) {
                let q = ReplicationQuery {
                    inos: chunk.iter().map(|f| f.ino).collect(),
                    goal,
                    from: opts.from.clone(),
                    to: opts.to.clone(),
                    dry_run: opts.dry_run,
                };
                let plan = match self.meta().call_at("", MetaRequest::PlanReplication(q)).await? {
                    MetaResponse::ReplicationPlan(p) => p,
                    other => return Err(ClientError::Unexpected(format!("{other:?}"))),
                };
                let chunk_bytes: u64 = chunk.iter().map(|f| f.size).sum();
                let planned: u64 = plan.orders.iter().flat_map(|o| o.items.iter()).map(|i| i.size).sum();
                {
                    let mut est = estimate.lock().unwrap_or_else(|p| p.into_inner());
                    *est = (*est + planned).saturating_sub(chunk_bytes);
                    on_tick(Tick::Total(*est));
                }
                let orders = self.note_plan(report, plan, path_of, opts.dry_run);
                for (target, items) in orders {
                    for items in split(items, opts.batch_files, opts.batch_bytes, opts.parallel) {
                        if tx.send(Batch { target: target.clone(), items }).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
            drop(tx);
            Ok(())
        };
        let executor = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
            .map(|b| self.run_order(b, &report, &dead, &path_of, on_tick))
            .buffer_unordered(opts.parallel.max(1))
            .for_each(|_| async {});
        let (planned, ()) = tokio::join!(planner, executor);
        planned?;
        let mut report = report.into_inner().unwrap_or_else(|p| p.into_inner());
        report.elapsed_ms = start.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// Record what a plan says about files; return its orders (none in a
    /// dry run, whose copies are listed instead).
    fn note_plan(
        &self,
        report: &Mutex<RepReport>,
        plan: ReplicationPlan,
        path_of: &dyn Fn(Ino) -> String,
        dry_run: bool,
    ) -> Vec<(ServerLoc, Vec<CopyItem>)> {
        let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
        r.satisfied += plan.satisfied.len() as u64;
        for s in plan.skipped {
            let mut why = reason(s.reason);
            if s.missing > 0 && matches!(s.reason, SkipReason::NoTarget) {
                why = format!("{why} ({} copies short)", s.missing);
            }
            r.skipped.push(FileIssue { path: path_of(s.ino), reason: why });
        }
        for (ino, e) in plan.refused {
            r.failed.push(FileIssue { path: path_of(ino), reason: e.to_string() });
        }
        if dry_run {
            for o in &plan.orders {
                for i in &o.items {
                    r.planned.push(PlannedView {
                        path: path_of(i.ino),
                        size: i.size,
                        to: o.target.host.clone(),
                        to_site: o.target.site.clone(),
                        from: i.sources.iter().map(|s| s.host.clone()).collect(),
                    });
                }
            }
            return Vec::new();
        }
        plan.orders.into_iter().map(|o| (o.target, o.items)).collect()
    }

    /// Send one copy order and follow it to the end. A destination that
    /// could not be reached is not tried again in this run (its orders fail
    /// at once; re-running the command resumes them).
    async fn run_order(
        &self,
        b: Batch,
        report: &Mutex<RepReport>,
        dead: &Mutex<HashMap<String, String>>,
        path_of: &dyn Fn(Ino) -> String,
        on_tick: OnTick<'_>,
    ) {
        let sizes: HashMap<Ino, u64> = b.items.iter().map(|i| (i.ino, i.size)).collect();
        let mut answered: Vec<Ino> = Vec::new();
        let peer = PeerAddr { addr: b.target.addr, name: b.target.host.clone() };
        let host = b.target.host.clone();
        let inos: Vec<Ino> = b.items.iter().map(|i| i.ino).collect();
        let known_dead = dead.lock().unwrap_or_else(|p| p.into_inner()).get(&host).cloned();
        if let Some(why) = known_dead {
            let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
            for ino in inos {
                r.failed.push(FileIssue { path: path_of(ino), reason: format!("to {host}: {why}") });
                on_tick(Tick::Done(sizes.get(&ino).copied().unwrap_or(0)));
            }
            return;
        }
        self.counters().bump("data.replicate");
        let res = match self.data().dialer().connect(&peer).await {
            Err(e) => Err(e),
            Ok(conn) => {
                call_streaming::<_, ServerResponse, ReplicateEvent>(
                    &conn,
                    &host,
                    &ServerRequest::Replicate { items: b.items },
                    EVENT_IDLE,
                    |ev| {
                        let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
                        match ev {
                            ReplicateEvent::Copied { ino, bytes, .. } => {
                                answered.push(ino);
                                if bytes == 0 {
                                    r.reused_files += 1;
                                } else {
                                    r.copied_files += 1;
                                    r.copied_bytes += bytes;
                                }
                                on_tick(Tick::Done(sizes.get(&ino).copied().unwrap_or(bytes)));
                            }
                            ReplicateEvent::Failed { ino, error, .. } => {
                                answered.push(ino);
                                r.failed.push(FileIssue { path: path_of(ino), reason: format!("to {host}: {error}") });
                                on_tick(Tick::Done(sizes.get(&ino).copied().unwrap_or(0)));
                            }
                        }
                    },
                )
                .await
            }
        };
        if let Err(e) = &res {
            if e.is_unreachable() {
                dead.lock().unwrap_or_else(|p| p.into_inner()).insert(host.clone(), format!("unreachable: {e}"));
                self.data().dialer().forget(&peer).await;
            }
        }
        let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
        r.orders += 1;
        if let Err(e) = res {
            for ino in inos.into_iter().filter(|i| !answered.contains(i)) {
                r.failed.push(FileIssue { path: path_of(ino), reason: format!("to {}: {e}", b.target.host) });
                on_tick(Tick::Done(sizes.get(&ino).copied().unwrap_or(0)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fs_proto::SignedCapability;

    fn item(ino: Ino, size: u64) -> CopyItem {
        CopyItem {
            ino,
            gen: 1,
            size,
            hash: [0; 32],
            cap: SignedCapability { body: vec![], sig: vec![] },
            sources: vec![],
        }
    }

    fn sizes(b: &[Vec<CopyItem>]) -> Vec<usize> {
        b.iter().map(Vec::len).collect()
    }

    #[test]
    fn split_bounds_files_bytes_and_shares_streams() {
        let items: Vec<_> = (0..10).map(|i| item(i, 100)).collect();
        assert_eq!(sizes(&split(items.clone(), 1, u64::MAX, 1)), vec![1; 10], "per-file orders");
        assert_eq!(sizes(&split(items.clone(), 4, u64::MAX, 1)), vec![4, 4, 2]);
        assert_eq!(sizes(&split(items.clone(), 100, 300, 1)), vec![3, 3, 3, 1]);
        assert_eq!(sizes(&split(items.clone(), 100, u64::MAX, 2)), vec![5, 5], "two streams share the work");
        // A file larger than the byte bound still travels, alone.
        assert_eq!(sizes(&split(vec![item(1, 1000), item(2, 1)], 100, 10, 1)), vec![1, 1]);
        assert!(split(Vec::new(), 10, 10, 4).is_empty());
    }
}
