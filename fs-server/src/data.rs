//! The data service: verified streamed reads, and write sessions that end
//! with a durable, hashed replica registered at the meta server.
//!
//! Disk work runs on blocking threads fed through bounded channels, so one
//! slow disk operation never stalls other requests, and memory per stream
//! stays bounded.

use crate::node::Ctx;
use crate::replica::{ReplicaError, ReplicaFile, ReplicaWriter};
use crate::streams::{idle_error, within, IDLE_RESET};
use bytes::Bytes;
use fs_proto::error::quic_codes;
use fs_proto::frame::{read_msg, write_msg};
use fs_proto::meta::{BaseGrant, MetaRequest, MetaResponse};
use fs_proto::rpc::{reply, request, CallError, PeerAddr};
use fs_proto::server::{ServerReply, ServerRequest, ServerResponse, WriteFrame};
use fs_proto::{Access, Capability, ErrorCode, Gen, Hash, Identity, Ino, RemoteError, SignedCapability, Timestamp};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

type R<T> = Result<T, RemoteError>;

/// Size of the pieces a read streams.
pub(crate) const READ_PIECE: u64 = 1 << 20;
/// Bytes gathered before handing them to the disk thread.
const WRITE_BATCH: usize = 1 << 20;

/// The wire error for a spool failure. Spool paths stay in the server's own
/// log: a client learns what failed, never where the server keeps files.
pub(crate) fn io_to_remote(e: &ReplicaError) -> RemoteError {
    tracing::debug!("spool: {e}");
    match e {
        ReplicaError::Corrupt { what, .. } => RemoteError::new(ErrorCode::Corrupt, format!("corrupt replica: {what}")),
        ReplicaError::Exists { .. } => {
            RemoteError::new(ErrorCode::Exists, "a replica of this generation is already stored on this server")
        }
        ReplicaError::Io { source, .. } => match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => {
                RemoteError::new(ErrorCode::NoSpace, format!("file server spool: {source}"))
            }
            _ if source.kind() == std::io::ErrorKind::NotFound => {
                RemoteError::new(ErrorCode::NotFound, "replica not found on this server")
            }
            _ => RemoteError::new(ErrorCode::Internal, format!("file server spool I/O: {source}")),
        },
    }
}

pub(crate) fn verify_cap(ctx: &Ctx, peer: &Identity, cap: &SignedCapability, access: Access) -> R<Capability> {
    let v = ctx
        .meta
        .verifier()
        .ok_or_else(|| RemoteError::new(ErrorCode::Unavailable, "server has not reached the meta server yet"))?;
    let cap = v.verify(cap, &fs_proto::Principal::of(peer), Timestamp::now().as_millis())?;
    if cap.access != access {
        return Err(RemoteError::new(
            ErrorCode::BadCapability,
            format!("capability grants {:?}, not {access:?}", cap.access),
        ));
    }
    ctx.voids.check(&cap)?;
    Ok(cap)
}

/// Tell the meta server a replica is bad (in the background).
pub fn report_bad(ctx: &Arc<Ctx>, ino: Ino, gen: Gen, reason: String) {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        if let Err(e) = ctx.meta.call(MetaRequest::ReportBadReplica { ino, gen, reason }).await {
            warn!(ino, gen, "could not report bad replica: {e}");
        }
    });
}

/// Serve a read request.
pub async fn read(
    ctx: Arc<Ctx>,
    peer: &Identity,
    cap: SignedCapability,
    offset: u64,
    len: u64,
    mut send: quinn::SendStream,
) {
    let cap = match verify_cap(&ctx, peer, &cap, Access::Read) {
        Ok(c) => c,
        Err(e) => return refuse(&mut send, e, ctx.streams.idle()).await,
    };
    let path = ctx.spool.replica_path(cap.ino, cap.gen);
    let opened = tokio::task::spawn_blocking(move || ReplicaFile::open(&path)).await;
    let file = match opened {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => {
            if matches!(e, ReplicaError::Corrupt { .. }) {
                report_bad(&ctx, cap.ino, cap.gen, e.to_string());
            }
            return refuse(&mut send, io_to_remote(&e), ctx.streams.idle()).await;
        }
        Err(e) => {
            return refuse(&mut send, RemoteError::new(ErrorCode::Internal, e.to_string()), ctx.streams.idle()).await
        }
    };
    if let Some((size, hash)) = cap.expect {
        if file.size() != size || file.hash() != hash {
            let why =
                format!("replica holds {} bytes with another hash than the {} bytes registered", file.size(), size);
            report_bad(&ctx, cap.ino, cap.gen, why.clone());
            return refuse(&mut send, RemoteError::new(ErrorCode::Corrupt, why), ctx.streams.idle()).await;
        }
    }
    let size = file.size();
    let end = offset.saturating_add(len).min(size);
    let n = end.saturating_sub(offset);
    let idle = ctx.streams.idle();
    let head = ServerReply::Ok(ServerResponse::Reading { len: n, size });
    if !matches!(within(idle, write_msg(&mut send, &head)).await, Some(Ok(()))) {
        let _ = send.reset(IDLE_RESET);
        return;
    }
    // Pieces are read and verified on the blocking pool a few ahead of the
    // network; a reader that takes nothing holds no blocking thread, and is
    // given up after the idle bound.
    let mut pieces = Pieces::new(Arc::new(file), offset, end);
    while let Some(piece) = pieces.next().await {
        match piece {
            Ok(b) => {
                let l = b.len() as u64;
                match within(idle, send.write_chunk(b)).await {
                    Some(Ok(())) => {}
                    Some(Err(_)) => return,
                    None => {
                        debug!(ino = cap.ino, "the reader took nothing for {idle:?}; resetting the stream");
                        let _ = send.reset(IDLE_RESET);
                        return;
                    }
                }
                ctx.bytes_out.fetch_add(l, Ordering::Relaxed);
            }
            Err(e) => {
                warn!(ino = cap.ino, gen = cap.gen, "refusing to send corrupt data: {e}");
                let code = if matches!(e, ReplicaError::Corrupt { .. }) { quic_codes::CORRUPT } else { quic_codes::IO };
                if code == quic_codes::CORRUPT {
                    report_bad(&ctx, cap.ino, cap.gen, e.to_string());
                }
                let _ = send.reset(code);
                return;
            }
        }
    }
    let _ = send.finish();
}

/// Pieces read ahead of the network.
const READ_AHEAD: usize = 4;

/// The verified pieces of `[from, end)` of a replica, each read by its own
/// short task on the blocking pool, [`READ_AHEAD`] at most in flight.
pub(crate) struct Pieces {
    file: Arc<ReplicaFile>,
    next: u64,
    end: u64,
    ahead: VecDeque<tokio::task::JoinHandle<Result<Bytes, ReplicaError>>>,
}

impl Pieces {
    pub(crate) fn new(file: Arc<ReplicaFile>, from: u64, end: u64) -> Self {
        Pieces { file, next: from, end, ahead: VecDeque::new() }
    }

    /// The next piece, None after the last.
    pub(crate) async fn next(&mut self) -> Option<Result<Bytes, ReplicaError>> {
        while self.ahead.len() < READ_AHEAD && self.next < self.end {
            let (off, want) = (self.next, READ_PIECE.min(self.end - self.next));
            let file = self.file.clone();
            self.ahead.push_back(tokio::task::spawn_blocking(move || {
                let mut buf = Vec::with_capacity(want as usize);
                file.read_verified(off, want, &mut buf).map(|_| Bytes::from(buf))
            }));
            self.next += want;
        }
        let h = self.ahead.pop_front()?;
        Some(h.await.unwrap_or_else(|e| Err(join_failed(e))))
    }
}

fn join_failed(e: tokio::task::JoinError) -> ReplicaError {
    ReplicaError::Io { path: std::path::PathBuf::new(), source: std::io::Error::other(e.to_string()) }
}

async fn refuse(send: &mut quinn::SendStream, e: RemoteError, idle: std::time::Duration) {
    debug!("refused: {e}");
    answer(send, &ServerReply::Err(e), idle).await;
}

enum DiskOp {
    Write(u64, Vec<Bytes>),
    SetLen(u64),
    Finish(std::path::PathBuf, oneshot::Sender<Result<(u64, Hash), ReplicaError>>),
}

/// Run `f` with `state` on the blocking pool and hand the state back (None
/// if `f` panicked). A session keeps its disk state between such steps, so
/// while it waits for its peer it holds no blocking thread.
pub(crate) async fn on_disk<S: Send + 'static, T: Send + 'static>(
    mut state: S,
    f: impl FnOnce(&mut S) -> T + Send + 'static,
) -> Option<(S, T)> {
    tokio::task::spawn_blocking(move || {
        let r = f(&mut state);
        (state, r)
    })
    .await
    .ok()
}

/// The disk side of one write session: a task taking its operations in
/// order, each run as one step on the blocking pool.
struct DiskWorker {
    tx: mpsc::Sender<DiskOp>,
    error: Arc<std::sync::Mutex<Option<ReplicaError>>>,
}

impl DiskWorker {
    fn start(writer: ReplicaWriter, base: Option<ReplicaFile>) -> Self {
        let (tx, mut rx) = mpsc::channel::<DiskOp>(8);
        let error = Arc::new(std::sync::Mutex::new(None));
        let err_slot = error.clone();
        tokio::spawn(async move {
            let fail = |e: ReplicaError, w: ReplicaWriter| {
                *err_slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                tokio::task::spawn_blocking(move || w.abort());
            };
            let mut w = writer;
            if let Some(base) = base {
                match on_disk(w, move |w| base.copy_data_to(w)).await {
                    Some((w, Err(e))) => return fail(e, w),
                    Some((back, Ok(()))) => w = back,
                    None => return,
                }
            }
            while let Some(op) = rx.recv().await {
                let step = match op {
                    // Network packets are small; one write (and one hash
                    // update) per batch keeps BLAKE3 on its wide SIMD path.
                    DiskOp::Write(off, pieces) => {
                        on_disk(w, move |w| {
                            if pieces.len() == 1 {
                                w.write_at(off, &pieces[0])
                            } else {
                                w.write_at(off, &pieces.concat())
                            }
                        })
                        .await
                    }
                    DiskOp::SetLen(n) => on_disk(w, move |w| w.set_len(n)).await,
                    DiskOp::Finish(dst, done) => {
                        let _ = done.send(
                            tokio::task::spawn_blocking(move || w.finish(&dst))
                                .await
                                .unwrap_or_else(|e| Err(join_failed(e))),
                        );
                        return;
                    }
                };
                match step {
                    Some((back, Ok(()))) => w = back,
                    Some((back, Err(e))) => return fail(e, back),
                    None => return,
                }
            }
            // The session ended without Finish: drop the partial file.
            tokio::task::spawn_blocking(move || w.abort());
        });
        DiskWorker { tx, error }
    }

    fn take_error(&self) -> RemoteError {
        match self.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => io_to_remote(&e),
            None => RemoteError::new(ErrorCode::Internal, "disk worker stopped"),
        }
    }

    async fn send(&self, op: DiskOp) -> R<()> {
        self.tx.send(op).await.map_err(|_| self.take_error())
    }
}

/// Serve a write session.
pub async fn write(
    ctx: Arc<Ctx>,
    peer: &Identity,
    cap: SignedCapability,
    base: Option<BaseGrant>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let idle = ctx.streams.idle();
    let reply = match write_session(&ctx, peer, &cap, base, &mut recv).await {
        Ok(resp) => ServerReply::Ok(resp),
        Err(e) => {
            debug!("write session refused: {e}");
            let _ = recv.stop(quic_codes::IO);
            ServerReply::Err(e)
        }
    };
    answer(&mut send, &reply, idle).await;
}

/// Send the one reply of a stream and finish it; reset it if the peer does
/// not take the reply within the idle bound.
pub(crate) async fn answer(send: &mut quinn::SendStream, reply: &ServerReply, idle: std::time::Duration) {
    match within(idle, write_msg(send, reply)).await {
        Some(_) => {
            let _ = send.finish();
        }
        None => {
            let _ = send.reset(IDLE_RESET);
        }
    }
}

async fn write_session(
    ctx: &Arc<Ctx>,
    peer: &Identity,
    signed: &SignedCapability,
    base: Option<BaseGrant>,
    recv: &mut quinn::RecvStream,
) -> R<ServerResponse> {
    let cap = verify_cap(ctx, peer, signed, Access::Write)?;
    // A writer may ignore the base (replacing the whole contents), but may
    // not name a base other than the one the meta server granted.
    if let Some(b) = &base {
        if Some(b.gen) != cap.base_gen {
            return Err(RemoteError::new(ErrorCode::BadCapability, "base generation differs from the capability's"));
        }
    }
    let writer = {
        let tmp = ctx.spool.tmp_path(cap.ino, cap.gen);
        tokio::task::spawn_blocking(move || ReplicaWriter::create(tmp))
            .await
            .map_err(|e| RemoteError::new(ErrorCode::Internal, e.to_string()))?
            .map_err(|e| io_to_remote(&e))?
    };
    // A base held locally is copied on the disk thread; one held elsewhere
    // is fetched from a peer before the client's frames are applied.
    let (local_base, remote_base) = match base {
        None => (None, None),
        Some(b) => {
            let path = ctx.spool.replica_path(cap.ino, b.gen);
            match tokio::task::spawn_blocking(move || ReplicaFile::open(&path)).await {
                Ok(Ok(f)) => (Some(f), None),
                _ => (None, Some(b)),
            }
        }
    };
    let disk = DiskWorker::start(writer, local_base);
    if let Some(b) = remote_base {
        fetch_base(ctx, cap.ino, &b, &disk).await?;
    }
    // Every wait for the writer is bounded: a session silent for the idle
    // bound ends, and its temporary file goes with the disk worker.
    let idle = ctx.streams.idle();
    // No file larger than the file system that stores it: a sparse length
    // of many TiB would cost a hash of every byte at the finish.
    let most = ctx.spool.usage().map(|(capacity, _)| capacity).unwrap_or(u64::MAX);
    // Nor larger than the owner's quota leaves room for (signed into the
    // capability by the meta server).
    let room = cap.room;
    let too_large = |end: u64| {
        if end > most {
            return Some(RemoteError::new(
                ErrorCode::TooLarge,
                format!("a file of {end} bytes would be larger than this server's spool ({most} bytes)"),
            ));
        }
        room.filter(|r| end > *r).map(|r| {
            RemoteError::new(
                ErrorCode::QuotaExceeded,
                format!("a file of {end} bytes: the owner's quota leaves room for {r} bytes (see `renkei quota`)"),
            )
        })
    };
    loop {
        let frame: WriteFrame = match within(idle, read_msg(recv)).await {
            None => return Err(idle_error("write session", idle)),
            Some(Ok(f)) => f,
            Some(Err(fs_proto::ProtoError::Eof)) => {
                return Err(RemoteError::new(ErrorCode::Interrupted, "write session ended without commit"));
            }
            Some(Err(e)) => return Err(RemoteError::new(ErrorCode::Interrupted, format!("write session broken: {e}"))),
        };
        match frame {
            WriteFrame::Data { offset, len } => {
                if let Some(e) = too_large(offset.saturating_add(len)) {
                    return Err(e);
                }
                let mut left = len;
                let mut off = offset;
                while left > 0 {
                    let mut pieces = Vec::new();
                    let mut got = 0usize;
                    while left > 0 && got < WRITE_BATCH {
                        let chunk = within(idle, recv.read_chunk(left.min(usize::MAX as u64) as usize, true))
                            .await
                            .ok_or_else(|| idle_error("write session data", idle))?
                            .map_err(|e| RemoteError::new(ErrorCode::Interrupted, format!("data stream broken: {e}")))?
                            .ok_or_else(|| RemoteError::new(ErrorCode::Interrupted, "data ended early"))?;
                        let n = chunk.bytes.len();
                        got += n;
                        left -= n as u64;
                        pieces.push(chunk.bytes);
                    }
                    ctx.bytes_in.fetch_add(got as u64, Ordering::Relaxed);
                    disk.send(DiskOp::Write(off, pieces)).await?;
                    off += got as u64;
                }
            }
            WriteFrame::SetLen { size } => {
                if let Some(e) = too_large(size) {
                    return Err(e);
                }
                disk.send(DiskOp::SetLen(size)).await?
            }
            WriteFrame::Commit => break,
        }
    }
    let dst = ctx.spool.replica_path(cap.ino, cap.gen);
    let (done_tx, done_rx) = oneshot::channel();
    disk.send(DiskOp::Finish(dst, done_tx)).await?;
    let (size, hash) = done_rx.await.map_err(|_| disk.take_error())?.map_err(|e| io_to_remote(&e))?;
    register(ctx, signed, &cap, size, hash).await?;
    Ok(ServerResponse::Stored { gen: cap.gen, size, hash })
}

/// Register a finished replica. Only when the meta server said no is it
/// deleted (no orphan stays); when the answer was lost it may have been
/// registered, so it stays (the spool's next reconciliation with the meta
/// server removes it if it was not).
pub async fn register(ctx: &Arc<Ctx>, signed: &SignedCapability, cap: &Capability, size: u64, hash: Hash) -> R<()> {
    let res = ctx.meta.call(MetaRequest::RegisterReplica { cap: signed.clone(), size, hash }).await;
    match res {
        Ok(MetaResponse::Attr(_)) => Ok(()),
        Err(CallError::Remote(e)) => {
            let _ = ctx.spool.delete(cap.ino, cap.gen);
            Err(e)
        }
        Err(e) => Err(RemoteError::new(ErrorCode::Unavailable, format!("replica stored, registration unknown: {e}"))),
        Ok(r) => Err(RemoteError::new(ErrorCode::Internal, format!("unexpected meta reply {r:?}"))),
    }
}

/// Copy a base generation from a peer holding it.
async fn fetch_base(ctx: &Arc<Ctx>, ino: Ino, base: &BaseGrant, disk: &DiskWorker) -> R<()> {
    let mut last = RemoteError::new(ErrorCode::NoServer, format!("no live replica of inode {ino} to start from"));
    for loc in &base.replicas {
        if loc.host == ctx.identity.name {
            continue;
        }
        let peer = PeerAddr { addr: loc.addr, name: loc.host.clone() };
        match fetch_from(ctx, &peer, base, disk).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                warn!(ino, from = %peer, "fetching the base generation failed: {e}");
                last = e;
            }
        }
    }
    Err(last)
}

async fn fetch_from(ctx: &Arc<Ctx>, peer: &PeerAddr, base: &BaseGrant, disk: &DiskWorker) -> R<()> {
    let remote = |e: String| RemoteError::new(ErrorCode::Unavailable, e);
    let conn = ctx.peers.connect(peer).await.map_err(|e| remote(e.to_string()))?;
    let (mut send, mut recv) = request(&conn, &ServerRequest::Read { cap: base.cap.clone(), offset: 0, len: u64::MAX })
        .await
        .map_err(|e| remote(e.to_string()))?;
    let _ = send.finish();
    // A peer that stalls is as bounded as a client that does.
    let idle = ctx.streams.idle();
    let head =
        within(idle, reply::<ServerResponse>(&mut recv)).await.ok_or_else(|| idle_error("base transfer", idle))?;
    let len = match head.map_err(|e| remote(e.to_string()))? {
        Ok(ServerResponse::Reading { len, .. }) => len,
        Ok(other) => return Err(RemoteError::new(ErrorCode::Internal, format!("unexpected reply {other:?}"))),
        Err(e) => return Err(e),
    };
    let mut off = 0u64;
    let mut hasher = blake3::Hasher::new();
    while off < len {
        let chunk = within(idle, recv.read_chunk(WRITE_BATCH, true))
            .await
            .ok_or_else(|| idle_error("base transfer", idle))?
            .map_err(|e| RemoteError::new(ErrorCode::Interrupted, format!("base transfer broken: {e}")))?
            .ok_or_else(|| RemoteError::new(ErrorCode::Interrupted, "base transfer ended early"))?;
        hasher.update(&chunk.bytes);
        let n = chunk.bytes.len() as u64;
        disk.send(DiskOp::Write(off, vec![chunk.bytes])).await?;
        off += n;
    }
    let expect = base.cap.peek().and_then(|c| c.expect);
    if let Some((_, hash)) = expect {
        if *hasher.finalize().as_bytes() != hash {
            return Err(RemoteError::new(ErrorCode::Corrupt, "base generation fetched from a peer fails its hash"));
        }
    }
    Ok(())
}
