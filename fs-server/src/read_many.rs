//! The source side of replication: many whole replicas on one stream
//! (`ServerRequest::ReadMany`), so a peer pulling a tree of small files pays
//! no round trip per file.
//!
//! One blocking thread opens each replica, checks it against the size and
//! hash its capability names and reads it chunk by verified chunk, ahead of
//! the network through a bounded channel; the async side writes a header
//! frame per file and the raw bytes after it. A replica that fails its
//! check is reported to the meta server and refused (that file only); a
//! chunk failing mid-file resets the stream with `CORRUPT`, so bad bytes
//! are never sent.

use crate::data::{io_to_remote, report_bad, READ_PIECE};
use crate::node::Ctx;
use crate::replica::{ReplicaError, ReplicaFile};
use bytes::Bytes;
use fs_proto::error::quic_codes;
use fs_proto::frame::write_msg;
use fs_proto::server::{ServerReply, ServerResponse};
use fs_proto::{Access, Capability, ErrorCode, Gen, Identity, Ino, RemoteError, SignedCapability, Timestamp};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// What the reading thread hands to the network side.
enum Piece {
    /// The header of the next file.
    Head(ServerReply),
    /// Verified bytes of the current file.
    Data(Bytes),
    /// A replica found bad before anything of it was sent: report it.
    Bad(Ino, Gen, String),
    /// A chunk failed mid-file (corrupt, or an I/O error).
    Broken(Ino, Gen, ReplicaError),
}

/// Check a capability for reading as part of replication: a read
/// capability, or a copy capability, issued to the peer.
fn check(ctx: &Ctx, peer: &Identity, cap: &SignedCapability) -> Result<Capability, RemoteError> {
    let v = ctx
        .meta
        .verifier()
        .ok_or_else(|| RemoteError::new(ErrorCode::Unavailable, "server has not reached the meta server yet"))?;
    let cap = v.verify(cap, &peer.name, Timestamp::now().as_millis())?;
    match cap.access {
        Access::Read | Access::Replicate => Ok(cap),
        other => {
            Err(RemoteError::new(ErrorCode::BadCapability, format!("a {other:?} capability does not allow reading")))
        }
    }
}

/// Serve a `ReadMany` request.
pub async fn read_many(ctx: Arc<Ctx>, peer: &Identity, caps: Vec<SignedCapability>, mut send: quinn::SendStream) {
    let checked: Vec<Result<Capability, RemoteError>> = caps.iter().map(|c| check(&ctx, peer, c)).collect();
    let (tx, mut rx) = mpsc::channel::<Piece>(8);
    let reader_ctx = ctx.clone();
    tokio::task::spawn_blocking(move || produce(&reader_ctx, checked, &tx));
    while let Some(piece) = rx.recv().await {
        match piece {
            Piece::Head(h) => {
                if write_msg(&mut send, &h).await.is_err() {
                    return;
                }
            }
            Piece::Data(b) => {
                let n = b.len() as u64;
                if send.write_chunk(b).await.is_err() {
                    return;
                }
                ctx.bytes_out.fetch_add(n, Ordering::Relaxed);
            }
            Piece::Bad(ino, gen, why) => report_bad(&ctx, ino, gen, why),
            Piece::Broken(ino, gen, e) => {
                warn!(ino, gen, "refusing to send corrupt data: {e}");
                let code = if matches!(e, ReplicaError::Corrupt { .. }) {
                    report_bad(&ctx, ino, gen, e.to_string());
                    quic_codes::CORRUPT
                } else {
                    quic_codes::IO
                };
                let _ = send.reset(code);
                return;
            }
        }
    }
    let _ = send.finish();
}

/// The reading thread: one file after another, ahead of the network.
fn produce(ctx: &Ctx, caps: Vec<Result<Capability, RemoteError>>, tx: &mpsc::Sender<Piece>) {
    for cap in caps {
        let cap = match cap {
            Ok(c) => c,
            Err(e) => {
                if tx.blocking_send(Piece::Head(Err(e))).is_err() {
                    return;
                }
                continue;
            }
        };
        let file = match open_checked(ctx, &cap) {
            Ok(f) => f,
            Err((e, bad)) => {
                if let Some(why) = bad {
                    if tx.blocking_send(Piece::Bad(cap.ino, cap.gen, why)).is_err() {
                        return;
                    }
                }
                if tx.blocking_send(Piece::Head(Err(e))).is_err() {
                    return;
                }
                continue;
            }
        };
        let size = file.size();
        if tx.blocking_send(Piece::Head(Ok(ServerResponse::Reading { len: size, size }))).is_err() {
            return;
        }
        let mut off = 0;
        while off < size {
            let want = READ_PIECE.min(size - off);
            let mut buf = Vec::with_capacity(want as usize);
            if let Err(e) = file.read_verified(off, want, &mut buf) {
                let _ = tx.blocking_send(Piece::Broken(cap.ino, cap.gen, e));
                return;
            }
            if tx.blocking_send(Piece::Data(Bytes::from(buf))).is_err() {
                return;
            }
            off += want;
        }
        debug!(ino = cap.ino, gen = cap.gen, size, "replica sent");
    }
}

/// Open the replica a capability names and check it has the registered
/// size and hash. On failure: the error for the peer, and a reason to
/// report the replica bad if it is.
fn open_checked(ctx: &Ctx, cap: &Capability) -> Result<ReplicaFile, (RemoteError, Option<String>)> {
    let path = ctx.spool.replica_path(cap.ino, cap.gen);
    let file = ReplicaFile::open(&path).map_err(|e| {
        let bad = matches!(e, ReplicaError::Corrupt { .. }).then(|| e.to_string());
        (io_to_remote(&e), bad)
    })?;
    if let Some((size, hash)) = cap.expect {
        if file.size() != size || file.hash() != hash {
            let why =
                format!("replica holds {} bytes with another hash than the {} bytes registered", file.size(), size);
            return Err((RemoteError::new(ErrorCode::Corrupt, why.clone()), Some(why)));
        }
    }
    Ok(file)
}
