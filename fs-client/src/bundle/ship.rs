//! Sending one bundle: a `WriteBundle` stream to the file server the meta
//! server named, carrying the entries and then the bytes of every regular
//! file in order; the server answers once the bundle is committed. Every
//! file's BLAKE3 is computed as it is sent and compared with what the
//! server stored.

use crate::counters::Counters;
use crate::error::ClientError;
use crate::mount::dirty::{Dirty, Piece};
use bytes::Bytes;
use fs_proto::bundle::{BundleEntry, BundleOp, EntryResult};
use fs_proto::error::quic_codes;
use fs_proto::rpc::{reply, request, CallError, Dialer, PeerAddr};
use fs_proto::server::{ServerRequest, ServerResponse};
use fs_proto::{hash_hex, ErrorCode, RemoteError, ServerLoc, SignedCapability};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Bytes read from a source per write.
const PIECE: u64 = 1 << 20;

/// Where the bytes of a regular entry come from.
#[derive(Clone)]
pub enum Source {
    /// In memory.
    Bytes(Bytes),
    /// A local file (its first `size` bytes; it must not shrink meanwhile).
    Path(PathBuf),
    /// The spill file of data written through the mount.
    Dirty(Arc<Dirty>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Bytes(b) => write!(f, "Bytes({})", b.len()),
            Source::Path(p) => write!(f, "Path({})", p.display()),
            Source::Dirty(d) => write!(f, "Dirty({})", d.size),
        }
    }
}

impl Source {
    /// All `size` bytes (a small file just committed, kept to serve this
    /// mount's own reads of it).
    pub fn read_whole(&self, size: u64) -> std::io::Result<Bytes> {
        let short = |n: usize| std::io::Error::other(format!("source holds {n} bytes, not {size}"));
        match self {
            Source::Bytes(b) if b.len() as u64 == size => Ok(b.clone()),
            Source::Bytes(b) => Err(short(b.len())),
            Source::Path(p) => {
                use std::io::Read;
                let mut out = Vec::with_capacity(size as usize);
                std::fs::File::open(p)?.take(size).read_to_end(&mut out)?;
                if out.len() as u64 != size {
                    return Err(short(out.len()));
                }
                Ok(Bytes::from(out))
            }
            Source::Dirty(d) => {
                let mut out = Vec::with_capacity(size as usize);
                for piece in d.plan(0, size) {
                    match piece {
                        Piece::Spill(a, b) => out.extend(d.read_spill(a, b - a)?),
                        Piece::Zero(a, b) | Piece::Base(a, b) => out.resize(out.len() + (b - a) as usize, 0),
                    }
                }
                Ok(Bytes::from(out))
            }
        }
    }
}

/// One operation to send, with its bytes (a new regular file with a size).
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The operation.
    pub op: BundleOp,
    /// Its bytes.
    pub source: Option<Source>,
}

impl Outgoing {
    /// A new entry, with its bytes.
    pub fn create(entry: BundleEntry, source: Option<Source>) -> Self {
        Outgoing { op: BundleOp::Create(entry), source }
    }

    /// What it is about, for messages.
    fn name(&self) -> String {
        match &self.op {
            BundleOp::Create(e) => e.name.clone(),
            other => format!("{other:?}"),
        }
    }
}

fn proto(host: &str, e: impl std::fmt::Display) -> ClientError {
    ClientError::Call(CallError::Connect { peer: host.to_string(), reason: e.to_string() })
}

/// Send `items` as one bundle to `target` and wait (at most `bound`) for
/// the per-entry results.
pub async fn ship(
    dialer: &Dialer,
    target: &ServerLoc,
    cap: &SignedCapability,
    items: &[Outgoing],
    counters: &Counters,
    bound: Duration,
) -> Result<Vec<EntryResult>, ClientError> {
    let host = target.host.as_str();
    let work = async {
        counters.bump("data.bundle");
        let peer = PeerAddr { addr: target.addr, name: target.host.clone() };
        let conn = dialer.connect(&peer).await?;
        let ops: Vec<BundleOp> = items.iter().map(|i| i.op.clone()).collect();
        let (mut send, mut recv) =
            request(&conn, &ServerRequest::WriteBundle { cap: cap.clone(), ops }).await.map_err(|e| proto(host, e))?;
        let mut hashes = Vec::with_capacity(items.len());
        let sent: Result<(), String> = async {
            for it in items {
                hashes.push(send_one(&mut send, it, counters).await?);
            }
            send.finish().map_err(|e| e.to_string())
        }
        .await;
        if let Err(e) = &sent {
            if e.starts_with("source") {
                let _ = send.reset(quic_codes::IO);
                return Err(ClientError::Local {
                    path: "bundle source".into(),
                    source: std::io::Error::other(e.clone()),
                });
            }
        }
        let answer = reply::<ServerResponse>(&mut recv).await;
        let results = match (sent, answer) {
            (_, Ok(Err(remote))) => return Err(ClientError::Call(CallError::Remote(remote))),
            (Err(e), _) => return Err(proto(host, e)),
            (Ok(()), Err(e)) => return Err(proto(host, e)),
            (Ok(()), Ok(Ok(ServerResponse::BundleStored(r)))) if r.len() == items.len() => r,
            (Ok(()), Ok(Ok(other))) => return Err(ClientError::Unexpected(format!("{other:?}"))),
        };
        Ok(check(host, items, &hashes, results))
    };
    match tokio::time::timeout(bound, work).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Call(CallError::Timeout { peer: host.to_string(), secs: bound.as_secs() })),
    }
}

/// Compare what the server stored with what was sent.
fn check(host: &str, items: &[Outgoing], hashes: &[Option<[u8; 32]>], results: Vec<EntryResult>) -> Vec<EntryResult> {
    items
        .iter()
        .zip(hashes)
        .zip(results)
        .map(|((it, mine), r)| match (r, mine) {
            (Ok(a), Some(h)) if a.hash != Some(*h) || a.size != it.op.data_len() => Err(RemoteError::new(
                ErrorCode::Corrupt,
                format!(
                    "{host} stored {} bytes hashing {} for {}, but {} bytes hashing {} were sent",
                    a.size,
                    a.hash.map(|x| hash_hex(&x)).unwrap_or_default(),
                    it.name(),
                    it.op.data_len(),
                    hash_hex(h)
                ),
            )),
            (r, _) => r,
        })
        .collect()
}

/// Stream one entry's bytes; its BLAKE3 (None when it carries none).
async fn send_one(
    send: &mut quinn::SendStream,
    it: &Outgoing,
    counters: &Counters,
) -> Result<Option<[u8; 32]>, String> {
    let size = it.op.data_len();
    if size == 0 {
        return Ok(None);
    }
    let mut hasher = blake3::Hasher::new();
    let put = |b: &[u8], hasher: &mut blake3::Hasher| {
        hasher.update(b);
        counters.add("data.bytes_out", b.len() as u64);
    };
    match &it.source {
        None => return Err(format!("source of {} missing", it.name())),
        Some(Source::Bytes(b)) => {
            if b.len() as u64 != size {
                return Err(format!("source of {} holds {} bytes, not {size}", it.name(), b.len()));
            }
            put(b, &mut hasher);
            send.write_all(b).await.map_err(|e| e.to_string())?;
        }
        Some(Source::Path(p)) => {
            let mut f = tokio::fs::File::open(p).await.map_err(|e| format!("source {}: {e}", p.display()))?;
            let mut buf = vec![0u8; PIECE as usize];
            let mut left = size;
            while left > 0 {
                let want = left.min(PIECE) as usize;
                let n = f.read(&mut buf[..want]).await.map_err(|e| format!("source {}: {e}", p.display()))?;
                if n == 0 {
                    return Err(format!("source {} shrank while it was sent", p.display()));
                }
                put(&buf[..n], &mut hasher);
                send.write_all(&buf[..n]).await.map_err(|e| e.to_string())?;
                left -= n as u64;
            }
        }
        Some(Source::Dirty(d)) => {
            for piece in d.plan(0, size) {
                let (a, b, spill) = match piece {
                    Piece::Spill(a, b) => (a, b, true),
                    Piece::Zero(a, b) | Piece::Base(a, b) => (a, b, false),
                };
                let mut off = a;
                while off < b {
                    let n = (b - off).min(PIECE);
                    let bytes = if spill {
                        d.read_spill(off, n).map_err(|e| format!("source (spill file): {e}"))?
                    } else {
                        vec![0u8; n as usize]
                    };
                    put(&bytes, &mut hasher);
                    send.write_all(&bytes).await.map_err(|e| e.to_string())?;
                    off += n;
                }
            }
        }
    }
    Ok(Some(*hasher.finalize().as_bytes()))
}
