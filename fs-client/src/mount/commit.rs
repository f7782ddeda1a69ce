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
    let mut s = open_session(remote, counters, cred, site, ino, dirty.floor > 0).await?;
    let mut len = s.base_len;
    let sent: Result<(), String> = async {
        if len > dirty.floor {
            write_msg(&mut s.send, &WriteFrame::SetLen { size: dirty.floor }).await.map_err(|e| e.to_string())?;
            len = dirty.floor;
        }
        for (start, end) in ranges {
            let mut off = start;
            while off < end {
                let n = (end - off).min(PIECE);
                let bytes = dirty.read_spill(off, n).map_err(|e| format!("reading the spill file: {e}"))?;
                s.data(counters, off, &bytes).await?;
                off += n;
            }
            len = len.max(end);
        }
        if len != dirty.size {
            write_msg(&mut s.send, &WriteFrame::SetLen { size: dirty.size }).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
    .await;
    s.finish(sent, ino, dirty.size).await
}

/// An open write session for the next generation of a file.
pub struct Session {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    host: String,
    /// Bytes the new generation starts with (the base the server copies).
    pub base_len: u64,
}

/// How long a commit waits for a file server to be known alive (a meta
/// server that just restarted hears from each within a heartbeat or two).
const NO_SERVER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Ask for the next generation of `ino` and open the session to the file
/// server the meta server chose; `keep_base`: start from the current bytes.
pub async fn open_session(
    remote: &Remote,
    counters: &Counters,
    cred: Option<&Cred>,
    site: &str,
    ino: Ino,
    keep_base: bool,
) -> Result<Session, ClientError> {
    // Right after a meta server restart no file server has reported yet
    // ("no live file server"): wait for one, bounded, rather than fail the
    // close and drop what it wrote.
    let deadline = std::time::Instant::now() + NO_SERVER_WAIT;
    let mut pause = std::time::Duration::from_millis(100);
    let grant = loop {
        match remote.call(cred, MetaRequest::OpenWrite { ino, site: site.to_string() }).await {
            Ok((MetaResponse::Write(g), _)) => break g,
            Ok((other, _)) => return Err(ClientError::Unexpected(format!("{other:?}"))),
            Err(e)
                if e.code() == Some(fs_proto::ErrorCode::NoServer) && std::time::Instant::now() + pause < deadline =>
            {
                tracing::debug!(ino, "no file server to write to yet, asking again: {e}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    };
    let host = grant.target.host.clone();
    let peer = PeerAddr { addr: grant.target.addr, name: host.clone() };
    let base = if keep_base { grant.base.clone() } else { None };
    let base_len = if base.is_some() { grant.attr.size } else { 0 };
    counters.bump("data.write");
    let conn = remote.dialer().connect(&peer).await?;
    let (send, recv) =
        request(&conn, &ServerRequest::Write { cap: grant.cap.clone(), base }).await.map_err(|e| proto(&host, e))?;
    Ok(Session { send, recv, host, base_len })
}

impl Session {
    /// Send `bytes` to be written at `offset`.
    pub async fn data(&mut self, counters: &Counters, offset: u64, bytes: &[u8]) -> Result<(), String> {
        let len = bytes.len() as u64;
        write_msg(&mut self.send, &WriteFrame::Data { offset, len }).await.map_err(|e| e.to_string())?;
        self.send.write_all(bytes).await.map_err(|e| e.to_string())?;
        counters.add("data.bytes_out", len);
        Ok(())
    }

    /// Give up: the server drops what it received.
    pub fn abort(mut self) {
        let _ = self.send.reset(fs_proto::error::quic_codes::OK);
    }

    /// Commit (if everything was `sent`) and read the server's answer.
    pub async fn finish(mut self, sent: Result<(), String>, ino: Ino, size: u64) -> Result<Committed, ClientError> {
        let sent = match sent {
            Ok(()) => {
                async {
                    write_msg(&mut self.send, &WriteFrame::Commit).await.map_err(|e| e.to_string())?;
                    self.send.finish().map_err(|e| e.to_string())
                }
                .await
            }
            Err(e) => Err(e),
        };
        let host = self.host;
        let answer = reply::<ServerResponse>(&mut self.recv).await;
        match (sent, answer) {
            (_, Ok(Err(remote_err))) => Err(ClientError::Call(CallError::Remote(remote_err))),
            (Err(e), _) => Err(proto(&host, e)),
            (Ok(()), Err(e)) => Err(proto(&host, e)),
            (Ok(()), Ok(Ok(ServerResponse::Stored { gen, size: stored, hash }))) => {
                if stored != size {
                    return Err(ClientError::Integrity(format!(
                        "{host} stored {stored} bytes of inode {ino}, expected {size}"
                    )));
                }
                Ok(Committed { gen, size, hash: Some(hash) })
            }
            (Ok(()), Ok(Ok(other))) => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}
