//! The running meta server: accepts QUIC connections, authenticates peers by
//! certificate, and serves one request per bidirectional stream.

use crate::callbacks::{Callbacks, SessionId};
use crate::config::MetaConfig;
use crate::hosts::Hosts;
use crate::namespace::Namespace;
use crate::service::MetaService;
use crate::store::{Store, StoreError};
use crate::users::Users;
use crate::MetaError;
use fs_proto::endpoint::TlsIdentity;
use fs_proto::error::quic_codes;
use fs_proto::frame::write_msg;
use fs_proto::meta::{MetaCall, MetaRequest, MetaResponse, LISTDIR_PAGE};
use fs_proto::{CapabilitySigner, Identity};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn, Instrument};

/// How long one page of a listing may wait for the peer to take it.
const LISTING_WRITE_BOUND: Duration = Duration::from_secs(30);

/// Batches longer than this are served on a blocking thread, so a long
/// batch (each read grant an ECDSA signature) never occupies an async
/// worker that other peers' requests and heartbeats need.
const BLOCKING_BATCH: usize = 64;

/// An opened meta server, ready to serve.
pub struct MetaNode {
    service: Arc<MetaService>,
    callbacks: Arc<Callbacks>,
    db: Store,
}

impl MetaNode {
    /// Open the database and build the service. `tls` is the meta server's
    /// own identity; its key signs capabilities.
    pub fn open(config: MetaConfig, tls: &TlsIdentity) -> Result<Self, MetaError> {
        std::fs::create_dir_all(&config.db).map_err(|e| MetaError::Io(config.db.clone(), e))?;
        let db = Store::open(&config.store, &config.db).map_err(MetaError::Db)?;
        info!(store = ?db.kind(), db = %config.db.display(), "metadata store open");
        let tree = db.open_tree(crate::keys::TREE_NAMESPACE).map_err(MetaError::Db)?;
        let ns = Namespace::open(tree, config.root_mode).map_err(MetaError::Remote)?;
        ns.voids.set_hold(config.capability_ttl_secs.saturating_mul(1000));
        let hosts = Hosts::open(&db, config.host_timeout_ms).map_err(MetaError::Remote)?;
        let users = Users::open(&db, &config.users, config.auto_register_users)
            .map_err(MetaError::Remote)?
            .with_hosts(&config.admin_hosts, config.file_servers.as_deref())
            .with_vpe_hosts(&config.vpe_hosts);
        let signer = CapabilitySigner::from_pkcs8(tls.key_der()).map_err(MetaError::Remote)?;
        db.flush().map_err(MetaError::Db)?;
        let callbacks = Arc::new(Callbacks::new(Duration::from_millis(config.lease_ms)));
        let service = Arc::new(MetaService::new(ns, hosts, users, signer, config));
        Ok(MetaNode { service, callbacks, db })
    }

    /// The service (for in-process inspection in tests).
    pub fn service(&self) -> Arc<MetaService> {
        self.service.clone()
    }

    /// The lease table (for in-process inspection in tests).
    pub fn callbacks(&self) -> Arc<Callbacks> {
        self.callbacks.clone()
    }

    /// Serve until `shutdown` completes.
    pub async fn serve(self, endpoint: quinn::Endpoint, shutdown: impl Future<Output = ()>) -> Result<(), MetaError> {
        let local = endpoint.local_addr().ok();
        info!(addr = ?local, "meta server serving");
        let background = crate::replication::start(self.service.clone(), &endpoint);
        let monitor = crate::monitor::start(self.service.clone(), &endpoint).await?;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                incoming = endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    let svc = self.service.clone();
                    let db = self.db.clone();
                    tokio::spawn(handle_connection(svc, self.callbacks.clone(), db, incoming));
                }
            }
        }
        info!("meta server shutting down");
        background.stop().await;
        monitor.stop().await;
        endpoint.close(quic_codes::SHUTDOWN, b"meta server shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        flush(&self.db).await.map_err(MetaError::Db)?;
        Ok(())
    }
}

/// What the streams of one connection share: the lease table and the
/// connection's callback session (0 until it subscribes).
#[derive(Clone)]
struct Streams {
    cbs: Arc<Callbacks>,
    session: Arc<AtomicU64>,
}

/// How long after a session held others up its connection must still be
/// alive for its principal to be struck ([`Callbacks::strike`]): longer than
/// the idle bound after which a killed peer's connection closes, so a dead
/// mount never bars its user's other mounts.
const CONFIRM_ALIVE: Duration = Duration::from_secs(15);

async fn handle_connection(svc: Arc<MetaService>, cbs: Arc<Callbacks>, db: Store, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let Some((conn, id)) = fs_proto::serve::accept(incoming).await else { return };
    let streams = Streams { cbs, session: Arc::new(AtomicU64::new(0)) };
    let span = tracing::info_span!("conn", peer = %id, %remote);
    async move {
        debug!("connected");
        loop {
            let (send, recv) = match conn.accept_bi().await {
                Ok(s) => s,
                Err(e) => {
                    debug!("connection ended: {e}");
                    break;
                }
            };
            let task = handle_stream(svc.clone(), streams.clone(), db.clone(), conn.clone(), id.clone(), send, recv);
            tokio::spawn(task.in_current_span());
        }
        // The connection is gone: so is its callback session.
        let session = streams.session.swap(0, Ordering::AcqRel);
        if session != 0 {
            streams.cbs.unsubscribe(session);
        }
    }
    .instrument(span)
    .await
}

async fn handle_stream(
    svc: Arc<MetaService>,
    streams: Streams,
    db: Store,
    conn: quinn::Connection,
    id: Identity,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let Some(call) = fs_proto::serve::read_request::<MetaCall>(&conn, &mut send, &mut recv).await else { return };
    if matches!(call.req, MetaRequest::Subscribe) {
        return serve_subscription(streams, conn, &id, send, recv).await;
    }
    if let MetaRequest::Monitor(fs_proto::monitor::MonitorRequest::Netcheck(req)) = call.req {
        return crate::monitor::netcheck::serve(svc, id, req, send).await;
    }
    let kind = call.req.kind();
    let needs_flush = call.req.is_mutation() && !matches!(call.req, MetaRequest::Heartbeat(_));
    let span = tracing::debug_span!("request", kind);
    let session: SessionId = streams.session.load(Ordering::Acquire);
    if matches!(call.req, MetaRequest::ListDir { .. }) {
        return serve_listing(svc, streams, id, session, call, send).instrument(span).await;
    }
    if let MetaRequest::Lock(r) | MetaRequest::TestLock(r) = &call.req {
        let test = matches!(call.req, MetaRequest::TestLock(_));
        let reply = async {
            svc.authorize(&id, call.cred.as_ref(), &call.req)?;
            svc.locks.serve(&streams.cbs, session, r, test).await
        }
        .instrument(span)
        .await;
        if let Err(e) = write_msg(&mut send, &reply).await {
            debug!(kind, "reply not delivered: {e}");
            return;
        }
        let _ = send.finish();
        return;
    }
    let started = std::time::Instant::now();
    // Directory write leases: other sessions' leases in the way are
    // recalled first; lease requests are served with the session.
    let admitted = svc.dirleases.admit(&svc.ns, &streams.cbs, session, &call.req).await;
    let (reply, pending) = match svc.dirleases.serve(&svc, &streams.cbs, &id, session, &call).await {
        Some(done) => done,
        None if matches!(&call.req, MetaRequest::Batch(r) if r.len() > BLOCKING_BATCH) => {
            let (svc, cbs, id, span) = (svc.clone(), streams.cbs.clone(), id.clone(), span.clone());
            match tokio::task::spawn_blocking(move || span.in_scope(|| cbs.handle(&svc, &id, session, call))).await {
                Ok(done) => done,
                Err(e) => (
                    Err(fs_proto::RemoteError::new(fs_proto::ErrorCode::Internal, format!("batch failed: {e}"))),
                    Default::default(),
                ),
            }
        }
        None => span.in_scope(|| streams.cbs.handle(&svc, &id, session, call)),
    };
    // The change is visible to readers now, whether or not the flush below
    // works: its invalidations are queued for the caching sessions before
    // the change leaves the directory-lease gate, so a lease granted after
    // it finds them queued and waits until its holder applied them (see
    // crate::dirlease); the caller hears it is done once all acknowledged.
    let delivery = streams.cbs.push(pending);
    drop(admitted);
    if let Err(e) = &reply {
        debug!(kind, "request failed: {e}");
    }
    let flushed = if needs_flush { Some(flush(&db).await) } else { None };
    streams.cbs.acknowledged(delivery).await;
    {
        if let Some(Err(e)) = flushed {
            warn!("database flush failed: {e}");
            let _ = write_msg(
                &mut send,
                &fs_proto::meta::MetaReply::Err(fs_proto::RemoteError::new(
                    fs_proto::ErrorCode::Internal,
                    format!("metadata not durable: {e}"),
                )),
            )
            .await;
            let _ = send.finish();
            return;
        }
    }
    if needs_flush {
        // Fault tests: die with the change durable (a bundle commit, a
        // rename, a lease), before the caller hears.
        fs_proto::process::crash_point_of("meta", kind, "flushed");
    }
    let handled = started.elapsed();
    if let Err(e) = write_msg(&mut send, &reply).await {
        debug!(kind, "reply not delivered: {e}");
        return;
    }
    let _ = send.finish();
    debug!(kind, handled_us = handled.as_micros() as u64, replied_us = started.elapsed().as_micros() as u64, "served");
}

/// Serve a `ListDir`: pages built and leased one after another (each like a
/// `ReadDir` page, under the callbacks' ordering), each written as soon as
/// it is built, so the first page is on the wire while the meta server still
/// reads the rest. An error ends the stream with an error frame.
///
/// Each page is built under the directory-lease gate (another client's write
/// lease on the directory is recalled first, so its pending entries land
/// before the page is read), and the gate is let go before the page is
/// written: a peer that stops reading holds up only its own stream, never a
/// `LeaseDir` waiting for the gate's write side and every request queued
/// behind it. A write that cannot finish within [`LISTING_WRITE_BOUND`]
/// ends the stream. Entries created between two pages may or may not be
/// listed, as with any directory read while it changes.
async fn serve_listing(
    svc: Arc<MetaService>,
    streams: Streams,
    id: Identity,
    session: SessionId,
    call: MetaCall,
    mut send: quinn::SendStream,
) {
    let MetaRequest::ListDir { ino, plus } = call.req else { return };
    let started = std::time::Instant::now();
    let (mut after, mut pages, mut entries) = (None, 0u32, 0usize);
    loop {
        let req = MetaRequest::ReadDir { ino, after: after.take(), limit: LISTDIR_PAGE, plus };
        let reply = {
            let _admitted = svc.dirleases.admit(&svc.ns, &streams.cbs, session, &req).await;
            streams.cbs.handle(&svc, &id, session, MetaCall { cred: call.cred.clone(), req }).0
        };
        let next = match &reply {
            Ok(MetaResponse::Entries { entries: page, more }) => {
                entries += page.len();
                page.last().filter(|_| *more).map(|e| e.name.clone())
            }
            Ok(_) => None,
            Err(e) => {
                debug!(ino, "listing failed: {e}");
                None
            }
        };
        match tokio::time::timeout(LISTING_WRITE_BOUND, write_msg(&mut send, &reply)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!(ino, "listing not delivered: {e}");
                return;
            }
            Err(_) => {
                warn!(
                    ino,
                    pages, "listing page not taken by the peer within {LISTING_WRITE_BOUND:?}; ending the stream"
                );
                let _ = send.reset(fs_proto::error::quic_codes::PROTOCOL);
                return;
            }
        }
        pages += 1;
        match next {
            Some(name) => {
                // Fault tests: die in the middle of the stream, a page
                // delivered and more to come.
                fs_proto::process::crash_point("meta.listdir.page");
                after = Some(name)
            }
            None => break,
        }
    }
    let _ = send.finish();
    debug!(ino, pages, entries, replied_us = started.elapsed().as_micros() as u64, "served listing");
}

/// Serve a callback subscription: answer `Subscribed`, then write each batch
/// of invalidations for this connection until it or the session ends.
async fn serve_subscription(
    streams: Streams,
    conn: quinn::Connection,
    id: &Identity,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    use fs_proto::callback::{CallbackAck, CallbackFrame, ALIVE_EVERY_MS};
    let sub = match streams.cbs.subscribe(&id.name, conn.stable_id()) {
        Ok(sub) => sub,
        Err(r) => {
            debug!("{}", r.reason);
            let refused =
                CallbackFrame::Refused { reason: r.reason, retry_after_ms: r.retry_after.as_millis() as u64 + 1 };
            let _ = tokio::time::timeout(Duration::from_secs(5), write_msg(&mut send, &refused)).await;
            let _ = send.finish();
            return;
        }
    };
    let who = id.name.clone();
    let (id, mut rx, acked, mut struck) = (sub.id, sub.rx, sub.acked, sub.struck);
    // The session held others up (its connection is barred already): if
    // the connection is still alive after CONFIRM_ALIVE (not a killed
    // mount), its principal is struck.
    let mut judged = false;
    let mut judge = |conn: &quinn::Connection| {
        if std::mem::replace(&mut judged, true) {
            return;
        }
        let (cbs, conn, who) = (streams.cbs.clone(), conn.clone(), who.clone());
        tokio::spawn(async move {
            if tokio::time::timeout(CONFIRM_ALIVE, conn.closed()).await.is_err() {
                cbs.strike(&who);
            }
        });
    };
    let old = streams.session.swap(id, Ordering::AcqRel);
    if old != 0 {
        streams.cbs.unsubscribe(old);
    }
    debug!(session = id, "callback subscription started");
    let lease_ms = streams.cbs.lease().as_millis() as u64;
    let alive = Duration::from_millis(ALIVE_EVERY_MS);
    // Acknowledgements arrive on the client's side of the stream.
    let acks = async {
        loop {
            match fs_proto::frame::read_msg::<CallbackAck>(&mut recv).await {
                Ok(a) => {
                    acked.send_if_modified(|v| {
                        let newer = a.seq > *v;
                        if newer {
                            *v = a.seq;
                        }
                        newer
                    });
                }
                Err(e) => return e,
            }
        }
    };
    tokio::pin!(acks);
    if write_msg(&mut send, &CallbackFrame::Subscribed { lease_ms }).await.is_ok() {
        loop {
            tokio::select! {
                batch = rx.recv() => {
                    let Some((seq, list)) = batch else { break };
                    if write_msg(&mut send, &CallbackFrame::Invalidate { seq, list }).await.is_err() {
                        break;
                    }
                }
                _ = tokio::time::sleep(alive) => {
                    if write_msg(&mut send, &CallbackFrame::Alive).await.is_err() {
                        break;
                    }
                }
                e = &mut acks => {
                    debug!(session = id, "subscription's acknowledgements ended: {e}");
                    break;
                }
                e = conn.closed() => {
                    // The client closed its connection: it trusts nothing
                    // it cached any more, nobody need wait for it.
                    if matches!(e, quinn::ConnectionError::ApplicationClosed(_) | quinn::ConnectionError::ConnectionClosed(_)) {
                        acked.send_replace(crate::callbacks::PEER_GONE);
                    }
                    break;
                }
                _ = send.stopped() => break,
                r = struck.changed() => {
                    if r.is_ok() && *struck.borrow() {
                        judge(&conn);
                    }
                }
            }
        }
    }
    if *struck.borrow() {
        judge(&conn);
    }
    streams.cbs.unsubscribe(id);
    let _ = streams.session.compare_exchange(id, 0, Ordering::AcqRel, Ordering::Acquire);
    let _ = send.finish();
    debug!(session = id, "callback subscription ended");
}

/// Make everything written so far durable. Not sled's `flush_async`: that
/// runs on sled's own I/O pool, and under many concurrent mutations its
/// flushes could occupy every pool thread while the log write they wait for
/// queued behind them (the meta server stopped answering). A blocking tokio
/// thread leaves sled's pool free for that write.
async fn flush(db: &Store) -> Result<(), StoreError> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || db.flush())
        .await
        .unwrap_or_else(|e| Err(StoreError::Failed(format!("flush task failed: {e}"))))
}
