//! The data path: streaming a replica from the nearest file server that has
//! it (falling back to the next on failure, verifying the BLAKE3 hash end to
//! end), and streaming a new generation to the file server the meta server
//! chose at our site.

use crate::counters::Counters;
use crate::error::ClientError;
use bytes::Bytes;
use fs_proto::error::quic_codes;
use fs_proto::frame::write_msg;
use fs_proto::meta::{ReadGrant, WriteGrant};
use fs_proto::rpc::{reply, request, CallError, Dialer, PeerAddr};
use fs_proto::server::{ServerRequest, ServerResponse, WriteFrame};
use fs_proto::{hash_hex, Hash, ServerLoc};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tracing::{debug, warn};

type Result<T> = std::result::Result<T, ClientError>;

/// Bytes sent per `Data` frame by a streaming write.
const WRITE_PIECE: usize = 4 << 20;

/// Progress callback: called with the number of new bytes moved.
pub type OnBytes<'a> = &'a (dyn Fn(u64) + Send + Sync);

/// Talks to file servers.
#[derive(Clone)]
pub struct DataPlane {
    dialer: Dialer,
    site: String,
    counters: Arc<Counters>,
}

fn peer_of(loc: &ServerLoc) -> PeerAddr {
    PeerAddr { addr: loc.addr, name: loc.host.clone() }
}

fn proto(loc: &ServerLoc, e: impl std::fmt::Display) -> ClientError {
    ClientError::Call(CallError::Connect { peer: loc.host.clone(), reason: e.to_string() })
}

/// Put the replicas at `site` first, keeping the order within each group:
/// the one rule every reader (CLI, mount, read-ahead, VM agents) follows
/// before round-trip times break ties ([`DataPlane::order`]).
pub fn nearest_first(replicas: &mut [ServerLoc], site: &str) {
    replicas.sort_by_key(|r| r.site != site);
}

/// [`nearest_first`] for every read grant in a meta server's answer (a
/// batch's included).
pub fn nearest_first_in(answer: &mut fs_proto::meta::MetaResponse, site: &str) {
    use fs_proto::meta::MetaResponse as A;
    match answer {
        A::Read(g) => nearest_first(&mut g.replicas, site),
        A::Batch(rs) => {
            for r in rs.iter_mut().flatten() {
                nearest_first_in(r, site);
            }
        }
        _ => {}
    }
}

impl DataPlane {
    /// A data plane for a client at `site`.
    pub fn new(dialer: Dialer, site: String, counters: Arc<Counters>) -> Self {
        DataPlane { dialer, site, counters }
    }

    /// The connection cache to file servers (for requests other than
    /// reads and writes, e.g. copy orders).
    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    /// Replicas in the order to try them: our site first, then by the
    /// round-trip time measured on existing connections.
    pub async fn order(&self, replicas: &[ServerLoc]) -> Vec<ServerLoc> {
        let mut scored = Vec::with_capacity(replicas.len());
        for r in replicas {
            let rtt = match self.dialer.cached(&peer_of(r)).await {
                Some(c) => c.rtt(),
                None => std::time::Duration::from_secs(3600),
            };
            scored.push(((r.site != self.site) as u8, rtt, r.clone()));
        }
        scored.sort_by_key(|a| (a.0, a.1));
        scored.into_iter().map(|s| s.2).collect()
    }

    /// Stream the whole current generation into `out`, verifying its hash.
    /// On a failure the next replica is tried from the start (`out` is
    /// rewound and truncated). Returns the bytes written.
    pub async fn read_into(&self, grant: &ReadGrant, out: &mut tokio::fs::File, on_bytes: OnBytes<'_>) -> Result<u64> {
        let Some(cap) = &grant.cap else { return Ok(0) };
        let want_hash = grant.attr.hash.ok_or_else(|| ClientError::Unexpected("file without a hash".into()))?;
        let mut last = ClientError::Integrity(format!("inode {} has no reachable replica", grant.attr.ino));
        for loc in self.order(&grant.replicas).await {
            out.seek(std::io::SeekFrom::Start(0)).await.map_err(|e| local_err("output", e))?;
            out.set_len(0).await.map_err(|e| local_err("output", e))?;
            match self.read_one(&loc, cap, 0, u64::MAX, Sink::File(out, Writeback::default()), on_bytes).await {
                Ok((n, h)) if h == want_hash && n == grant.attr.size => {
                    out.flush().await.map_err(|e| local_err("output", e))?;
                    return Ok(n);
                }
                Ok((n, h)) => {
                    warn!(host = %loc.host, "replica failed end-to-end check ({n} bytes, hash {})", hash_hex(&h));
                    last = ClientError::Integrity(format!(
                        "replica on {} failed its end-to-end hash check (got {}, expected {})",
                        loc.host,
                        hash_hex(&h),
                        hash_hex(&want_hash)
                    ));
                }
                Err(e @ ClientError::Local { .. }) => return Err(e),
                Err(e) => {
                    warn!(host = %loc.host, "read failed, trying another replica: {e}");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Read a whole small file into memory (verified).
    pub async fn read_to_vec(&self, grant: &ReadGrant) -> Result<Vec<u8>> {
        let Some(cap) = &grant.cap else { return Ok(Vec::new()) };
        let want_hash = grant.attr.hash.ok_or_else(|| ClientError::Unexpected("file without a hash".into()))?;
        let mut last = ClientError::Integrity(format!("inode {} has no reachable replica", grant.attr.ino));
        for loc in self.order(&grant.replicas).await {
            let mut buf = Vec::with_capacity(grant.attr.size as usize);
            let r = self.read_one(&loc, cap, 0, u64::MAX, Sink::Vec(&mut buf), &|_| {}).await;
            match r {
                Ok((_, h)) if h == want_hash => return Ok(buf),
                Ok(_) => {
                    last = ClientError::Integrity(format!("replica on {} failed its end-to-end hash check", loc.host))
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Read `len` bytes at `offset` from the first replica that serves them
    /// (each chunk verified by the server against the registered hash).
    pub async fn read_range(&self, grant: &ReadGrant, offset: u64, len: u64) -> Result<Vec<u8>> {
        let Some(cap) = &grant.cap else { return Ok(Vec::new()) };
        let mut last = ClientError::Integrity(format!("inode {} has no reachable replica", grant.attr.ino));
        for loc in self.order(&grant.replicas).await {
            let mut buf = Vec::new();
            match self.read_one(&loc, cap, offset, len, Sink::Vec(&mut buf), &|_| {}).await {
                Ok(_) => return Ok(buf),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// One read request to one server; returns bytes and their BLAKE3.
    async fn read_one(
        &self,
        loc: &ServerLoc,
        cap: &fs_proto::SignedCapability,
        offset: u64,
        len: u64,
        mut sink: Sink<'_>,
        on_bytes: OnBytes<'_>,
    ) -> Result<(u64, Hash)> {
        self.counters.bump("data.read");
        let peer = peer_of(loc);
        // A cached connection to a server that restarted since is dead
        // though not known to be yet: the request fails on it before any
        // byte arrives. A read is idempotent: dial again once.
        let mut attempt = 0;
        let (mut recv, header) = loop {
            attempt += 1;
            let conn = self.dialer.connect(&peer).await?;
            let (mut send, mut recv) = request(&conn, &ServerRequest::Read { cap: cap.clone(), offset, len })
                .await
                .map_err(|e| proto(loc, e))?;
            let _ = send.finish();
            match reply::<ServerResponse>(&mut recv).await {
                // A corrupt first chunk resets the stream before its header is read.
                Err(fs_proto::ProtoError::Read(quinn::ReadError::Reset(code))) if code == quic_codes::CORRUPT => {
                    return Err(ClientError::Integrity(format!("{} refused to send a corrupt replica", loc.host)));
                }
                Err(e) if attempt == 1 && conn.close_reason().is_some() => {
                    debug!(host = %loc.host, "cached connection was dead ({e}); dialling again");
                    self.dialer.forget(&peer).await;
                }
                other => break (recv, other.map_err(|e| proto(loc, e))?),
            }
        };
        let n = match header {
            Ok(ServerResponse::Reading { len, .. }) => len,
            Ok(other) => return Err(ClientError::Unexpected(format!("{other:?}"))),
            Err(e) => return Err(ClientError::Call(CallError::Remote(e))),
        };
        let mut hasher = blake3::Hasher::new();
        let mut got = 0u64;
        while got < n {
            let chunk = match recv.read_chunk(1 << 20, true).await {
                Ok(Some(c)) => c,
                Ok(None) => return Err(proto(loc, format!("stream ended after {got} of {n} bytes"))),
                Err(quinn::ReadError::Reset(code)) if code == quic_codes::CORRUPT => {
                    return Err(ClientError::Integrity(format!("{} refused to send a corrupt replica", loc.host)))
                }
                Err(e) => return Err(proto(loc, e)),
            };
            let l = chunk.bytes.len() as u64;
            if offset == 0 {
                hasher.update(&chunk.bytes);
            }
            sink.put(chunk.bytes).await?;
            got += l;
            self.counters.add("data.bytes_in", l);
            on_bytes(l);
        }
        debug!(host = %loc.host, bytes = got, "read done");
        Ok((got, *hasher.finalize().as_bytes()))
    }

    /// Stream `src` as the new generation the grant allows. Returns size and
    /// hash as the server stored them (checked against what we sent).
    pub async fn write_from<Rd: AsyncRead + Unpin>(
        &self,
        grant: &WriteGrant,
        src: &mut Rd,
        on_bytes: OnBytes<'_>,
    ) -> Result<(u64, Hash)> {
        self.counters.bump("data.write");
        let loc = &grant.target;
        let conn = self.dialer.connect(&peer_of(loc)).await?;
        let (mut send, mut recv) = request(&conn, &ServerRequest::Write { cap: grant.cap.clone(), base: None })
            .await
            .map_err(|e| proto(loc, e))?;
        let mut hasher = blake3::Hasher::new();
        let mut off = 0u64;
        let mut buf = vec![0u8; WRITE_PIECE];
        let sent: std::result::Result<(), String> = async {
            loop {
                let mut filled = 0;
                while filled < buf.len() {
                    let n = src.read(&mut buf[filled..]).await.map_err(|e| format!("reading the source: {e}"))?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                if filled == 0 {
                    break;
                }
                hasher.update(&buf[..filled]);
                write_msg(&mut send, &WriteFrame::Data { offset: off, len: filled as u64 })
                    .await
                    .map_err(|e| e.to_string())?;
                send.write_all(&buf[..filled]).await.map_err(|e| e.to_string())?;
                off += filled as u64;
                self.counters.add("data.bytes_out", filled as u64);
                on_bytes(filled as u64);
            }
            write_msg(&mut send, &WriteFrame::Commit).await.map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            Ok(())
        }
        .await;
        // Whether or not sending finished, the server's reply says why.
        let answer = reply::<ServerResponse>(&mut recv).await;
        match (sent, answer) {
            (_, Ok(Err(remote))) => Err(ClientError::Call(CallError::Remote(remote))),
            (Err(local), _) if local.starts_with("reading the source") => {
                let _ = send.reset(quic_codes::IO);
                Err(ClientError::Local { path: "source".into(), source: std::io::Error::other(local) })
            }
            (Err(e), _) => Err(proto(loc, e)),
            (Ok(()), Err(e)) => Err(proto(loc, e)),
            (Ok(()), Ok(Ok(ServerResponse::Stored { size, hash, .. }))) => {
                let mine = *hasher.finalize().as_bytes();
                if size != off || hash != mine {
                    return Err(ClientError::Integrity(format!(
                        "{} stored {size} bytes with hash {} but we sent {off} bytes with hash {}",
                        loc.host,
                        hash_hex(&hash),
                        hash_hex(&mine)
                    )));
                }
                Ok((size, hash))
            }
            (Ok(()), Ok(Ok(other))) => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}

/// Where read bytes go.
enum Sink<'a> {
    File(&'a mut tokio::fs::File, Writeback),
    Vec(&'a mut Vec<u8>),
}

/// Bytes written to a download and how far the kernel was told to start
/// writing them back. Without it a 2 GiB download sits dirty in the page
/// cache and the fsync before the rename adds about a second at the end.
#[derive(Default)]
struct Writeback {
    written: u64,
    started: u64,
}

/// Start writeback every this many bytes.
const WRITEBACK_STEP: u64 = 32 << 20;

impl Sink<'_> {
    async fn put(&mut self, b: Bytes) -> Result<()> {
        match self {
            Sink::File(f, wb) => {
                f.write_all(&b).await.map_err(|e| local_err("output", e))?;
                wb.written += b.len() as u64;
                if wb.written - wb.started >= WRITEBACK_STEP {
                    // The bytes must be in the kernel before it can write them back.
                    f.flush().await.map_err(|e| local_err("output", e))?;
                    use std::os::fd::AsRawFd;
                    // SAFETY: a valid descriptor; SYNC_FILE_RANGE_WRITE only
                    // queues I/O. Best effort: a real error shows at the fsync.
                    unsafe {
                        libc::sync_file_range(
                            f.as_raw_fd(),
                            wb.started as i64,
                            (wb.written - wb.started) as i64,
                            libc::SYNC_FILE_RANGE_WRITE,
                        );
                    }
                    wb.started = wb.written;
                }
                Ok(())
            }
            Sink::Vec(v) => {
                v.extend_from_slice(&b);
                Ok(())
            }
        }
    }
}

fn local_err(what: &str, e: std::io::Error) -> ClientError {
    ClientError::Local { path: what.into(), source: e }
}
