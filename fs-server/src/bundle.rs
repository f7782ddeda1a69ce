//! Bundles of new files (see [`fs_proto::bundle`]): one stream carrying
//! many small files, each written as a complete, hashed replica; the spool
//! made durable once for all of them; then one commit forwarded to the meta
//! server, which creates every name together with its data. Also the disk
//! space reservations bundling clients take before acknowledging closes.

use crate::data::{answer, io_to_remote, on_disk, verify_cap};
use crate::node::Ctx;
use crate::replica::{Published, ReplicaError, ReplicaWriter};
use crate::streams::{idle_error, within};
use bytes::Bytes;
use fs_proto::bundle::{stored_cost, BundleCommit, BundleEntry, BundleOp, EntryResult, StoredOp};
use fs_proto::error::quic_codes;
use fs_proto::meta::{MetaRequest, MetaResponse};
use fs_proto::rpc::CallError;
use fs_proto::server::{ServerReply, ServerResponse};
use fs_proto::{Access, Capability, ErrorCode, FileKind, Identity, Ino, RemoteError, SignedCapability};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// The generation a bundled file's replica is (its first).
pub const FIRST_GEN: u64 = 1;
/// Most operations in one bundle.
pub const MAX_ENTRIES: usize = 16_384;
/// Free space never promised to reservations (other writes, file system
/// overhead).
pub const RESERVE_MARGIN: u64 = 1 << 20;
/// What one principal may always reserve, however full the server is
/// (a mount's first reservation).
pub const RESERVE_CHUNK_FLOOR: u64 = 64 << 20;
/// Bytes gathered before handing them to the disk thread.
const BATCH: usize = 1 << 20;

type R<T> = Result<T, RemoteError>;
/// A file the disk thread is sealing: its size, hash and whether this
/// bundle created it, when done.
type Sealing = oneshot::Receiver<Result<Published, ReplicaError>>;

/// Disk space reserved by connections of bundling clients, with the
/// principal (certificate name) each belongs to.
#[derive(Default)]
pub struct Reservations {
    by_conn: Mutex<HashMap<usize, (String, u64)>>,
}

impl Reservations {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<usize, (String, u64)>> {
        self.by_conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Total reserved.
    pub fn total(&self) -> u64 {
        self.map().values().map(|(_, b)| b).sum()
    }

    /// Reserve `bytes` for connection `conn` of principal `who` if `free`
    /// covers every reservation plus the margin, and `who` would hold no
    /// more than half of what the others have not reserved (so one user
    /// cannot take all the space: [`RESERVE_CHUNK_FLOOR`] is always
    /// allowed). Returns the connection's total and whether the connection
    /// is new to the table.
    pub fn reserve(&self, conn: usize, who: &str, bytes: u64, free: u64) -> R<(u64, bool)> {
        let mut m = self.map();
        let total: u64 = m.values().map(|(_, b)| b).sum();
        if total.saturating_add(bytes).saturating_add(RESERVE_MARGIN) > free {
            return Err(RemoteError::new(
                ErrorCode::NoSpace,
                format!("{bytes} bytes wanted, {free} free of which {total} are reserved"),
            ));
        }
        let theirs: u64 = m.values().filter(|(w, _)| w == who).map(|(_, b)| b).sum();
        let open = free.saturating_sub(total - theirs);
        let share = (open / 2).max(RESERVE_CHUNK_FLOOR);
        if theirs.saturating_add(bytes) > share {
            return Err(RemoteError::new(
                ErrorCode::NoSpace,
                format!(
                    "{who} would hold {} bytes of reservations on this server; one user may hold at most half of the {open} bytes others have not reserved",
                    theirs.saturating_add(bytes)
                ),
            ));
        }
        let new = !m.contains_key(&conn);
        let mine = m.entry(conn).or_insert_with(|| (who.to_string(), 0));
        mine.1 += bytes;
        Ok((mine.1, new))
    }

    /// A bundle of `bytes` arrived on `conn`: that much is used.
    pub fn consume(&self, conn: usize, bytes: u64) {
        if let Some((_, r)) = self.map().get_mut(&conn) {
            *r = r.saturating_sub(bytes);
        }
    }

    /// The connection ended: its reservation goes.
    pub fn drop_conn(&self, conn: usize) {
        self.map().remove(&conn);
    }
}

/// Serve `Reserve`.
pub async fn reserve(
    ctx: Arc<Ctx>,
    conn: quinn::Connection,
    peer: &Identity,
    cap: SignedCapability,
    bytes: u64,
    mut send: quinn::SendStream,
) {
    let r = async {
        verify_cap(&ctx, peer, &cap, Access::Bundle)?;
        let c = ctx.clone();
        let (_, free) = tokio::task::spawn_blocking(move || c.spool.usage())
            .await
            .map_err(|e| RemoteError::new(ErrorCode::Internal, e.to_string()))?
            .map_err(|e| RemoteError::new(ErrorCode::Internal, format!("spool usage: {e}")))?;
        let id = conn.stable_id();
        let (mine, new) = ctx.reservations.reserve(id, &peer.name, bytes, free)?;
        if new {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                conn.closed().await;
                ctx.reservations.drop_conn(id);
            });
        }
        debug!(bytes, reserved = mine, "space reserved for bundles");
        Ok(ServerResponse::Reserved { bytes: mine })
    };
    let reply: ServerReply = r.await;
    answer(&mut send, &reply, ctx.streams.idle()).await;
}

/// Serve `WriteBundle`.
pub async fn write_bundle(
    ctx: Arc<Ctx>,
    conn: quinn::Connection,
    peer: &Identity,
    cap: SignedCapability,
    ops: Vec<BundleOp>,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let reply: ServerReply = match bundle(&ctx, &conn, peer, &cap, &ops, &mut recv).await {
        Ok(results) => Ok(ServerResponse::BundleStored(results)),
        Err(e) => {
            debug!("bundle refused: {e}");
            let _ = recv.stop(quic_codes::IO);
            Err(e)
        }
    };
    answer(&mut send, &reply, ctx.streams.idle()).await;
}

enum Disk {
    Begin(Ino),
    Data(u64, Vec<Bytes>),
    End(oneshot::Sender<Result<Published, ReplicaError>>),
}

/// The file a bundle's disk task is writing.
type Current = Option<(Ino, Result<ReplicaWriter, ReplicaError>)>;

/// The disk side of one bundle: one file at a time, each operation one
/// step on the blocking pool, so a bundle waiting for its client holds no
/// blocking thread.
fn disk_thread(ctx: Arc<Ctx>) -> mpsc::Sender<Disk> {
    let (tx, mut rx) = mpsc::channel::<Disk>(8);
    tokio::spawn(async move {
        let mut cur: Current = None;
        while let Some(op) = rx.recv().await {
            // What is queued goes in one step (small files are many
            // operations each).
            let mut ops = vec![op];
            while let Ok(op) = rx.try_recv() {
                ops.push(op);
            }
            let c = ctx.clone();
            let step = on_disk(cur, move |cur| ops.into_iter().for_each(|op| disk_op(&c, cur, op)));
            let Some((back, ())) = step.await else { return };
            cur = back;
        }
        if let Some((_, Ok(w))) = cur.take() {
            tokio::task::spawn_blocking(move || w.abort());
        }
    });
    tx
}

/// One operation of a bundle's disk task.
fn disk_op(ctx: &Ctx, cur: &mut Current, op: Disk) {
    match op {
        Disk::Begin(ino) => {
            if let Some((_, Ok(w))) = cur.take() {
                w.abort();
            }
            *cur = Some((ino, ReplicaWriter::create(ctx.spool.tmp_path(ino, FIRST_GEN))));
        }
        Disk::Data(mut off, pieces) => {
            let failed = match cur {
                Some((_, Ok(w))) => pieces
                    .iter()
                    .try_for_each(|p| {
                        let r = w.write_at(off, p);
                        off += p.len() as u64;
                        r
                    })
                    .err(),
                _ => None,
            };
            if let (Some(e), Some((_, slot))) = (failed, cur.as_mut()) {
                if let Ok(w) = std::mem::replace(slot, Err(e)) {
                    w.abort();
                }
            }
        }
        Disk::End(done) => {
            let r = match cur.take() {
                Some((ino, Ok(w))) => w.finish_unsynced(&ctx.spool.replica_path(ino, FIRST_GEN)),
                Some((_, Err(e))) => Err(e),
                None => Err(ReplicaError::Io {
                    path: ctx.spool.root().to_path_buf(),
                    source: std::io::Error::other("no file begun"),
                }),
            };
            let _ = done.send(r);
        }
    }
}

/// Whether this server takes operation `op` under capability `cap`: a new
/// inode must be one the meta server leased to the bundle's principal
/// (signed into the capability), whatever the meta server later says about
/// the rest; other operations carry no bytes and are the meta server's to
/// check.
fn check_op(cap: &Capability, op: &BundleOp) -> R<()> {
    match op {
        BundleOp::Create(e) => check_entry(cap, e),
        _ => Ok(()),
    }
}

fn check_entry(cap: &Capability, e: &BundleEntry) -> R<()> {
    let bad = |m: &str| Err(RemoteError::new(ErrorCode::InvalidArgument, m.to_string()));
    if e.ino == 0 {
        return bad("inode 0");
    }
    if !cap.covers(e.ino) {
        return Err(RemoteError::new(
            ErrorCode::BadCapability,
            format!("inode {} is not in a range leased to {}", e.ino, cap.principal),
        ));
    }
    match e.kind {
        FileKind::Regular => Ok(()),
        FileKind::Directory | FileKind::Symlink if e.size == 0 => Ok(()),
        FileKind::Directory | FileKind::Symlink => bad("only regular files carry bytes"),
        _ => bad("bundles carry regular files, directories and symlinks"),
    }
}

async fn bundle(
    ctx: &Arc<Ctx>,
    conn: &quinn::Connection,
    peer: &Identity,
    signed: &SignedCapability,
    ops: &[BundleOp],
    recv: &mut quinn::RecvStream,
) -> R<Vec<EntryResult>> {
    let cap = &verify_cap(ctx, peer, signed, Access::Bundle)?;
    if ops.len() > MAX_ENTRIES {
        return Err(RemoteError::new(ErrorCode::TooLarge, format!("more than {MAX_ENTRIES} operations")));
    }
    let disk = disk_thread(ctx.clone());
    // Every wait for the client is bounded: a bundle silent for the idle
    // bound ends, and the file it was writing goes with the disk task.
    let idle = ctx.streams.idle();
    let gone = || RemoteError::new(ErrorCode::Internal, "disk thread stopped");
    // Per entry: Ok(Some(receiver)) for a file being stored, Ok(None) for
    // nothing to store, Err for a refused entry.
    let mut stored: Vec<R<Option<Sealing>>> = Vec::new();
    let mut cost = 0u64;
    let received: R<()> = async {
        for op in ops {
            let ok = check_op(cap, op);
            let size = op.data_len();
            if let BundleOp::Create(e) = op {
                if e.kind == FileKind::Regular {
                    cost += stored_cost(size);
                }
            }
            let (ino, size) = match op {
                BundleOp::Create(e) if e.kind == FileKind::Regular && size > 0 => (e.ino, size),
                _ => {
                    stored.push(ok.map(|_| None));
                    continue;
                }
            };
            if ok.is_ok() {
                disk.send(Disk::Begin(ino)).await.map_err(|_| gone())?;
            }
            let mut left = size;
            let mut off = 0u64;
            while left > 0 {
                let mut pieces = Vec::new();
                let mut got = 0usize;
                while left > 0 && got < BATCH {
                    let chunk = within(idle, recv.read_chunk(left.min(usize::MAX as u64) as usize, true))
                        .await
                        .ok_or_else(|| idle_error("bundle", idle))?
                        .map_err(|er| RemoteError::new(ErrorCode::Interrupted, format!("bundle stream broken: {er}")))?
                        .ok_or_else(|| RemoteError::new(ErrorCode::Interrupted, "bundle ended early"))?;
                    got += chunk.bytes.len();
                    left -= chunk.bytes.len() as u64;
                    pieces.push(chunk.bytes);
                }
                ctx.bytes_in.fetch_add(got as u64, Ordering::Relaxed);
                if ok.is_ok() {
                    disk.send(Disk::Data(off, pieces)).await.map_err(|_| gone())?;
                }
                off += got as u64;
            }
            stored.push(match ok {
                Ok(()) => {
                    let (tx, rx) = oneshot::channel();
                    disk.send(Disk::End(tx)).await.map_err(|_| gone())?;
                    Ok(Some(rx))
                }
                Err(e) => Err(e),
            });
        }
        Ok(())
    }
    .await;
    drop(disk);
    if let Err(e) = received {
        // The stream broke or went silent: the files this bundle already
        // gave their final names are uncommitted orphans; remove them (only
        // those it created). Its unfinished file goes with the disk task.
        for (op, s) in ops.iter().zip(stored) {
            if let (Some(ino), Ok(Some(rx))) = (op.created(), s) {
                if let Ok(Ok(p)) = rx.await {
                    if p.created {
                        let _ = ctx.spool.delete(ino, FIRST_GEN);
                    }
                }
            }
        }
        return Err(e);
    }
    ctx.reservations.consume(conn.stable_id(), cost);
    // Every file written (not yet durable): collect hashes. `created` lists
    // the replicas this bundle put in the spool: the only ones it may ever
    // delete (an identical replica found in place, from an earlier attempt
    // of the same bundle, may already be committed).
    let mut forward = Vec::new();
    let mut results: Vec<Option<EntryResult>> = Vec::with_capacity(ops.len());
    let mut created: HashSet<Ino> = HashSet::new();
    for (op, s) in ops.iter().zip(stored) {
        let (ino, size) = (op.created().unwrap_or(0), op.data_len());
        let hash = match s {
            Err(er) => {
                results.push(Some(Err(er)));
                continue;
            }
            Ok(None) => None,
            Ok(Some(rx)) => match rx.await {
                Ok(Ok(p)) if p.size == size => {
                    if p.created {
                        created.insert(ino);
                    }
                    Some(p.hash)
                }
                Ok(Ok(p)) => {
                    if p.created {
                        let _ = ctx.spool.delete(ino, FIRST_GEN);
                    }
                    let m = format!("stored {} bytes of {size}", p.size);
                    results.push(Some(Err(RemoteError::new(ErrorCode::Internal, m))));
                    continue;
                }
                Ok(Err(er)) => {
                    results.push(Some(Err(io_to_remote(&er))));
                    continue;
                }
                Err(_) => {
                    results.push(Some(Err(gone())));
                    continue;
                }
            },
        };
        results.push(None);
        forward.push(StoredOp { op: op.clone(), hash });
    }
    if !created.is_empty() {
        let c = ctx.clone();
        let synced = tokio::task::spawn_blocking(move || sync_spool(c.spool.root()))
            .await
            .map_err(|e| RemoteError::new(ErrorCode::Internal, e.to_string()))?;
        if let Err(e) = synced {
            delete_created(ctx, &created);
            warn!("syncing the spool: {e}");
            return Err(RemoteError::new(ErrorCode::Internal, format!("file server spool could not be synced: {e}")));
        }
    }
    let committed = if forward.is_empty() {
        Vec::new()
    } else {
        let n = forward.len();
        let req = MetaRequest::CommitBundle(BundleCommit { cap: signed.clone(), ops: forward.clone() });
        let answer = ctx.meta.call(req).await;
        // Fault tests: die after the commit, before the client hears of it.
        fs_proto::process::crash_point("server.bundle.committed");
        match answer {
            Ok(MetaResponse::Bundle(r)) if r.len() == n => r,
            Ok(other) => {
                // Not an answer to this commit: it may or may not have
                // happened, so nothing is deleted (see below).
                warn!("unexpected bundle commit reply {other:?}");
                vec![Err(RemoteError::new(ErrorCode::Unavailable, "stored, commit unknown: unexpected reply")); n]
            }
            Err(CallError::Remote(e)) => {
                // The meta server refused the whole bundle: nothing of it
                // was committed.
                delete_created(ctx, &created);
                vec![e; n].into_iter().map(Err).collect()
            }
            Err(e) => {
                // The commit may or may not have happened: keep the files
                // (an unregistered one is removed when the spool is next
                // reconciled with the meta server; a retry of the bundle
                // finds them in place).
                warn!("bundle stored but its commit is unknown: {e}");
                let m = format!("stored, commit unknown: {e}");
                vec![Err(RemoteError::new(ErrorCode::Unavailable, m)); n]
            }
        }
    };
    let mut committed = committed.into_iter();
    let mut out = Vec::with_capacity(ops.len());
    for (op, r) in ops.iter().zip(results) {
        out.push(match r {
            Some(r) => r,
            None => {
                let r = committed
                    .next()
                    .unwrap_or_else(|| Err(RemoteError::new(ErrorCode::Internal, "missing commit result")));
                // Refused by the meta server (not merely unanswered): a
                // replica this bundle created is an orphan.
                if let (Err(er), Some(ino)) = (&r, op.created()) {
                    if er.code != ErrorCode::Unavailable && created.contains(&ino) {
                        let _ = ctx.spool.delete(ino, FIRST_GEN);
                    }
                }
                r
            }
        });
    }
    debug!(ops = out.len(), ok = out.iter().filter(|r| r.is_ok()).count(), "bundle done");
    Ok(out)
}

/// Delete the replicas this bundle created (never one it found in place).
fn delete_created(ctx: &Ctx, created: &HashSet<Ino>) {
    for ino in created {
        let _ = ctx.spool.delete(*ino, FIRST_GEN);
    }
}

/// Make everything written to the spool's file system durable (one
/// `syncfs` for a whole bundle instead of two fsyncs per file).
fn sync_spool(root: &std::path::Path) -> std::io::Result<()> {
    let dir = std::fs::File::open(root)?;
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open file descriptor.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_by_free_space() {
        let r = Reservations::default();
        let free = 10 << 20;
        assert_eq!(r.reserve(1, "a", 4 << 20, free).unwrap(), (4 << 20, true));
        assert_eq!(r.reserve(1, "a", 1 << 20, free).unwrap(), (5 << 20, false));
        assert_eq!(r.reserve(2, "b", 5 << 20, free).unwrap_err().code, ErrorCode::NoSpace, "5 + 5 + margin > 10");
        r.consume(1, 3 << 20);
        assert_eq!(r.reserve(2, "b", 5 << 20, free).unwrap(), (5 << 20, true));
        r.drop_conn(1);
        r.drop_conn(2);
        assert_eq!(r.total(), 0);
    }

    #[test]
    fn one_principal_holds_at_most_half_of_what_is_open() {
        let r = Reservations::default();
        let free = 1 << 30;
        assert_eq!(r.reserve(1, "m", 900 << 20, free).unwrap_err().code, ErrorCode::NoSpace, "more than half");
        assert!(r.reserve(1, "m", 500 << 20, free).is_ok());
        assert!(r.reserve(2, "m", 100 << 20, free).is_err(), "her other connections count too");
        assert!(r.reserve(3, "a", 200 << 20, free).is_ok(), "another user still gets space");
        let nearly_full = Reservations::default();
        assert!(nearly_full.reserve(4, "c", 64 << 20, 100 << 20).is_ok(), "the floor, on a nearly full server");
    }
}
