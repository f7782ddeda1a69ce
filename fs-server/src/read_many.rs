//! The source side of replication: many whole replicas on one stream
//! (`ServerRequest::ReadMany`), so a peer pulling a tree of small files pays
//! no round trip per file.
//!
//! Each replica is opened and checked against the size and hash its
//! capability names on the blocking pool, then read chunk by verified chunk
//! a few pieces ahead of the network (each piece one short blocking task,
//! so a peer that stops reading holds no blocking thread, and is given up
//! after the idle bound); a header frame goes out per file with the raw
//! bytes after it. A replica that fails its
//! check is reported to the meta server and refused (that file only); a
//! chunk failing mid-file resets the stream with `CORRUPT`, so bad bytes
//! are never sent.

use crate::data::{io_to_remote, report_bad, Pieces};
use crate::node::Ctx;
use crate::replica::{ReplicaError, ReplicaFile};
use crate::streams::{within, IDLE_RESET};
use fs_proto::error::quic_codes;
use fs_proto::frame::write_msg;
use fs_proto::server::{ServerReply, ServerResponse};
use fs_proto::{Access, Capability, ErrorCode, Identity, RemoteError, SignedCapability, Timestamp};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tracing::{debug, warn};

/// Replicas opened ahead of the one being sent.
const OPEN_AHEAD: usize = 4;

/// A replica being opened on the blocking pool, or refused before that.
enum Opening {
    Pending(Capability, tokio::task::JoinHandle<Result<ReplicaFile, (RemoteError, Option<String>)>>),
    Refused(RemoteError),
}

/// Check a capability for reading as part of replication: a read
/// capability, or a copy capability, issued to the peer.
fn check(ctx: &Ctx, peer: &Identity, cap: &SignedCapability) -> Result<Capability, RemoteError> {
    let v = ctx
        .meta
        .verifier()
        .ok_or_else(|| RemoteError::new(ErrorCode::Unavailable, "server has not reached the meta server yet"))?;
    let cap = v.verify(cap, &fs_proto::Principal::of(peer), Timestamp::now().as_millis())?;
    ctx.voids.check(&cap)?;
    match cap.access {
        Access::Read | Access::Replicate => Ok(cap),
        other => {
            Err(RemoteError::new(ErrorCode::BadCapability, format!("a {other:?} capability does not allow reading")))
        }
    }
}

/// Serve a `ReadMany` request.
pub async fn read_many(ctx: Arc<Ctx>, peer: &Identity, caps: Vec<SignedCapability>, mut send: quinn::SendStream) {
    let idle = ctx.streams.idle();
    // Every write waits at most the idle bound for the peer to take it.
    let stalled = |send: &mut quinn::SendStream| {
        debug!("the reader took nothing for {idle:?}; resetting the stream");
        let _ = send.reset(IDLE_RESET);
    };
    // Every capability is an ECDSA verification: thousands of them are
    // checked on the blocking pool, not on an async worker.
    let checked: Vec<Result<Capability, RemoteError>> = {
        let (c, p) = (ctx.clone(), peer.clone());
        tokio::task::spawn_blocking(move || caps.iter().map(|cap| check(&c, &p, cap)).collect())
            .await
            .unwrap_or_else(|e| vec![Err(RemoteError::new(ErrorCode::Internal, format!("checking capabilities: {e}")))])
    };
    let mut checked = checked.into_iter();
    // Replicas are opened and checked a few files ahead of the one sent.
    let mut opening: VecDeque<Opening> = VecDeque::new();
    let mut sent = 0u64;
    loop {
        while opening.len() < OPEN_AHEAD {
            let Some(c) = checked.next() else { break };
            opening.push_back(match c {
                Ok(cap) => {
                    let (ctx, c) = (ctx.clone(), cap.clone());
                    Opening::Pending(cap, tokio::task::spawn_blocking(move || open_checked(&ctx, &c)))
                }
                Err(e) => Opening::Refused(e),
            });
        }
        let Some(o) = opening.pop_front() else { break };
        let opened = match o {
            Opening::Refused(e) => Err(e),
            Opening::Pending(cap, h) => match h.await {
                Ok(Ok(file)) => Ok((file, cap)),
                Ok(Err((e, bad))) => {
                    if let Some(why) = bad {
                        report_bad(&ctx, cap.ino, cap.gen, why);
                    }
                    Err(e)
                }
                Err(e) => Err(RemoteError::new(ErrorCode::Internal, e.to_string())),
            },
        };
        let (file, cap) = match opened {
            Ok(o) => o,
            Err(e) => match within(idle, write_msg(&mut send, &ServerReply::Err(e))).await {
                Some(Ok(())) => continue,
                Some(Err(_)) => return,
                None => return stalled(&mut send),
            },
        };
        let size = file.size();
        let head = ServerReply::Ok(ServerResponse::Reading { len: size, size });
        match within(idle, write_msg(&mut send, &head)).await {
            Some(Ok(())) => {}
            Some(Err(_)) => return,
            None => return stalled(&mut send),
        }
        // Read and verified chunk by chunk on the blocking pool, a few
        // pieces ahead of the network.
        let mut pieces = Pieces::new(Arc::new(file), 0, size);
        while let Some(piece) = pieces.next().await {
            match piece {
                Ok(b) => {
                    let n = b.len() as u64;
                    match within(idle, send.write_chunk(b)).await {
                        Some(Ok(())) => {}
                        Some(Err(_)) => return,
                        None => return stalled(&mut send),
                    }
                    ctx.bytes_out.fetch_add(n, Ordering::Relaxed);
                    if sent > 0 {
                        // Fault tests: the source dies in the middle of a
                        // file, one whole file sent before it.
                        fs_proto::process::crash_point("server.read_many.mid_file");
                    }
                }
                Err(e) => {
                    warn!(ino = cap.ino, gen = cap.gen, "refusing to send corrupt data: {e}");
                    let code = if matches!(e, ReplicaError::Corrupt { .. }) {
                        report_bad(&ctx, cap.ino, cap.gen, e.to_string());
                        quic_codes::CORRUPT
                    } else {
                        quic_codes::IO
                    };
                    let _ = send.reset(code);
                    return;
                }
            }
        }
        sent += 1;
        debug!(ino = cap.ino, gen = cap.gen, size, "replica sent");
    }
    let _ = send.finish();
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
