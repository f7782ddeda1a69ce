//! Streamed reads for one open file handle.
//!
//! A FUSE read does not cost a request to a file server each: the handle
//! keeps one read stream open and serves successive reads from it. The
//! stream's length grows while reads are sequential (from [`FIRST_WINDOW`]
//! to [`MAX_WINDOW`]), so a large sequential read is a few long streams and
//! a random access moves little more than it needs. The kernel sends
//! read-ahead requests concurrently and not always in order, so the last
//! [`KEEP`] bytes taken from the stream are kept to serve a read that falls
//! slightly behind.

use crate::counters::Counters;
use crate::error::ClientError;
use bytes::Bytes;
use fs_proto::error::quic_codes;
use fs_proto::meta::ReadGrant;
use fs_proto::rpc::{reply, request, CallError, Dialer, PeerAddr};
use fs_proto::server::{ServerRequest, ServerResponse};
use fs_proto::ServerLoc;
use std::collections::VecDeque;
use std::sync::Arc;

/// First stream length after a random access.
pub const FIRST_WINDOW: u64 = 256 << 10;
/// Longest stream.
pub const MAX_WINDOW: u64 = 256 << 20;
/// Bytes kept behind the stream position.
pub const KEEP: u64 = 8 << 20;
/// Furthest a read may be ahead of the stream and still be served by it.
pub const SKIP: u64 = 8 << 20;

struct Stream {
    recv: quinn::RecvStream,
    /// Offset of the next byte the stream delivers.
    pos: u64,
    /// Offset where the stream ends.
    end: u64,
}

/// Read state of one handle.
#[derive(Default)]
pub struct Reader {
    stream: Option<Stream>,
    /// Recently delivered pieces, in order, contiguous up to the stream position.
    kept: VecDeque<(u64, Bytes)>,
    window: u64,
    /// Index of the replica that served last (tried first).
    prefer: usize,
    /// Generation the stream and the kept bytes belong to.
    gen: fs_proto::Gen,
}

fn proto(host: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Call(CallError::Connect { peer: host.to_string(), reason: e.to_string() })
}

impl Reader {
    fn kept_start(&self) -> u64 {
        self.kept.front().map(|(o, _)| *o).unwrap_or(u64::MAX)
    }

    fn kept_end(&self) -> u64 {
        self.kept.back().map(|(o, b)| o + b.len() as u64).unwrap_or(0)
    }

    fn copy_kept(&self, offset: u64, end: u64, out: &mut Vec<u8>) {
        for (o, b) in &self.kept {
            let (s, e) = (*o, o + b.len() as u64);
            if e <= offset || s >= end {
                continue;
            }
            let a = offset.max(s) - s;
            let z = end.min(e) - s;
            out.extend_from_slice(&b[a as usize..z as usize]);
        }
    }

    fn keep(&mut self, off: u64, b: Bytes) {
        if self.kept_end() != off {
            self.kept.clear();
        }
        self.kept.push_back((off, b));
        let mut total: u64 = self.kept.iter().map(|(_, b)| b.len() as u64).sum();
        while total > KEEP && self.kept.len() > 1 {
            if let Some((_, b)) = self.kept.pop_front() {
                total -= b.len() as u64;
            }
        }
    }

    /// Read `[offset, offset + len)` of the generation `grant` names
    /// (clipped to its size).
    pub async fn read(
        &mut self,
        dialer: &Dialer,
        counters: &Counters,
        grant: &ReadGrant,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, ClientError> {
        if self.gen != grant.attr.gen {
            // A new generation: nothing read from the old one may be served.
            *self = Reader { gen: grant.attr.gen, ..Default::default() };
        }
        let size = grant.attr.size;
        let end = offset.saturating_add(len).min(size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        if offset >= end {
            return Ok(out);
        }
        if offset >= self.kept_start() && end <= self.kept_end() {
            self.copy_kept(offset, end, &mut out);
            return Ok(out);
        }
        let usable = self.stream.as_ref().is_some_and(|s| {
            let from = if self.kept.is_empty() { s.pos } else { self.kept_start() };
            offset >= from && offset <= s.pos + SKIP && s.end >= s.pos
        });
        if !usable {
            self.stream = None;
            self.kept.clear();
            self.window = FIRST_WINDOW;
        }
        loop {
            if self.kept_end() >= end && offset >= self.kept_start() {
                self.copy_kept(offset, end, &mut out);
                return Ok(out);
            }
            let need_open = match &self.stream {
                None => true,
                Some(s) => s.pos >= s.end,
            };
            if need_open {
                let from = if self.kept.is_empty() { offset } else { self.kept_end() };
                let len = self.window.max(end - from).min(size - from);
                self.window = (self.window * 2).min(MAX_WINDOW);
                self.stream = Some(self.open(dialer, counters, grant, from, len).await?);
            }
            let Some(s) = self.stream.as_mut() else { continue };
            let chunk = match s.recv.read_chunk(1 << 20, true).await {
                Ok(Some(c)) => c.bytes,
                Ok(None) => {
                    self.stream = None;
                    return Err(proto("file server", "read stream ended early"));
                }
                Err(quinn::ReadError::Reset(code)) if code == quic_codes::CORRUPT => {
                    self.stream = None;
                    return Err(ClientError::Integrity("a file server refused to send a corrupt replica".into()));
                }
                Err(e) => {
                    self.stream = None;
                    return Err(proto("file server", e));
                }
            };
            let at = s.pos;
            s.pos += chunk.len() as u64;
            counters.add("data.bytes_in", chunk.len() as u64);
            self.keep(at, chunk);
        }
    }

    async fn open(
        &mut self,
        dialer: &Dialer,
        counters: &Counters,
        grant: &ReadGrant,
        offset: u64,
        len: u64,
    ) -> Result<Stream, ClientError> {
        let cap = grant.cap.as_ref().ok_or_else(|| ClientError::Unexpected("read of an empty file".into()))?;
        let n = grant.replicas.len();
        if n == 0 {
            return Err(ClientError::Integrity(format!("inode {} has no live replica", grant.attr.ino)));
        }
        let mut last = None;
        for i in 0..n {
            let idx = (self.prefer + i) % n;
            let loc: &ServerLoc = &grant.replicas[idx];
            counters.bump("data.read");
            match open_at(dialer, loc, cap, offset, len).await {
                Ok(recv) => {
                    self.prefer = idx;
                    return Ok(Stream { recv, pos: offset, end: offset + len });
                }
                Err(e) => {
                    tracing::debug!(host = %loc.host, "read stream failed: {e}");
                    if !matches!(e, ClientError::Call(CallError::Remote(_))) {
                        dialer.forget(&PeerAddr { addr: loc.addr, name: loc.host.clone() }).await;
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Integrity("no replica answered".into())))
    }
}

async fn open_at(
    dialer: &Dialer,
    loc: &ServerLoc,
    cap: &fs_proto::SignedCapability,
    offset: u64,
    len: u64,
) -> Result<quinn::RecvStream, ClientError> {
    let peer = PeerAddr { addr: loc.addr, name: loc.host.clone() };
    let conn = dialer.connect(&peer).await?;
    let (mut send, mut recv) = request(&conn, &ServerRequest::Read { cap: cap.clone(), offset, len })
        .await
        .map_err(|e| proto(&loc.host, e))?;
    let _ = send.finish();
    match reply::<ServerResponse>(&mut recv).await.map_err(|e| proto(&loc.host, e))? {
        Ok(ServerResponse::Reading { .. }) => Ok(recv),
        Ok(other) => Err(ClientError::Unexpected(format!("{other:?}"))),
        Err(e) => Err(ClientError::Call(CallError::Remote(e))),
    }
}

/// Shared handle to a reader.
pub type SharedReader = Arc<tokio::sync::Mutex<Reader>>;
