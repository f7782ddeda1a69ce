//! The running file server: joins the federation (reaches the meta server,
//! reconciles its spool), heartbeats, and serves data requests, one per
//! QUIC bidirectional stream.

use crate::config::ServerConfig;
use crate::metalink::MetaLink;
use crate::spool::{load_average, Spool};
use crate::streams::{within, IDLE_RESET};
use crate::{data, ServerError};
use fs_proto::error::quic_codes;
use fs_proto::meta::{HeartbeatReport, MetaRequest, MetaResponse};
use fs_proto::rpc::Dialer;
use fs_proto::server::{ServerReply, ServerRequest, ServerResponse};
use fs_proto::{Gen, Identity, Ino};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, info, warn, Instrument};

/// Bound on one call to the meta server.
const META_TIMEOUT: Duration = Duration::from_secs(20);

/// State shared by every request of a server.
pub struct Ctx {
    /// The spool.
    pub spool: Spool,
    /// The meta server.
    pub meta: MetaLink,
    /// Connections to other file servers.
    pub peers: Dialer,
    /// Connections for replication pulls, several per source.
    pub lanes: crate::pull::Lanes,
    /// Who this server is.
    pub identity: Identity,
    /// Bytes received.
    pub bytes_in: AtomicU64,
    /// Bytes sent.
    pub bytes_out: AtomicU64,
    /// Replicas being copied in or just copied: not to be deleted now.
    pub pins: crate::pins::Pins,
    /// The latest round of service checks.
    pub checks: crate::checks::CheckState,
    /// Disk space reserved for bundles, per client connection.
    pub reservations: crate::bundle::Reservations,
    /// Idle bounds and per-connection and per-user stream limits.
    pub streams: crate::streams::Admission,
    /// User capabilities changes of mode or owner voided.
    pub voids: crate::voids::VoidList,
    deleted: Mutex<Vec<(Ino, Gen)>>,
    /// The namespace of the spool's replicas (None: not stamped yet), and
    /// the meta server's when it differs (then nothing is deleted).
    namespace: Mutex<(Option<u128>, Option<u128>)>,
    pub(crate) config: ServerConfig,
    pub(crate) advertise: SocketAddr,
}

/// Serve until `shutdown` completes: the whole file server.
pub async fn serve(
    config: ServerConfig,
    identity: Identity,
    endpoint: quinn::Endpoint,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let ctx = prepare(config, identity, &endpoint)?;
    run(ctx, endpoint, shutdown).await
}

/// A file server's shared state, its spool opened, not serving yet: [`run`]
/// serves it. An in-process test keeps the handle to wait on what the
/// server learns (e.g. [`crate::voids::VoidList::wait_until`]).
pub fn prepare(config: ServerConfig, identity: Identity, endpoint: &quinn::Endpoint) -> Result<Arc<Ctx>, ServerError> {
    let spool = Spool::open(&config.spool).map_err(|e| ServerError::Io(config.spool.clone(), e))?;
    let stamp = spool.namespace().map_err(|e| ServerError::Io(config.spool.clone(), e))?;
    let local = endpoint.local_addr().map_err(|e| ServerError::Io("endpoint".into(), e))?;
    let advertise = match config.advertise {
        Some(a) => a,
        None if !local.ip().is_unspecified() => local,
        None => {
            return Err(ServerError::Config(format!(
                "listening on {local}: set `advertise` to the address clients should dial"
            )))
        }
    };
    let dialer = Dialer::new(endpoint.clone(), Duration::from_secs(10));
    let ctx = Arc::new(Ctx {
        spool,
        meta: MetaLink::new(dialer.clone(), &config.meta, META_TIMEOUT),
        lanes: crate::pull::Lanes::new(endpoint),
        peers: dialer,
        identity,
        bytes_in: AtomicU64::new(0),
        bytes_out: AtomicU64::new(0),
        pins: crate::pins::Pins::default(),
        checks: crate::checks::CheckState::default(),
        reservations: Default::default(),
        streams: crate::streams::Admission::new(config.streams.clone()),
        voids: Default::default(),
        deleted: Mutex::new(Vec::new()),
        namespace: Mutex::new((stamp, None)),
        advertise,
        config,
    });
    Ok(ctx)
}

/// Serve `ctx` (from [`prepare`]) on `endpoint` until `shutdown` completes.
pub async fn run(
    ctx: Arc<Ctx>,
    endpoint: quinn::Endpoint,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let span =
        tracing::info_span!("server", host = %ctx.identity.name, site = ctx.identity.site.as_deref().unwrap_or(""));
    async move {
        tokio::pin!(shutdown);
        // Join: reach the meta server and reconcile the spool before serving,
        // so no unregistered replica is ever handed out or kept.
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = join(&ctx) => r?,
        }
        info!(addr = %ctx.advertise, "file server serving");
        let hb = tokio::spawn(heartbeat_loop(ctx.clone()).in_current_span());
        let every = Duration::from_millis(ctx.config.check_interval_ms);
        let checks = tokio::spawn(crate::checks::run(ctx.clone(), every).in_current_span());
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                incoming = endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    tokio::spawn(handle_connection(ctx.clone(), incoming).in_current_span());
                }
            }
        }
        hb.abort();
        checks.abort();
        info!("file server shutting down");
        endpoint.close(quic_codes::SHUTDOWN, b"file server shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        Ok(())
    }
    .instrument(span)
    .await
}

async fn join(ctx: &Arc<Ctx>) -> Result<(), ServerError> {
    let mut delay = Duration::from_millis(100);
    loop {
        match heartbeat(ctx).await {
            Ok(()) => break,
            Err(e) => {
                warn!("meta server {} not reachable yet: {e}", ctx.meta.peer());
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    // A meta server of another namespace (another federation's, or one
    // whose database was rebuilt) knows none of the spool's replicas: never
    // delete them as unknown unless told to.
    let foreign = ctx.namespace.lock().unwrap_or_else(|p| p.into_inner()).1;
    if let Some(theirs) = foreign {
        let ours = ctx.namespace.lock().unwrap_or_else(|p| p.into_inner()).0.unwrap_or_default();
        if !ctx.config.forget_spool {
            return Err(ServerError::Config(format!(
                "the spool {} holds replicas of namespace {ours:032x}, but the meta server {} serves namespace {theirs:032x} \
                 (another federation's, or a rebuilt database): refusing to join, which would delete them. Point the server \
                 at its own meta server, or start it with --forget-spool to delete them and join",
                ctx.spool.root().display(),
                ctx.meta.peer()
            )));
        }
        warn!(ours = %format!("{ours:032x}"), theirs = %format!("{theirs:032x}"), "joining another namespace: the spool's replicas unknown there are deleted (--forget-spool)");
    }
    let spool_list = {
        let c = ctx.clone();
        tokio::task::spawn_blocking(move || c.spool.list()).await.map_err(|e| ServerError::Config(e.to_string()))?
    }
    .map_err(|e| ServerError::Io(ctx.spool.root().to_path_buf(), e))?;
    let pages: Vec<_> = spool_list.chunks(10_000).map(|c| c.to_vec()).collect();
    let total = pages.len().max(1);
    let mut removed = 0;
    for i in 0..total {
        let page = pages.get(i).cloned().unwrap_or_default();
        let req = MetaRequest::Inventory { replicas: page, done: i + 1 == total };
        match ctx.meta.call(req).await {
            Ok(MetaResponse::Unknown(unknown)) => {
                for (ino, gen) in unknown {
                    if ctx.spool.delete(ino, gen).unwrap_or(false) {
                        removed += 1;
                    }
                }
            }
            Ok(other) => warn!("unexpected inventory reply {other:?}"),
            Err(e) => {
                warn!("inventory failed, keeping the spool as is: {e}");
                break;
            }
        }
    }
    info!(replicas = spool_list.len(), removed, "spool reconciled with the meta server");
    if let Some(theirs) = foreign {
        ctx.spool.set_namespace(theirs).map_err(|e| ServerError::Io(ctx.spool.root().to_path_buf(), e))?;
        *ctx.namespace.lock().unwrap_or_else(|p| p.into_inner()) = (Some(theirs), None);
    }
    Ok(())
}

async fn heartbeat(ctx: &Arc<Ctx>) -> Result<(), fs_proto::rpc::CallError> {
    let (mut capacity, free) = ctx.spool.usage().unwrap_or((0, 0));
    if let Some(c) = ctx.config.capacity {
        capacity = capacity.min(c);
    }
    let mut problems: Vec<String> = ctx.spool.probe_writable().into_iter().collect();
    problems.extend(ctx.checks.problems());
    let deleted = std::mem::take(&mut *ctx.deleted.lock().unwrap_or_else(|p| p.into_inner()));
    let report = HeartbeatReport {
        addr: ctx.advertise,
        capacity,
        free: free.min(capacity),
        load: load_average(),
        deleted: deleted.clone(),
        problems,
        bytes_in: ctx.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
        bytes_out: ctx.bytes_out.load(std::sync::atomic::Ordering::Relaxed),
        voids_seen: ctx.voids.seen(),
    };
    let (report_in, report_out) = (report.bytes_in, report.bytes_out);
    match ctx.meta.call(MetaRequest::Heartbeat(report)).await {
        Ok(MetaResponse::HeartbeatAck { delete, namespace_id, voids, .. }) => {
            // Tests of real processes wait on this line (RUST_LOG
            // `renkei::heartbeat=debug`): the meta server has recorded the
            // report by now.
            debug!(target: "renkei::heartbeat", bytes_in = report_in, bytes_out = report_out, "heartbeat answered");
            // (Whatever namespace: voiding only refuses more.)
            ctx.voids.apply(voids);
            if !same_namespace(ctx, namespace_id) {
                // Nothing it says to delete is about these replicas.
                ctx.deleted.lock().unwrap_or_else(|p| p.into_inner()).extend(deleted);
                return Ok(());
            }
            let mut done = Vec::new();
            for (ino, gen) in delete {
                if ctx.pins.is_pinned(ino, gen) {
                    // Copied here again since it became garbage: keep it.
                    continue;
                }
                match ctx.spool.delete(ino, gen) {
                    Ok(_) => done.push((ino, gen)),
                    Err(e) => warn!(ino, gen, "cannot delete replica: {e}"),
                }
            }
            if !done.is_empty() {
                debug!(n = done.len(), "deleted replicas of old generations");
            }
            ctx.deleted.lock().unwrap_or_else(|p| p.into_inner()).extend(done);
            Ok(())
        }
        Ok(other) => {
            warn!("unexpected heartbeat reply {other:?}");
            Ok(())
        }
        Err(e) => {
            // Not acknowledged: report them again next time.
            ctx.deleted.lock().unwrap_or_else(|p| p.into_inner()).extend(deleted);
            Err(e)
        }
    }
}

/// Whether the meta server serves the namespace of the spool's replicas;
/// an unstamped spool takes the meta server's. A mismatch is remembered
/// (for [`join`]) and logged.
fn same_namespace(ctx: &Ctx, theirs: u128) -> bool {
    let mut ns = ctx.namespace.lock().unwrap_or_else(|p| p.into_inner());
    match ns.0 {
        Some(ours) if ours == theirs => true,
        Some(ours) => {
            if ns.1 != Some(theirs) {
                tracing::error!(
                    ours = %format!("{ours:032x}"),
                    theirs = %format!("{theirs:032x}"),
                    "the meta server serves another namespace than this spool's: deleting nothing it asks"
                );
            }
            ns.1 = Some(theirs);
            false
        }
        None => match ctx.spool.set_namespace(theirs) {
            Ok(()) => {
                info!(namespace = %format!("{theirs:032x}"), "spool stamped with the meta server's namespace");
                ns.0 = Some(theirs);
                true
            }
            Err(e) => {
                warn!("cannot stamp the spool with its namespace: {e}");
                false
            }
        },
    }
}

async fn heartbeat_loop(ctx: Arc<Ctx>) {
    let every = Duration::from_millis(ctx.config.heartbeat_ms.max(50));
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = heartbeat(&ctx).await {
            warn!("heartbeat failed: {e}");
        }
    }
}

async fn handle_connection(ctx: Arc<Ctx>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let Some((conn, peer)) = fs_proto::serve::accept(incoming).await else { return };
    let span = tracing::debug_span!("conn", peer = %peer, %remote);
    async move {
        // At most `per_connection` streams of this connection are served at
        // once: the next is accepted only when one ends, so the peer's
        // further streams wait on its side, costing this server nothing.
        let slots = ctx.streams.connection_slots();
        loop {
            let slot = tokio::select! {
                s = slots.clone().acquire_owned() => match s {
                    Ok(s) => s,
                    Err(_) => break,
                },
                e = conn.closed() => {
                    debug!("connection ended: {e}");
                    break;
                }
            };
            let (send, recv) = match conn.accept_bi().await {
                Ok(s) => s,
                Err(e) => {
                    debug!("connection ended: {e}");
                    break;
                }
            };
            let (ctx, conn, peer) = (ctx.clone(), conn.clone(), peer.clone());
            tokio::spawn(
                async move {
                    handle_stream(ctx, conn, peer, send, recv).await;
                    drop(slot);
                }
                .in_current_span(),
            );
        }
    }
    .instrument(span)
    .await
}

async fn handle_stream(
    ctx: Arc<Ctx>,
    conn: quinn::Connection,
    peer: Identity,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let idle = ctx.streams.idle();
    // At most `per_user` streams of one identity are served at once, over
    // all its connections; the slot is taken before the request is read, so
    // a waiting stream holds no more than QUIC's own buffers.
    let _slot = match ctx.streams.admit(&peer).await {
        Ok(s) => s,
        Err(e) => {
            debug!(%peer, "refusing a stream: {e}");
            let _ = recv.stop(quic_codes::OK);
            return data::answer(&mut send, &ServerReply::Err(e), idle).await;
        }
    };
    let req = match within(idle, fs_proto::serve::read_request::<ServerRequest>(&conn, &mut send, &mut recv)).await {
        Some(Some(r)) => r,
        Some(None) => return,
        None => {
            debug!("request frame not received within {idle:?}; resetting the stream");
            let _ = send.reset(IDLE_RESET);
            let _ = recv.stop(IDLE_RESET);
            return;
        }
    };
    match req {
        ServerRequest::Read { cap, offset, len } => {
            let span = tracing::debug_span!("read", offset, len);
            data::read(ctx, &peer, cap, offset, len, send).instrument(span).await
        }
        ServerRequest::Write { cap, base } => {
            let span = tracing::debug_span!("write");
            data::write(ctx, &peer, cap, base, send, recv).instrument(span).await
        }
        ServerRequest::Replicate { items } => {
            let span = tracing::info_span!("replicate", files = items.len());
            crate::replicate::replicate(ctx, &peer, items, send).instrument(span).await
        }
        ServerRequest::ReadMany { caps } => {
            let span = tracing::debug_span!("read_many", files = caps.len());
            crate::read_many::read_many(ctx, &peer, caps, send).instrument(span).await
        }
        ServerRequest::Verify { caps } => {
            let span = tracing::debug_span!("verify", files = caps.len());
            crate::verify::verify(ctx, &peer, caps, send).instrument(span).await
        }
        ServerRequest::Probe(p) => {
            let span = tracing::debug_span!("probe");
            crate::probe::serve(ctx, &peer, p, send).instrument(span).await
        }
        ServerRequest::WriteBundle { cap, ops } => {
            let span = tracing::debug_span!("write_bundle", ops = ops.len());
            crate::bundle::write_bundle(ctx, conn, &peer, cap, ops, send, recv).instrument(span).await
        }
        ServerRequest::Reserve { cap, bytes } => {
            let span = tracing::debug_span!("reserve", bytes);
            crate::bundle::reserve(ctx, conn, &peer, cap, bytes, send).instrument(span).await
        }
        ServerRequest::Ping => {
            let pong = ServerResponse::Pong {
                host: ctx.identity.name.clone(),
                site: ctx.identity.site.clone().unwrap_or_default(),
            };
            data::answer(&mut send, &ServerReply::Ok(pong), idle).await;
        }
    }
}
