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
//!
//! Between reads a stream is parked in one bounded lot ([`PARKED_MAX`]
//! streams, [`PARKED_BYTES`] of data they may still deliver), not in its
//! handle: a stream's undelivered bytes hold the connection's flow-control
//! credit, and a program that keeps hundreds of files open after reading a
//! little of each (fsx leaks a mapping, and so an open file, per mapped
//! read) would otherwise use up the connection's window, and every transfer
//! with that server, commits included, would wait for it. The oldest parked
//! stream is dropped (credit returned); its handle opens a new one if it
//! reads again.
//!
//! A file with more than one replica does not wait for a silent server:
//! a stream that brings nothing for [`STALL`] (or a server that does not
//! answer an open within it) is dropped and the read goes on from the next
//! replica, where it stopped, instead of waiting out the connection's idle
//! timeout. A file with one replica has nowhere else to go and waits.

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

/// Most read streams parked between reads, over every handle.
pub const PARKED_MAX: usize = 32;
/// Most bytes parked streams may still deliver (counting each stream as at
/// most [`STREAM_CREDIT`]): well under a connection's window.
pub const PARKED_BYTES: u64 = 32 << 20;
/// What one stream can have in flight towards us at most (the default
/// stream window).
const STREAM_CREDIT: u64 = 24 << 20;
/// Silence after which a read moves to another replica (if there is one):
/// above a keep-alive interval, well under the idle timeout.
pub const STALL: std::time::Duration = std::time::Duration::from_secs(3);

/// `f`, bounded by [`STALL`] when `bounded`; `None` if it took longer.
async fn within<T>(bounded: bool, f: impl std::future::Future<Output = T>) -> Option<T> {
    if bounded {
        tokio::time::timeout(STALL, f).await.ok()
    } else {
        Some(f.await)
    }
}

struct Stream {
    recv: quinn::RecvStream,
    /// Offset of the next byte the stream delivers.
    pos: u64,
    /// Offset where the stream ends.
    end: u64,
}

impl Stream {
    /// Bytes the stream may still hold or bring.
    fn credit(&self) -> u64 {
        self.end.saturating_sub(self.pos).min(STREAM_CREDIT)
    }
}

/// Streams parked between reads, oldest first, with their tickets.
#[derive(Default)]
struct Lot {
    next: u64,
    parked: VecDeque<(u64, Stream)>,
}

static LOT: std::sync::Mutex<Lot> = std::sync::Mutex::new(Lot { next: 0, parked: VecDeque::new() });

fn lot() -> std::sync::MutexGuard<'static, Lot> {
    LOT.lock().unwrap_or_else(|p| p.into_inner())
}

/// Park `s`; the oldest parked streams go while the lot is over its bounds.
fn park(s: Stream) -> u64 {
    let mut lot = lot();
    lot.next += 1;
    let id = lot.next;
    lot.parked.push_back((id, s));
    let mut bytes: u64 = lot.parked.iter().map(|(_, s)| s.credit()).sum();
    while lot.parked.len() > PARKED_MAX || (bytes > PARKED_BYTES && lot.parked.len() > 1) {
        match lot.parked.pop_front() {
            Some((_, old)) => bytes -= old.credit(),
            None => break,
        }
    }
    id
}

/// Take back the stream parked under `id`, if it is still there.
fn unpark(id: u64) -> Option<Stream> {
    let mut lot = lot();
    let at = lot.parked.iter().position(|(i, _)| *i == id)?;
    lot.parked.remove(at).map(|(_, s)| s)
}

/// How many streams are parked (tests).
pub fn parked() -> usize {
    lot().parked.len()
}

/// Read state of one handle.
#[derive(Default)]
pub struct Reader {
    /// The stream in hand during a read.
    stream: Option<Stream>,
    /// Ticket of the stream parked between reads.
    ticket: Option<u64>,
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
        if let Some(id) = self.ticket.take() {
            self.stream = unpark(id);
        }
        let r = self.read_in_hand(dialer, counters, grant, offset, len).await;
        if let Some(s) = self.stream.take() {
            self.ticket = Some(park(s));
        }
        r
    }

    async fn read_in_hand(
        &mut self,
        dialer: &Dialer,
        counters: &Counters,
        grant: &ReadGrant,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, ClientError> {
        if self.gen != grant.attr.gen {
            // A new generation: nothing read from the old one may be served.
            *self = Reader::default();
            self.gen = grant.attr.gen;
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
            let elsewhere = grant.replicas.len() > 1;
            let Some(s) = self.stream.as_mut() else { continue };
            let Some(got) = within(elsewhere, s.recv.read_chunk(1 << 20, true)).await else {
                // Silent: go on from the next replica where this one stopped.
                tracing::debug!(ino = grant.attr.ino, at = s.pos, "read stream stalled; trying another replica");
                counters.bump("data.read_stalled");
                self.stream = None;
                self.prefer = (self.prefer + 1) % grant.replicas.len();
                continue;
            };
            let chunk = match got {
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
            let opened = within(n > 1, open_at(dialer, loc, cap, offset, len)).await.unwrap_or_else(|| {
                counters.bump("data.read_stalled");
                Err(proto(&loc.host, format!("no answer within {STALL:?}")))
            });
            match opened {
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

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(id) = self.ticket.take() {
            drop(unpark(id));
        }
    }
}

/// Shared handle to a reader.
pub type SharedReader = Arc<tokio::sync::Mutex<Reader>>;
