//! Small-file prefetch on read: reading through a directory of small files
//! (`cp -r`, `tar c` out of the mount) moves them in bundles, one
//! `ServerRequest::ReadMany` stream each, instead of one read request (and
//! round trip) per file.
//!
//! When a small file ([`SMALL`]) of a directory this mount listed is opened
//! for reading and its bytes are not here, the open's `OpenRead` goes out as
//! a `Batch` with `OpenRead`s of the next small files of that directory (in
//! listing order, not held or being fetched yet; up to [`BUNDLE_FILES`] and
//! [`BUNDLE_BYTES`]); the grants' capabilities go to the file server that
//! holds the opened file in one `ReadMany`. Files arrive one after another
//! on that stream, each checked against its grant's size and BLAKE3 before
//! it is kept ([`Prefetch`], bounded by [`MAX_BYTES`]).
//!
//! Close-to-open is unchanged: every open still asks the meta server for
//! the current generation, and a kept body is served only to an open whose
//! grant names the same inode, generation and hash. With `-o openlease` an
//! open of a file whose body is held under a live lease on its attributes
//! (same generation and hash, no invalidation since) uses the grant the
//! body came with and sends nothing (AFS-style callbacks: a change made
//! elsewhere is seen once its invalidation has arrived). Invalidations of an
//! inode drop its body, losing the subscription drops them all; otherwise
//! the oldest go first when [`MAX_BYTES`] would be exceeded.

use crate::counters::Counters;
use crate::error::ClientError;
use bytes::Bytes;
use fs_proto::meta::ReadGrant;
use fs_proto::rpc::{reply, request, CallError, Dialer, PeerAddr};
use fs_proto::server::{ServerRequest, ServerResponse};
use fs_proto::{DirEntry, FileKind, Gen, Hash, Ino, ServerLoc};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// Files up to this size are prefetched.
pub const SMALL: u64 = 1 << 20;
/// Most files in one bundle.
pub const BUNDLE_FILES: usize = 64;
/// Most bytes in one bundle (by listed sizes).
pub const BUNDLE_BYTES: u64 = 16 << 20;
/// Most bytes kept or in flight.
pub const MAX_BYTES: u64 = 64 << 20;
/// Directories whose listing order is remembered.
pub const MAX_DIRS: usize = 256;
/// A bundle stream may take this long plus [`BUNDLE_BYTES`] at 4 MiB/s.
const BOUND: Duration = Duration::from_secs(10);

/// What a waiting reader learns: the verified bytes, or None (failed).
type Outcome = Option<Bytes>;

struct Slot {
    gen: Gen,
    hash: Hash,
    size: u64,
    rx: watch::Receiver<Option<Outcome>>,
    /// The grant the body was fetched under.
    grant: ReadGrant,
}

#[derive(Default)]
struct State {
    /// Regular small files of recently listed directories, in listing order.
    order: HashMap<Ino, Vec<(Ino, u64)>>,
    /// Listed directories, oldest first.
    dirs: VecDeque<Ino>,
    /// Where a file sits in a listing: (directory, index).
    place: HashMap<Ino, (Ino, usize)>,
    /// Bodies kept or being fetched.
    slots: HashMap<Ino, Slot>,
    /// Slots in the order they were made (oldest evicted first).
    fifo: VecDeque<Ino>,
    /// Bytes of the slots.
    bytes: u64,
}

impl State {
    fn drop_slot(&mut self, ino: Ino) {
        if let Some(s) = self.slots.remove(&ino) {
            self.bytes -= s.size;
        }
    }

    fn forget_dir(&mut self, dir: Ino) {
        if let Some(files) = self.order.remove(&dir) {
            for (ino, _) in files {
                if self.place.get(&ino).is_some_and(|(d, _)| *d == dir) {
                    self.place.remove(&ino);
                }
            }
        }
    }

    /// Make room for `want` bytes by dropping the oldest finished bodies.
    fn room(&mut self, want: u64) -> bool {
        let mut tries = self.fifo.len();
        while self.bytes + want > MAX_BYTES && tries > 0 {
            tries -= 1;
            let Some(ino) = self.fifo.pop_front() else { break };
            let done = self.slots.get(&ino).map(|s| s.rx.borrow().is_some());
            match done {
                Some(true) => self.drop_slot(ino),
                Some(false) => self.fifo.push_back(ino),
                None => {}
            }
        }
        self.bytes + want <= MAX_BYTES
    }
}

/// One file of a bundle being fetched.
pub struct Wanted {
    grant: ReadGrant,
    tx: watch::Sender<Option<Outcome>>,
}

/// The prefetched bodies of one mount.
#[derive(Default)]
pub struct Prefetch {
    state: Mutex<State>,
}

fn small(size: u64) -> bool {
    size > 0 && size <= SMALL
}

impl Prefetch {
    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remember the order of the small regular files of a listing.
    pub fn listed(&self, dir: Ino, entries: &[DirEntry]) {
        let files: Vec<(Ino, u64)> = entries
            .iter()
            .filter(|e| e.kind == FileKind::Regular)
            .filter_map(|e| e.attr.as_ref().map(|a| (e.ino, a.size)))
            .filter(|(_, size)| small(*size))
            .collect();
        let mut st = self.st();
        st.forget_dir(dir);
        st.dirs.retain(|d| *d != dir);
        if files.is_empty() {
            return;
        }
        for (i, (ino, _)) in files.iter().enumerate() {
            st.place.insert(*ino, (dir, i));
        }
        st.order.insert(dir, files);
        st.dirs.push_back(dir);
        while st.dirs.len() > MAX_DIRS {
            if let Some(old) = st.dirs.pop_front() {
                st.forget_dir(old);
            }
        }
    }

    /// Files to ask grants for along with opening `ino`: the next small
    /// files of its directory not held or fetched yet. Empty when `ino`
    /// itself is held, being fetched, or not a listed small file.
    pub fn candidates(&self, ino: Ino) -> Vec<Ino> {
        let st = self.st();
        if st.slots.contains_key(&ino) {
            return Vec::new();
        }
        let Some((dir, at)) = st.place.get(&ino).copied() else { return Vec::new() };
        let Some(files) = st.order.get(&dir) else { return Vec::new() };
        let mut bytes = files.get(at).map_or(0, |(_, s)| *s);
        let mut out = Vec::new();
        for (f, size) in files.iter().skip(at + 1) {
            if out.len() + 1 >= BUNDLE_FILES || bytes + size > BUNDLE_BYTES {
                break;
            }
            if st.slots.contains_key(f) {
                continue;
            }
            bytes += size;
            out.push(*f);
        }
        out
    }

    /// Register the files of a bundle about to be fetched (those not held
    /// already, small, with a capability and hash, while room lasts).
    pub fn claim(&self, grants: Vec<ReadGrant>) -> Vec<Wanted> {
        let mut st = self.st();
        let mut out = Vec::new();
        for g in grants {
            let a = &g.attr;
            let (Some(hash), Some(_)) = (a.hash, g.cap.as_ref()) else { continue };
            if !small(a.size) || g.replicas.is_empty() {
                continue;
            }
            if st.slots.get(&a.ino).is_some_and(|s| s.gen == a.gen && s.hash == hash) {
                continue;
            }
            st.drop_slot(a.ino);
            if !st.room(a.size) {
                break;
            }
            let (tx, rx) = watch::channel(None);
            st.slots.insert(a.ino, Slot { gen: a.gen, hash, size: a.size, rx, grant: g.clone() });
            st.fifo.push_back(a.ino);
            st.bytes += a.size;
            if st.fifo.len() > 2 * st.slots.len() + 64 {
                let State { fifo, slots, .. } = &mut *st;
                fifo.retain(|i| slots.contains_key(i));
            }
            out.push(Wanted { grant: g, tx });
        }
        out
    }

    /// The body of the generation `grant` names, if it is held or being
    /// fetched (waiting for it, bounded); None: read it the usual way.
    pub async fn body(&self, grant: &ReadGrant) -> Option<Bytes> {
        let a = &grant.attr;
        let mut rx = {
            let st = self.st();
            let s = st.slots.get(&a.ino)?;
            if s.gen != a.gen || Some(s.hash) != a.hash {
                return None;
            }
            s.rx.clone()
        };
        let wait = async {
            loop {
                if let Some(o) = rx.borrow_and_update().clone() {
                    return o;
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        };
        tokio::time::timeout(bound(BUNDLE_BYTES), wait).await.ok().flatten()
    }

    /// The grant a held (or arriving) body of `ino` at `gen` with `hash`
    /// was fetched under, for `-o openlease` opens.
    pub fn grant(&self, ino: Ino, gen: Gen, hash: Option<Hash>) -> Option<ReadGrant> {
        let st = self.st();
        let s = st.slots.get(&ino)?;
        let failed = matches!(*s.rx.borrow(), Some(None));
        (s.gen == gen && Some(s.hash) == hash && !failed).then(|| s.grant.clone())
    }

    /// Drop what is held of `ino` (invalidated).
    pub fn forget(&self, ino: Ino) {
        let mut st = self.st();
        let done = st.slots.get(&ino).is_some_and(|s| s.rx.borrow().is_some());
        if done {
            st.drop_slot(ino);
        }
    }

    /// Drop every held body and listing order (subscription lost or reset).
    pub fn clear(&self) {
        let mut st = self.st();
        let done: Vec<Ino> = st.slots.iter().filter(|(_, s)| s.rx.borrow().is_some()).map(|(i, _)| *i).collect();
        for ino in done {
            st.drop_slot(ino);
        }
        st.order.clear();
        st.place.clear();
        st.dirs.clear();
    }

    /// Bytes held or in flight.
    pub fn bytes(&self) -> u64 {
        self.st().bytes
    }

    /// A failed file: its slot goes, so the next read asks anew.
    fn failed(&self, w: Wanted) {
        let ino = w.grant.attr.ino;
        let _ = w.tx.send(Some(None));
        let mut st = self.st();
        if st.slots.get(&ino).is_some_and(|s| s.gen == w.grant.attr.gen) {
            st.drop_slot(ino);
        }
    }
}

fn bound(bytes: u64) -> Duration {
    BOUND + Duration::from_secs(bytes / (4 << 20))
}

/// Fetch a bundle: the files go to the first replica of the first file in
/// one `ReadMany`; files that server does not hold are left out (their
/// readers read them the usual way).
#[tracing::instrument(skip_all, fields(files = wanted.len()))]
pub async fn fetch(prefetch: Arc<Prefetch>, dialer: Dialer, counters: Arc<Counters>, wanted: Vec<Wanted>) {
    let Some(loc) = wanted.first().and_then(|w| w.grant.replicas.first()).cloned() else { return };
    let (here, elsewhere): (Vec<Wanted>, Vec<Wanted>) =
        wanted.into_iter().partition(|w| w.grant.replicas.iter().any(|r| r.host == loc.host));
    for w in elsewhere {
        prefetch.failed(w);
    }
    let bytes: u64 = here.iter().map(|w| w.grant.attr.size).sum();
    let mut left = here.into_iter();
    let work = read_many(&loc, &dialer, &counters, &prefetch, &mut left);
    match tokio::time::timeout(bound(bytes), work).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(host = %loc.host, "prefetch stream failed: {e}"),
        Err(_) => tracing::debug!(host = %loc.host, "prefetch stream took too long"),
    }
    for w in left {
        prefetch.failed(w);
    }
}

async fn read_many(
    loc: &ServerLoc,
    dialer: &Dialer,
    counters: &Counters,
    prefetch: &Prefetch,
    left: &mut std::vec::IntoIter<Wanted>,
) -> Result<(), ClientError> {
    let caps = left.as_slice().iter().filter_map(|w| w.grant.cap.clone()).collect::<Vec<_>>();
    let peer = PeerAddr { addr: loc.addr, name: loc.host.clone() };
    let proto = |e: &dyn std::fmt::Display| {
        ClientError::Call(CallError::Connect { peer: loc.host.clone(), reason: e.to_string() })
    };
    let conn = dialer.connect(&peer).await?;
    counters.bump("data.read_many");
    let (mut send, mut recv) = request(&conn, &ServerRequest::ReadMany { caps }).await.map_err(|e| proto(&e))?;
    let _ = send.finish();
    for w in left.by_ref() {
        let a = w.grant.attr.clone();
        let len = match reply::<ServerResponse>(&mut recv).await.map_err(|e| proto(&e))? {
            Ok(ServerResponse::Reading { len, .. }) => len,
            Ok(other) => return Err(ClientError::Unexpected(format!("{other:?}"))),
            Err(e) => {
                tracing::debug!(ino = a.ino, "not prefetched: {e}");
                prefetch.failed(w);
                continue;
            }
        };
        if len != a.size {
            prefetch.failed(w);
            return Err(ClientError::Integrity(format!("inode {} came with {len} bytes, not {}", a.ino, a.size)));
        }
        let mut buf = vec![0u8; len as usize];
        if let Err(e) = recv.read_exact(&mut buf).await {
            prefetch.failed(w);
            return Err(proto(&e));
        }
        counters.add("data.bytes_in", len);
        if Some(*blake3::hash(&buf).as_bytes()) != a.hash {
            prefetch.failed(w);
            return Err(ClientError::Integrity(format!("inode {} failed its end-to-end hash check", a.ino)));
        }
        tracing::debug!(ino = a.ino, gen = a.gen, len, "prefetched");
        let _ = w.tx.send(Some(Some(Bytes::from(buf))));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fs_proto::{Attr, Timestamp};

    fn attr(ino: Ino, size: u64, gen: Gen) -> Attr {
        let t = Timestamp::default();
        Attr {
            ino,
            kind: FileKind::Regular,
            perm: 0o644,
            nlink: 1,
            uid: 1,
            gid: 1,
            size,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            rdev: 0,
            gen,
            hash: Some([gen as u8; 32]),
            ncopy: 0,
        }
    }

    fn entry(ino: Ino, size: u64) -> DirEntry {
        DirEntry { name: format!("f{ino}"), ino, kind: FileKind::Regular, attr: Some(attr(ino, size, 1)), xattrs: None }
    }

    fn grant(ino: Ino, size: u64, gen: Gen) -> ReadGrant {
        let loc = ServerLoc { host: "pop".into(), addr: "127.0.0.1:1".parse().unwrap(), site: "s".into() };
        let cap = fs_proto::SignedCapability { body: Vec::new(), sig: Vec::new() };
        ReadGrant { attr: attr(ino, size, gen), replicas: vec![loc], cap: Some(cap) }
    }

    #[test]
    fn candidates_follow_the_listing_and_skip_held_and_large_files() {
        let p = Prefetch::default();
        let mut list: Vec<DirEntry> = (10..20).map(|i| entry(i, 1000)).collect();
        list[3] = entry(13, SMALL + 1);
        p.listed(1, &list);
        assert_eq!(p.candidates(10), vec![11, 12, 14, 15, 16, 17, 18, 19]);
        assert!(p.candidates(13).is_empty(), "a large file is not prefetched");
        assert!(p.candidates(99).is_empty(), "nor one of an unlisted directory");
        let w = p.claim(vec![grant(15, 1000, 1)]);
        assert_eq!(w.len(), 1);
        assert_eq!(p.candidates(14), vec![16, 17, 18, 19], "held files are not asked again");
        assert!(p.candidates(15).is_empty());
    }

    #[tokio::test]
    async fn a_body_is_served_only_for_its_generation() {
        let p = Prefetch::default();
        let mut w = p.claim(vec![grant(5, 3, 1)]);
        let one = w.pop().unwrap();
        let _ = one.tx.send(Some(Some(Bytes::from_static(b"abc"))));
        assert_eq!(p.body(&grant(5, 3, 1)).await.as_deref(), Some(&b"abc"[..]));
        assert!(p.body(&grant(5, 3, 2)).await.is_none(), "another generation is read anew");
        assert!(p.grant(5, 1, Some([1; 32])).is_some());
        assert!(p.grant(5, 2, Some([2; 32])).is_none());
        p.forget(5);
        assert!(p.body(&grant(5, 3, 1)).await.is_none(), "an invalidation drops the body");
        assert_eq!(p.bytes(), 0);
    }

    #[test]
    fn memory_is_bounded() {
        let p = Prefetch::default();
        let n = (MAX_BYTES / SMALL) as Ino;
        let all = p.claim((0..n + 5).map(|i| grant(i, SMALL, 1)).collect());
        assert_eq!(all.len() as Ino, n, "nothing beyond the bound is claimed while all are in flight");
        for w in &all {
            let _ = w.tx.send(Some(Some(Bytes::new())));
        }
        let more = p.claim(vec![grant(1000, SMALL, 1)]);
        assert_eq!(more.len(), 1, "finished bodies make room, oldest first");
        assert!(p.bytes() <= MAX_BYTES);
    }
}
