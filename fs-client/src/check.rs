//! `renkei fsck` on the client: ask the meta server which host holds which
//! replica (with read capabilities), have each host verify its replicas on
//! its own disk (no data moves), collect what is bad, missing, unreachable
//! or lost, and with `--repair` copy good replicas over the bad ones
//! (server to server, as `renkei rep` does).

use crate::error::ClientError;
use crate::replicate::{FileIssue, OnTick, RepOptions, RepReport};
use crate::walk::{regular_files, RemoteFile};
use crate::Client;
use fs_proto::meta::{MetaRequest, MetaResponse};
use fs_proto::replication::{CheckItem, CheckPlan, CopyGoal, VerifyEvent};
use fs_proto::rpc::{call_streaming, PeerAddr};
use fs_proto::server::{ServerRequest, ServerResponse};
use fs_proto::{ErrorCode, Ino, ServerLoc};
use futures::stream::{self, StreamExt};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, ClientError>;

/// Files per check plan request.
const PLAN_CHUNK: usize = 1024;
/// Replicas per verify request.
const VERIFY_BATCH: usize = 256;
/// Bound on waiting for the next verification result.
const EVENT_IDLE: Duration = Duration::from_secs(300);

/// One replica with a problem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaIssue {
    /// Inode.
    pub ino: Ino,
    /// Remote path.
    pub path: String,
    /// Host holding the replica.
    pub host: String,
    /// Its site.
    pub site: String,
    /// What is wrong.
    pub reason: String,
}

/// What a check found (and repaired).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CheckReport {
    /// Regular files looked at.
    pub files: u64,
    /// Replicas verified on their hosts.
    pub verified: u64,
    /// Of those, good.
    pub good: u64,
    /// Bytes hashed on the hosts.
    pub bytes_verified: u64,
    /// Replicas that failed verification (now marked bad).
    pub corrupt: Vec<ReplicaIssue>,
    /// Replicas registered but missing from their host's disk.
    pub missing: Vec<ReplicaIssue>,
    /// Replicas already known bad.
    pub known_bad: Vec<ReplicaIssue>,
    /// Replicas on hosts that are down (not verified).
    pub unreachable: Vec<ReplicaIssue>,
    /// Files with contents but no replica at all.
    pub lost: Vec<String>,
    /// Files or replicas that could not be checked.
    pub errors: Vec<FileIssue>,
    /// Directories skipped because the caller may not read them.
    pub unreadable: Vec<String>,
    /// What `--repair` did.
    pub repair: Option<RepReport>,
    /// Wall time.
    pub elapsed_ms: u64,
}

impl CheckReport {
    /// Whether every replica is good (after repair, if one was made).
    pub fn clean(&self) -> bool {
        let damaged = !(self.corrupt.is_empty() && self.missing.is_empty() && self.known_bad.is_empty());
        let repaired = self.repair.as_ref().is_some_and(|r| r.complete());
        (!damaged || repaired) && self.lost.is_empty() && self.errors.is_empty()
    }
}

impl Client {
    /// Check every regular file at or under `paths`; with `repair`, copy
    /// good replicas over bad or missing ones.
    pub async fn check(
        &self,
        paths: &[String],
        repair: bool,
        parallel: usize,
        on_tick: OnTick<'_>,
    ) -> Result<CheckReport> {
        let start = Instant::now();
        let (files, unreadable) = regular_files(self, paths).await?;
        let names: HashMap<Ino, RemoteFile> = files.iter().map(|f| (f.ino, f.clone())).collect();
        let path_of = |ino: Ino| names.get(&ino).map(|f| f.path.clone()).unwrap_or_else(|| format!("inode {ino}"));
        let report = Mutex::new(CheckReport { files: files.len() as u64, unreadable, ..Default::default() });
        for chunk in files.chunks(PLAN_CHUNK) {
            let inos = chunk.iter().map(|f| f.ino).collect();
            let plan = match self.meta().call_at("", MetaRequest::PlanCheck { inos }).await? {
                MetaResponse::CheckPlan(p) => p,
                other => return Err(ClientError::Unexpected(format!("{other:?}"))),
            };
            let orders = note_plan(&report, plan, &path_of);
            let mut batches = Vec::new();
            for (target, items) in orders {
                for part in items.chunks(VERIFY_BATCH) {
                    batches.push((target.clone(), part.to_vec()));
                }
            }
            stream::iter(batches)
                .map(|(t, items)| self.run_verify(t, items, &report, &path_of))
                .buffer_unordered(parallel.max(1))
                .for_each(|_| async {})
                .await;
        }
        let mut report = report.into_inner().unwrap_or_else(|p| p.into_inner());
        if repair {
            let damaged: BTreeSet<Ino> = report
                .corrupt
                .iter()
                .chain(report.missing.iter())
                .chain(report.known_bad.iter())
                .map(|i| i.ino)
                .collect();
            if !damaged.is_empty() {
                let todo: Vec<RemoteFile> = damaged.iter().filter_map(|i| names.get(i).cloned()).collect();
                let opts = RepOptions { parallel, ..Default::default() };
                report.repair = Some(self.replicate_files(todo, CopyGoal::Repair, &opts, on_tick).await?);
            }
        }
        report.elapsed_ms = start.elapsed().as_millis() as u64;
        Ok(report)
    }

    async fn run_verify(
        &self,
        target: ServerLoc,
        items: Vec<CheckItem>,
        report: &Mutex<CheckReport>,
        path_of: &dyn Fn(Ino) -> String,
    ) {
        self.counters().bump("data.verify");
        let peer = PeerAddr { addr: target.addr, name: target.host.clone() };
        let mut answered: BTreeSet<Ino> = BTreeSet::new();
        let inos: Vec<Ino> = items.iter().map(|i| i.ino).collect();
        let issue = |ino: Ino, reason: String| ReplicaIssue {
            ino,
            path: path_of(ino),
            host: target.host.clone(),
            site: target.site.clone(),
            reason,
        };
        let res = match self.data().dialer().connect(&peer).await {
            Err(e) => Err(e),
            Ok(conn) => {
                let req = ServerRequest::Verify { caps: items.into_iter().map(|i| i.cap).collect() };
                call_streaming::<_, ServerResponse, VerifyEvent>(&conn, &target.host, &req, EVENT_IDLE, |ev| {
                    answered.insert(ev.ino);
                    let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
                    r.verified += 1;
                    match ev.result {
                        Ok(()) => {
                            r.good += 1;
                            r.bytes_verified += ev.bytes;
                        }
                        Err(e) if e.code == ErrorCode::NotFound => r.missing.push(issue(ev.ino, e.to_string())),
                        Err(e) if e.code == ErrorCode::Corrupt => r.corrupt.push(issue(ev.ino, e.to_string())),
                        Err(e) => r
                            .errors
                            .push(FileIssue { path: path_of(ev.ino), reason: format!("on {}: {e}", target.host) }),
                    }
                })
                .await
            }
        };
        if let Err(e) = res {
            let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
            for ino in inos.into_iter().filter(|i| !answered.contains(i)) {
                r.errors.push(FileIssue { path: path_of(ino), reason: format!("on {}: {e}", target.host) });
            }
        }
    }
}

fn note_plan(
    report: &Mutex<CheckReport>,
    plan: CheckPlan,
    path_of: &dyn Fn(Ino) -> String,
) -> Vec<(ServerLoc, Vec<CheckItem>)> {
    let mut r = report.lock().unwrap_or_else(|p| p.into_inner());
    let note = |n: fs_proto::replication::ReplicaNote, why: &str| ReplicaIssue {
        ino: n.ino,
        path: path_of(n.ino),
        host: n.host,
        site: n.site,
        reason: why.to_string(),
    };
    for n in plan.known_bad {
        r.known_bad.push(note(n, "known bad (failed an earlier verification)"));
    }
    for n in plan.unreachable {
        r.unreachable.push(note(n, "host is down"));
    }
    for ino in plan.lost {
        r.lost.push(path_of(ino));
    }
    for (ino, e) in plan.refused {
        r.errors.push(FileIssue { path: path_of(ino), reason: e.to_string() });
    }
    plan.orders.into_iter().map(|o| (o.target, o.items)).collect()
}
