//! Committing dirty data as a new generation: `OpenWrite` at the meta
//! server, then one write session to the file server it chose, starting from
//! the current generation when any of it survives (the server copies it),
//! then `SetLen`/`Data` frames for what changed, then `Commit`. The file
//! server answers once the replica is durable and registered, so a commit
//! that returned is what `fsync` and close promise.

use super::dirty::Dirty;
use super::remote::Remote;
use crate::counters::Counters;
use crate::error::ClientError;
use fs_proto::frame::write_msg;
use fs_proto::meta::{MetaRequest, MetaResponse, SetAttr};
use fs_proto::rpc::{reply, request, CallError, PeerAddr};
use fs_proto::server::{ServerRequest, ServerResponse, WriteFrame};
use fs_proto::{Cred, Gen, Hash, Ino};
use std::time::Duration;

/// Bytes per `Data` frame.
const PIECE: u64 = 4 << 20;

/// What a commit produced.
#[derive(Debug, Clone, Copy)]
pub struct Committed {
    /// New generation (0 when truncated to empty through the meta server).
    pub gen: Gen,
    /// Size.
    pub size: u64,
    /// BLAKE3 as the server stored it.
    pub hash: Option<Hash>,
}

fn proto(host: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Call(CallError::Connect { peer: host.to_string(), reason: e.to_string() })
}

/// The bound of a commit of `bytes`: the operation bound plus 1 s per 4 MiB
/// (a floor of 4 MiB/s), so large uploads are bounded but not cut short.
pub fn bound(remote: &Remote, bytes: u64) -> Duration {
    remote.timeout() + Duration::from_secs(bytes / PIECE)
}

/// Write `dirty` as the next generation of `ino`.
pub async fn commit(
    remote: &Remote,
    counters: &Counters,
    cred: Option<&Cred>,
    site: &str,
    ino: Ino,
    dirty: &Dirty,
) -> Result<Committed, ClientError> {
    let ranges = dirty.ranges();
    if ranges.is_empty() && dirty.size == 0 {
        let set = SetAttr { size: Some(0), ..Default::default() };
        return match remote.call(cred, MetaRequest::SetAttr { ino, set }).await?.0 {
            MetaResponse::Attr(a) => Ok(Committed { gen: a.gen, size: 0, hash: None }),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        };
    }
    let grant = match remote.call(cred, MetaRequest::OpenWrite { ino, site: site.to_string() }).await?.0 {
        MetaResponse::Write(g) => g,
        other => return Err(ClientError::Unexpected(format!("{other:?}"))),
    };
    let host = grant.target.host.clone();
    let peer = PeerAddr { addr: grant.target.addr, name: host.clone() };
    let base = if dirty.floor > 0 { grant.base.clone() } else { None };
    let mut len = match &base {
        Some(_) => grant.attr.size,
        None => 0,
    };
    counters.bump("data.write");
    let conn = remote.dialer().connect(&peer).await?;
    let (mut send, mut recv) =
        request(&conn, &ServerRequest::Write { cap: grant.cap.clone(), base }).await.map_err(|e| proto(&host, e))?;
    let sent: Result<(), String> = async {
        if len > dirty.floor {
            write_msg(&mut send, &WriteFrame::SetLen { size: dirty.floor }).await.map_err(|e| e.to_string())?;
            len = dirty.floor;
        }
        for (start, end) in ranges {
            let mut off = start;
            while off < end {
                let n = (end - off).min(PIECE);
                let bytes = dirty.read_spill(off, n).map_err(|e| format!("reading the spill file: {e}"))?;
                write_msg(&mut send, &WriteFrame::Data { offset: off, len: n }).await.map_err(|e| e.to_string())?;
                send.write_all(&bytes).await.map_err(|e| e.to_string())?;
                counters.add("data.bytes_out", n);
                off += n;
            }
            len = len.max(end);
        }
        if len != dirty.size {
            write_msg(&mut send, &WriteFrame::SetLen { size: dirty.size }).await.map_err(|e| e.to_string())?;
        }
        write_msg(&mut send, &WriteFrame::Commit).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        Ok(())
    }
    .await;
    let answer = reply::<ServerResponse>(&mut recv).await;
    match (sent, answer) {
        (_, Ok(Err(remote_err))) => Err(ClientError::Call(CallError::Remote(remote_err))),
        (Err(e), _) => Err(proto(&host, e)),
        (Ok(()), Err(e)) => Err(proto(&host, e)),
        (Ok(()), Ok(Ok(ServerResponse::Stored { gen, size, hash }))) => {
            if size != dirty.size {
                return Err(ClientError::Integrity(format!(
                    "{host} stored {size} bytes of inode {ino}, expected {}",
                    dirty.size
                )));
            }
            Ok(Committed { gen, size, hash: Some(hash) })
        }
        (Ok(()), Ok(Ok(other))) => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}
