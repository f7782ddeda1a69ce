//! The mount's callback subscription: one long-lived stream on the
//! connection to the meta server that carries invalidations, each batch
//! acknowledged once applied, re-opened after the connection or the meta
//! server goes away or falls silent for [`SILENT_MS`]. While it is down,
//! nothing is cached (see [`super::cache`] and [`fs_proto::callback`]).

use super::bundler::Bundler;
use super::cache::Cache;
use super::notify::KernelNotes;
use super::prefetch::Prefetch;
use super::remote::Remote;
use crate::counters::Counters;
use fs_proto::callback::{CallbackAck, CallbackFrame, Invalidation, SILENT_MS};
use fs_proto::frame::{read_msg, write_msg};
use fs_proto::meta::{MetaCall, MetaRequest};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info};

/// How long the meta server may take to accept a subscription.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long an acknowledgement waits for its kernel notifications (see
/// [`super::notify`]): microseconds normally; a notification blocked behind
/// a call in the same directory delays the acknowledgement this much.
const KERNEL_NOTE_WAIT: Duration = Duration::from_millis(100);

/// Keep a subscription open until the task is aborted.
pub async fn run(
    remote: Remote,
    cache: Arc<Cache>,
    notes: KernelNotes,
    counters: Arc<Counters>,
    bundler: Arc<Bundler>,
    prefetch: Arc<Prefetch>,
) {
    let mut pause = Duration::from_millis(100);
    loop {
        let mut refused_for = None;
        match subscribe_once(&remote, &cache, &notes, &counters, &bundler, &prefetch).await {
            Ok(()) => pause = Duration::from_millis(100),
            Err(Ended::Refused { reason, retry_after }) => {
                tracing::warn!("callback subscription refused: {reason}; running uncached until then");
                refused_for = Some(retry_after);
            }
            Err(Ended::Failed(e)) => debug!("callback subscription: {e}"),
        }
        if cache.is_live() {
            info!("callback subscription lost; cache dropped until it is back");
        }
        cache.lost();
        // Tests wait for this instead of for the silence bound to pass.
        counters.bump("cache.lost");
        prefetch.clear();
        bundler.lost();
        notes.send(&[fs_proto::callback::Invalidation::Reset]);
        tokio::time::sleep(refused_for.unwrap_or(pause).min(Duration::from_secs(600))).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// Why a subscription ended.
enum Ended {
    /// The meta server said no, for a while.
    Refused { reason: String, retry_after: Duration },
    /// Anything else (connection, silence, protocol).
    Failed(String),
}

impl From<String> for Ended {
    fn from(e: String) -> Self {
        Ended::Failed(e)
    }
}

async fn subscribe_once(
    remote: &Remote,
    cache: &Cache,
    notes: &KernelNotes,
    counters: &Counters,
    bundler: &Arc<Bundler>,
    prefetch: &Prefetch,
) -> Result<(), Ended> {
    let peer = remote.peer();
    let conn = match remote.dialer().connect(&peer).await {
        Ok(c) => c,
        Err(e) => {
            // A standby refuses: subscribe to the next meta server.
            remote.peers().failed(&peer);
            return Err(e.to_string().into());
        }
    };
    counters.bump("subscribe");
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    write_msg(&mut send, &MetaCall { cred: None, req: MetaRequest::Subscribe }).await.map_err(|e| e.to_string())?;
    let first = tokio::time::timeout(SUBSCRIBE_TIMEOUT, read_msg::<CallbackFrame>(&mut recv))
        .await
        .map_err(|_| "no answer to subscribe".to_string())?
        .map_err(|e| e.to_string())?;
    let lease_ms = match first {
        CallbackFrame::Subscribed { lease_ms } => lease_ms,
        CallbackFrame::Refused { reason, retry_after_ms } => {
            return Err(Ended::Refused { reason, retry_after: Duration::from_millis(retry_after_ms) })
        }
        other => return Err(format!("unexpected first frame {other:?}").into()),
    };
    cache.subscribed(conn.stable_id(), Duration::from_millis(lease_ms));
    bundler.subscribed();
    // Tests wait for this: the mount caches (and leases) again.
    counters.bump("cache.subscribed");
    info!(lease_ms, "callback subscription active");
    let silent = Duration::from_millis(SILENT_MS);
    loop {
        let frame = tokio::time::timeout(silent, read_msg::<CallbackFrame>(&mut recv))
            .await
            .map_err(|_| Ended::Failed(format!("the meta server was silent for {silent:?}")))?;
        match frame {
            Ok(CallbackFrame::Invalidate { seq, list }) => {
                debug!(seq, n = list.len(), "invalidations");
                bundler.on_callbacks(&list);
                let kernel = cache.apply(&list);
                for inv in &list {
                    match inv {
                        Invalidation::Attr { ino } => prefetch.forget(*ino),
                        Invalidation::Reset => prefetch.clear(),
                        _ => {}
                    }
                }
                notes.send(&kernel);
                if !kernel.is_empty() && !notes.delivered(KERNEL_NOTE_WAIT).await {
                    debug!(seq, "kernel notifications still pending; acknowledging");
                }
                // Applied: the change it describes may now be answered.
                write_msg(&mut send, &CallbackAck { seq }).await.map_err(|e| e.to_string())?;
                // Tests wait for this instead of polling what it changes.
                counters.add("cache.invalidations", list.len() as u64);
            }
            Ok(CallbackFrame::Alive) => {}
            Ok(other) => return Err(format!("unexpected frame {other:?}").into()),
            Err(e) => return Err(e.to_string().into()),
        }
    }
}
