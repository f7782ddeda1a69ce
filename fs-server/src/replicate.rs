//! A copy order (`ServerRequest::Replicate`): make local replicas of the
//! listed generations by pulling them from peers, and report each file as
//! it is done.
//!
//! Hop by hop for one order: check every item's capability (issued to this
//! server, for exactly the bytes named); keep a good copy already on disk
//! (verified in full) instead of moving it again; order each item's
//! sources by site and measured round-trip time; pull the items grouped by
//! their preferred source, one stream per source ([`crate::pull`]); retry
//! what a source could not deliver from the next one; register what was
//! sealed at the meta server in batches (one round trip and one metadata
//! flush for many files); send a [`ReplicateEvent`] per file. A replica is
//! registered only after it is complete, verified and durable; a copy the
//! meta server refuses is deleted at once.

use crate::data::verify_cap;
use crate::node::Ctx;
use crate::pull::{pull, Leftover, Stored};
use crate::replica::ReplicaFile;
use crate::streams::{within, IDLE_RESET};
use fs_proto::frame::write_msg;
use fs_proto::meta::{MetaRequest, MetaResponse};
use fs_proto::replication::{CopyItem, ReplicateEvent};
use fs_proto::rpc::PeerAddr;
use fs_proto::server::{ServerReply, ServerResponse};
use fs_proto::{Access, ErrorCode, Identity, RemoteError, ServerLoc};
use futures::future::join_all;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, info, Instrument};

/// Registrations sent to the meta server in one batch, at most.
const REGISTER_BATCH: usize = 512;
/// Bound on measuring the round trip to a source.
const PROBE: Duration = Duration::from_secs(3);

/// Serve a copy order.
pub async fn replicate(ctx: Arc<Ctx>, peer: &Identity, items: Vec<CopyItem>, mut send: quinn::SendStream) {
    let n = items.len();
    let idle = ctx.streams.idle();
    let head = ServerReply::Ok(ServerResponse::Replicating { items: n as u32 });
    if !matches!(within(idle, write_msg(&mut send, &head)).await, Some(Ok(()))) {
        let _ = send.reset(IDLE_RESET);
        return;
    }
    info!(by = %peer, files = n, bytes = items.iter().map(|i| i.size).sum::<u64>(), "copy order");
    let (ev_tx, mut ev_rx) = mpsc::channel::<ReplicateEvent>(256);
    let started = std::time::Instant::now();
    let job = tokio::spawn(copy_all(ctx, items, ev_tx).in_current_span());
    let mut listening = true;
    let (mut copied, mut failed_n) = (0u64, 0u64);
    // Report as files finish. If whoever ordered the copy went away, the
    // copy still completes (what it registers is what a re-run skips).
    while let Some(ev) = ev_rx.recv().await {
        match &ev {
            ReplicateEvent::Copied { .. } => copied += 1,
            ReplicateEvent::Failed { .. } => failed_n += 1,
        }
        // An orderer that takes no event for the idle bound is given up
        // (the copy goes on without it).
        if listening && !matches!(within(idle, write_msg(&mut send, &ev)).await, Some(Ok(()))) {
            listening = false;
            let _ = send.reset(IDLE_RESET);
        }
    }
    let _ = job.await;
    info!(copied, failed = failed_n, ms = started.elapsed().as_millis() as u64, "copy order done");
    if listening {
        let _ = send.finish();
    }
}

fn failed(item: &CopyItem, error: RemoteError) -> ReplicateEvent {
    ReplicateEvent::Failed { ino: item.ino, gen: item.gen, error }
}

/// Check that an item's capability lets this server copy exactly it.
fn check_item(ctx: &Ctx, item: &CopyItem) -> Result<(), RemoteError> {
    let cap = verify_cap(ctx, &ctx.identity, &item.cap, Access::Replicate)?;
    if cap.ino != item.ino || cap.gen != item.gen || cap.expect != Some((item.size, item.hash)) {
        return Err(RemoteError::new(ErrorCode::BadCapability, "capability names another replica"));
    }
    Ok(())
}

/// Errors that another source would not fix.
fn final_error(e: &RemoteError) -> bool {
    matches!(e.code, ErrorCode::NoSpace | ErrorCode::BadCapability | ErrorCode::Stale)
}

async fn copy_all(ctx: Arc<Ctx>, items: Vec<CopyItem>, events: mpsc::Sender<ReplicateEvent>) {
    let (stored_tx, stored_rx) = mpsc::channel::<Stored>(1024);
    let registrar = tokio::spawn(register_all(ctx.clone(), stored_rx, events.clone()).in_current_span());
    let mut todo = Vec::new();
    // Every capability is an ECDSA verification: an order of thousands is
    // checked on the blocking pool, not on an async worker.
    let checked = {
        let (c, copy) = (ctx.clone(), items.clone());
        match tokio::task::spawn_blocking(move || copy.into_iter().map(|i| (check_item(&c, &i), i)).collect::<Vec<_>>())
            .await
        {
            Ok(v) => v,
            Err(e) => {
                let e = RemoteError::new(ErrorCode::Internal, format!("checking capabilities: {e}"));
                items.into_iter().map(|i| (Err(e.clone()), i)).collect()
            }
        }
    };
    for (ok, item) in checked {
        match ok {
            Ok(()) => {
                ctx.pins.hold(item.ino, item.gen);
                todo.push(item);
            }
            Err(e) => {
                let _ = events.send(failed(&item, e)).await;
            }
        }
    }
    let todo = keep_local_copies(&ctx, todo, &stored_tx).await;
    let rtt = probe_sources(&ctx, &todo).await;
    let me = ctx.identity.name.clone();
    let my_site = ctx.identity.site.clone().unwrap_or_default();
    let mut pending: Vec<(CopyItem, VecDeque<ServerLoc>, RemoteError)> = todo
        .into_iter()
        .map(|item| {
            let mut srcs: Vec<(usize, ServerLoc)> =
                item.sources.iter().filter(|s| s.host != me).cloned().enumerate().collect();
            srcs.sort_by_key(|(i, s)| (s.site != my_site, rtt.get(&s.host).copied().unwrap_or(Duration::MAX), *i));
            let none = RemoteError::new(ErrorCode::NoServer, "no live source holds a good replica");
            (item, srcs.into_iter().map(|(_, s)| s).collect(), none)
        })
        .collect();
    // Rounds: each item tries its next source until one delivers.
    while !pending.is_empty() {
        let mut groups: BTreeMap<String, (ServerLoc, Vec<CopyItem>)> = BTreeMap::new();
        let mut rest: HashMap<(u64, u64), VecDeque<ServerLoc>> = HashMap::new();
        for (item, mut srcs, last) in pending.drain(..) {
            match srcs.pop_front() {
                None => {
                    ctx.pins.release(item.ino, item.gen);
                    let _ = events.send(failed(&item, last)).await;
                }
                Some(src) => {
                    rest.insert((item.ino, item.gen), srcs);
                    groups.entry(src.host.clone()).or_insert_with(|| (src, Vec::new())).1.push(item);
                }
            }
        }
        let pulls = groups.into_values().map(|(src, list)| {
            let ctx = ctx.clone();
            let stored = stored_tx.clone();
            async move { pull(&ctx, &src, list, &stored).await }
        });
        for Leftover { item, error } in join_all(pulls).await.into_iter().flatten() {
            debug!(ino = item.ino, "copy attempt failed: {error}");
            let srcs = rest.remove(&(item.ino, item.gen)).unwrap_or_default();
            if final_error(&error) {
                ctx.pins.release(item.ino, item.gen);
                let _ = events.send(failed(&item, error)).await;
            } else {
                pending.push((item, srcs, error));
            }
        }
    }
    drop(stored_tx);
    let _ = registrar.await;
}

/// Items whose replica is already on this server's disk and verifies in
/// full are registered without moving anything; the rest are returned.
async fn keep_local_copies(ctx: &Arc<Ctx>, items: Vec<CopyItem>, stored: &mpsc::Sender<Stored>) -> Vec<CopyItem> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let path = ctx.spool.replica_path(item.ino, item.gen);
        if !path.exists() {
            out.push(item);
            continue;
        }
        let expect = (item.size, item.hash);
        let good = tokio::task::spawn_blocking(move || {
            ReplicaFile::open(&path)
                .and_then(|f| f.verify_all().map(|_| (f.size(), f.hash())))
                .is_ok_and(|got| got == expect)
        })
        .await
        .unwrap_or(false);
        if good {
            let _ = stored.send(Stored { item, bytes: 0, from: String::new() }).await;
        } else {
            out.push(item);
        }
    }
    out
}

/// Round-trip time to every source host (dialling it, which the pull will
/// need anyway); unreachable ones are left out.
async fn probe_sources(ctx: &Arc<Ctx>, items: &[CopyItem]) -> HashMap<String, Duration> {
    let mut hosts: BTreeMap<String, ServerLoc> = BTreeMap::new();
    for s in items.iter().flat_map(|i| i.sources.iter()) {
        if s.host != ctx.identity.name {
            hosts.entry(s.host.clone()).or_insert_with(|| s.clone());
        }
    }
    let probes = hosts.into_values().map(|s| async move {
        let peer = PeerAddr { addr: s.addr, name: s.host.clone() };
        match tokio::time::timeout(PROBE, ctx.peers.connect(&peer)).await {
            Ok(Ok(c)) => Some((s.host, c.rtt())),
            _ => None,
        }
    });
    join_all(probes).await.into_iter().flatten().collect()
}

/// Register sealed replicas in batches: while one batch is at the meta
/// server, the next accumulates.
async fn register_all(ctx: Arc<Ctx>, mut rx: mpsc::Receiver<Stored>, events: mpsc::Sender<ReplicateEvent>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < REGISTER_BATCH {
            match rx.try_recv() {
                Ok(s) => batch.push(s),
                Err(_) => break,
            }
        }
        for ev in register_batch(&ctx, &batch).await {
            let _ = events.send(ev).await;
        }
        for s in &batch {
            ctx.pins.release(s.item.ino, s.item.gen);
        }
    }
}

async fn register_batch(ctx: &Arc<Ctx>, batch: &[Stored]) -> Vec<ReplicateEvent> {
    let reqs = batch
        .iter()
        .map(|s| MetaRequest::RegisterReplica { cap: s.item.cap.clone(), size: s.item.size, hash: s.item.hash })
        .collect();
    let replies: Vec<Result<(), RemoteError>> = match ctx.meta.call(MetaRequest::Batch(reqs)).await {
        Ok(MetaResponse::Batch(r)) if r.len() == batch.len() => r.into_iter().map(|x| x.map(|_| ())).collect(),
        Ok(other) => {
            let e = RemoteError::new(ErrorCode::Internal, format!("unexpected meta reply {other:?}"));
            vec![Err(e); batch.len()]
        }
        Err(e) => {
            let e = RemoteError::new(ErrorCode::Unavailable, format!("copy made but not registered: {e}"));
            vec![Err(e); batch.len()]
        }
    };
    batch
        .iter()
        .zip(replies)
        .map(|(s, r)| match r {
            Ok(()) => ReplicateEvent::Copied { ino: s.item.ino, gen: s.item.gen, bytes: s.bytes, from: s.from.clone() },
            Err(e) => {
                // Refused (e.g. the file was rewritten meanwhile): no
                // orphan. If the meta server could not be asked, the copy
                // stays: a re-run registers it without moving it again, and
                // a restart's inventory drops it if it stays unknown.
                if e.code != ErrorCode::Unavailable {
                    let _ = ctx.spool.delete(s.item.ino, s.item.gen);
                }
                failed(&s.item, e)
            }
        })
        .collect()
}
