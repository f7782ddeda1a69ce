//! Checking replicas where they are (`ServerRequest::Verify`): read each
//! one from this server's disk, check its footer, chunk table and every
//! chunk against the size and hash the meta server registered, and report
//! the outcome per replica. No data leaves the server. A corrupt or missing
//! replica is reported to the meta server, which stops handing it out.

use crate::data::{io_to_remote, verify_cap};
use crate::node::Ctx;
use crate::replica::{ReplicaError, ReplicaFile};
use crate::streams::{within, IDLE_RESET};
use fs_proto::frame::write_msg;
use fs_proto::meta::MetaRequest;
use fs_proto::replication::VerifyEvent;
use fs_proto::server::{ServerReply, ServerResponse};
use fs_proto::{Access, ErrorCode, Identity, RemoteError, SignedCapability};
use futures::stream::{self, StreamExt};
use std::sync::Arc;
use tracing::warn;

/// Replicas verified at once (disk and hashing overlap).
const AT_ONCE: usize = 2;

/// Serve a `Verify` request.
pub async fn verify(ctx: Arc<Ctx>, peer: &Identity, caps: Vec<SignedCapability>, mut send: quinn::SendStream) {
    let idle = ctx.streams.idle();
    let head = ServerReply::Ok(ServerResponse::Verifying { items: caps.len() as u32 });
    if !matches!(within(idle, write_msg(&mut send, &head)).await, Some(Ok(()))) {
        let _ = send.reset(IDLE_RESET);
        return;
    }
    let mut events = stream::iter(caps).map(|cap| verify_one(&ctx, peer, cap)).buffer_unordered(AT_ONCE);
    while let Some(ev) = events.next().await {
        // A peer that takes no event for the idle bound is given up.
        if !matches!(within(idle, write_msg(&mut send, &ev)).await, Some(Ok(()))) {
            let _ = send.reset(IDLE_RESET);
            return;
        }
    }
    let _ = send.finish();
}

async fn verify_one(ctx: &Arc<Ctx>, peer: &Identity, cap: SignedCapability) -> VerifyEvent {
    let cap = match verify_cap(ctx, peer, &cap, Access::Read) {
        Ok(c) => c,
        Err(e) => {
            let (ino, gen) = cap.peek().map(|c| (c.ino, c.gen)).unwrap_or((0, 0));
            return VerifyEvent { ino, gen, bytes: 0, result: Err(e) };
        }
    };
    let path = ctx.spool.replica_path(cap.ino, cap.gen);
    let expect = cap.expect;
    let checked = tokio::task::spawn_blocking(move || -> Result<u64, RemoteError> {
        let f = ReplicaFile::open(&path).map_err(|e| remote(&e))?;
        if let Some((size, hash)) = expect {
            if f.size() != size || f.hash() != hash {
                return Err(RemoteError::new(
                    ErrorCode::Corrupt,
                    format!("replica holds {} bytes with another hash than the {} bytes registered", f.size(), size),
                ));
            }
        }
        f.verify_all().map_err(|e| remote(&e))?;
        Ok(f.size())
    })
    .await
    .unwrap_or_else(|e| Err(RemoteError::new(ErrorCode::Internal, e.to_string())));
    match checked {
        Ok(bytes) => VerifyEvent { ino: cap.ino, gen: cap.gen, bytes, result: Ok(()) },
        Err(e) => {
            if matches!(e.code, ErrorCode::Corrupt | ErrorCode::NotFound) {
                // Reported before the event goes out, so a repair planned
                // right after the check already knows.
                let req = MetaRequest::ReportBadReplica { ino: cap.ino, gen: cap.gen, reason: format!("check: {e}") };
                if let Err(err) = ctx.meta.call(req).await {
                    warn!(ino = cap.ino, gen = cap.gen, "could not report bad replica: {err}");
                }
            }
            VerifyEvent { ino: cap.ino, gen: cap.gen, bytes: 0, result: Err(e) }
        }
    }
}

fn remote(e: &ReplicaError) -> RemoteError {
    match e {
        ReplicaError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            RemoteError::new(ErrorCode::NotFound, "replica missing from the spool")
        }
        _ => io_to_remote(e),
    }
}
