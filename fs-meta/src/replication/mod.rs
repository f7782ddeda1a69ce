//! Replication on the meta server: planning copies (for `renkei rep`, for
//! `renkei fsck --repair` and for the background worker that keeps copy
//! counts), signing the capabilities destinations need, and the worker
//! itself. The meta server never touches file bytes: it orders a
//! destination server to pull them from a source server.
//!
//! # Layout
//! - [`plan`]: the sans-IO planner (which copy goes where, what to trim).
//! - [`view`]: the planner's inputs built from the namespace and hosts.
//! - [`orders`]: `PlanReplication`/`PlanCheck` requests and capability
//!   signing.
//! - [`worker`]: the background worker that keeps copy counts.

pub mod orders;
pub mod plan;
pub mod view;
pub mod worker;

use crate::service::MetaService;
use fs_proto::replication::ReplicationStatus;
use fs_proto::Ino;
use fs_proto::Timestamp;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// Most files a pass woken by writes looks at one by one; past this a
/// whole scan is cheaper than the lookups.
const FILES_MAX: usize = 65_536;

/// What the next pass has to look at.
#[derive(Debug, Default)]
pub struct Pending {
    /// Everything: hosts came or went, a copy count changed (it may be a
    /// directory's), or too many files changed to list.
    pub full: bool,
    /// Files that changed (new generations, bad replicas).
    pub files: BTreeSet<Ino>,
}

/// What the worker and the request handlers share.
pub struct Shared {
    wake: Notify,
    pending: Mutex<Pending>,
    status: Mutex<ReplicationStatus>,
    /// Moves on every change of the status (a pass, a copy done or
    /// failed): what a waiter for the worker's progress wakes on.
    changes: tokio::sync::watch::Sender<u64>,
    /// When this meta server started (ms since the epoch): hosts not heard
    /// from since are counted as down from then, not from their last
    /// heartbeat before a restart.
    pub started_ms: u64,
}

impl Shared {
    /// Fresh state.
    pub fn new() -> Self {
        Shared {
            wake: Notify::new(),
            // The first pass looks at everything.
            pending: Mutex::new(Pending { full: true, files: BTreeSet::new() }),
            status: Mutex::new(ReplicationStatus::default()),
            changes: tokio::sync::watch::channel(0).0,
            started_ms: Timestamp::now().as_millis(),
        }
    }

    /// Something changed that may need copies or removals anywhere: wake
    /// the worker for a pass over every file.
    pub fn nudge(&self) {
        self.lock_pending().full = true;
        self.wake.notify_one();
    }

    /// Files `inos` changed (a new generation, a bad replica): wake the
    /// worker for a pass over them.
    pub fn nudge_files(&self, inos: impl IntoIterator<Item = Ino>) {
        {
            let mut p = self.lock_pending();
            if !p.full {
                p.files.extend(inos);
                if p.files.len() > FILES_MAX {
                    p.full = true;
                    p.files.clear();
                }
            }
        }
        self.wake.notify_one();
    }

    /// What the next pass must look at (taken: later changes are the next
    /// pass's).
    pub fn take_pending(&self) -> Pending {
        std::mem::take(&mut *self.lock_pending())
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait for a nudge.
    pub async fn nudged(&self) {
        self.wake.notified().await
    }

    /// The current status.
    pub fn status(&self) -> ReplicationStatus {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Change the status.
    pub fn update(&self, f: impl FnOnce(&mut ReplicationStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
        self.changes.send_modify(|n| *n += 1);
    }

    /// A receiver that sees every change of the status.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

/// The running background worker (if enabled).
pub struct Background {
    exit: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Background {
    /// Ask the worker to stop and wait for it (bounded).
    pub async fn stop(mut self) {
        let _ = self.exit.send(true);
        if let Some(mut t) = self.task.take() {
            if tokio::time::timeout(std::time::Duration::from_secs(5), &mut t).await.is_err() {
                t.abort();
            }
        }
    }
}

/// Start the replication worker, dialling file servers through `endpoint`
/// (which presents the meta server's host identity).
pub fn start(svc: Arc<MetaService>, endpoint: &quinn::Endpoint) -> Background {
    let (exit, rx) = watch::channel(false);
    let enabled = svc.config.replication_worker;
    svc.replication.update(|s| s.enabled = enabled);
    let task = enabled.then(|| {
        let w = worker::ReplicationWorker::new(svc, endpoint.clone());
        tokio::spawn(crate::worker::run(w, rx))
    });
    Background { exit, task }
}
