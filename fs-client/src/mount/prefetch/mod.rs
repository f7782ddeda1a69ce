//! Read-ahead through directories: reading the files of a directory one
//! after another (`cp -r`, `tar c`, `rsync` out of the mount) moves them in
//! bundles, one `ServerRequest::ReadMany` stream each, kept ahead of the
//! reader, instead of a read request (and round trip) per file.
//!
//! When a file of a directory this mount listed is opened for reading, the
//! files that follow it — in the order the opens follow, by name or by inode
//! number ([`ahead`]) — are kept fetched or in flight up to [`AHEAD`] bytes:
//! the open's `OpenRead` goes out as a `Batch` with `OpenRead`s of the
//! following files not held yet, when the opened file is not held itself or
//! at least [`TOP_UP`] bytes of the window are missing (or the window reaches
//! the directory's end), and their grants' capabilities go to the servers
//! holding them, one `ReadMany` per server ([`fetch`]). Files arrive one
//! after another, each checked against its grant's size and BLAKE3 before it
//! is kept ([`Prefetch`], bounded by [`MAX_BYTES`]). So the link stays busy
//! while the reader waits on opens.
//!
//! A kept body is served only to an open whose grant names the same
//! inode, generation and hash. An open of a file whose body is held under a
//! live lease on its attributes (same generation and hash, no invalidation
//! since) uses the grant the body came with and sends nothing (AFS-style
//! callbacks; close-to-open holds because a writer's close returns only once
//! every leasing mount acknowledged its invalidation); the read-ahead is then
//! topped up in the background. With `-o noopenlease` every open asks the
//! meta server for the current generation. Invalidations of an inode drop its
//! body, losing the subscription drops them all; otherwise the oldest go
//! first when [`MAX_BYTES`] would be exceeded.

pub mod ahead;
pub mod fetch;

use ahead::Ahead;
use bytes::Bytes;
use fs_proto::meta::ReadGrant;
use fs_proto::{DirEntry, FileKind, Gen, Hash, Ino};
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub use fetch::fetch;

/// Files up to this size are read ahead whole (larger ones stream through
/// the handle's reader).
pub const LARGE: u64 = 64 << 20;
/// Bytes kept fetched or in flight ahead of the file being opened: enough
/// to keep a 1 Gbit/s link busy for a quarter of a second while the reader
/// waits on opens.
pub const AHEAD: u64 = 32 << 20;
/// With the opened file held, the read-ahead is topped up once this much
/// of the window is missing (fewer, larger bundles).
pub const TOP_UP: u64 = 8 << 20;
/// Most files asked for in one bundle.
pub const BUNDLE_FILES: usize = 256;
/// Most bytes kept or in flight (the window, the largest file, and what
/// was read last).
pub const MAX_BYTES: u64 = 160 << 20;
/// A file asked for is not asked again for this long unless its grant came.
const ASKED_FOR: Duration = Duration::from_secs(5);

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

struct State {
    /// Listings and the order each directory is read in.
    ahead: Ahead,
    /// Bodies kept or being fetched.
    slots: HashMap<Ino, Slot>,
    /// Slots in the order they were made (oldest evicted first).
    fifo: VecDeque<Ino>,
    /// Bytes of the slots.
    bytes: u64,
    /// Files whose grants were asked for and have not come back yet (so
    /// opens meanwhile do not ask again), with when.
    asked: HashMap<Ino, Instant>,
}

impl Default for State {
    fn default() -> Self {
        State {
            ahead: Ahead::new(AHEAD),
            slots: HashMap::new(),
            fifo: VecDeque::new(),
            bytes: 0,
            asked: HashMap::new(),
        }
    }
}

impl State {
    fn drop_slot(&mut self, ino: Ino) {
        if let Some(s) = self.slots.remove(&ino) {
            self.bytes -= s.size;
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

fn worth(size: u64) -> bool {
    size > 0 && size <= LARGE
}

impl Prefetch {
    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remember the files of a listing worth reading ahead.
    pub fn listed(&self, dir: Ino, entries: &[DirEntry]) {
        let files: Vec<(Ino, u64)> = entries
            .iter()
            .filter(|e| e.kind == FileKind::Regular)
            .filter_map(|e| e.attr.as_ref().map(|a| (e.ino, a.size)))
            .filter(|(_, size)| worth(*size))
            .collect();
        self.st().ahead.listed(dir, files);
    }

    /// `ino` is being opened for reading: the files to ask grants for along
    /// with it, to be fetched in one bundle (see the module docs). Empty
    /// when nothing needs fetching now or `ino` is of no listing.
    pub fn candidates(&self, ino: Ino) -> Vec<Ino> {
        let mut st = self.st();
        let window = st.ahead.opened(ino);
        let own_held = st.slots.contains_key(&ino);
        if !st.ahead.knows(ino) {
            return Vec::new();
        }
        let now = Instant::now();
        st.asked.retain(|_, at| now.duration_since(*at) < ASKED_FOR);
        let mut missing = 0u64;
        let mut out = Vec::new();
        for (f, size) in window.files {
            if st.slots.contains_key(&f) || st.asked.contains_key(&f) {
                continue;
            }
            if out.len() + 1 >= BUNDLE_FILES {
                break;
            }
            missing += size;
            out.push(f);
        }
        if own_held && missing < TOP_UP && !window.to_end {
            return Vec::new();
        }
        for f in &out {
            st.asked.insert(*f, now);
        }
        out
    }

    /// Register the files of a bundle about to be fetched (those not held
    /// already, small, with a capability and hash, while room lasts).
    pub fn claim(&self, grants: Vec<ReadGrant>) -> Vec<Wanted> {
        let mut st = self.st();
        let mut out = Vec::new();
        for g in &grants {
            st.asked.remove(&g.attr.ino);
        }
        for g in grants {
            let a = &g.attr;
            let (Some(hash), Some(_)) = (a.hash, g.cap.as_ref()) else { continue };
            if !worth(a.size) || g.replicas.is_empty() {
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

    /// This mount just committed `attr` (a new small file) with `body`:
    /// keep it, so this mount's own reads of it (`git checkout` reading the
    /// objects `git clone` wrote) are served here. Kept only if `body` is
    /// what was committed (size and BLAKE3). The grant it is served under
    /// names no server and carries no capability: a read that finds the body
    /// gone asks the meta server for a real grant.
    pub fn written(&self, attr: &fs_proto::Attr, body: Bytes) {
        let Some(hash) = attr.hash else { return };
        if !worth(attr.size) || body.len() as u64 != attr.size || *blake3::hash(&body).as_bytes() != hash {
            return;
        }
        let mut st = self.st();
        st.drop_slot(attr.ino);
        if !st.room(attr.size) {
            return;
        }
        let (_tx, rx) = watch::channel(Some(Some(body)));
        let grant = ReadGrant { attr: attr.clone(), replicas: Vec::new(), cap: None };
        st.slots.insert(attr.ino, Slot { gen: attr.gen, hash, size: attr.size, rx, grant });
        st.fifo.push_back(attr.ino);
        st.bytes += attr.size;
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
        tokio::time::timeout(fetch::bound(LARGE), wait).await.ok().flatten()
    }

    /// The grant a held (or arriving) body of `ino` at `gen` with `hash`
    /// was fetched under, for leased opens.
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
        st.ahead.clear();
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

#[cfg(test)]
mod tests {
    use super::*;
    use fs_proto::{Attr, ServerLoc};

    fn attr(ino: Ino, size: u64, gen: Gen) -> Attr {
        Attr { uid: 1, gid: 1, size, gen, hash: Some([gen as u8; 32]), ..Attr::new(ino, FileKind::Regular, 0o644) }
    }

    fn entry(ino: Ino, size: u64) -> DirEntry {
        DirEntry { name: format!("f{ino}"), ino, kind: FileKind::Regular, attr: Some(attr(ino, size, 1)), xattrs: None }
    }

    fn grant(ino: Ino, size: u64, gen: Gen) -> ReadGrant {
        let loc = ServerLoc { host: "pop".into(), addr: "127.0.0.1:1".parse().unwrap(), site: "s".into() };
        let cap = fs_proto::SignedCapability { body: Vec::new(), sig: Vec::new() };
        ReadGrant { attr: attr(ino, size, gen), replicas: vec![loc], cap: Some(cap) }
    }

    const MB: u64 = 1 << 20;

    #[test]
    fn candidates_follow_the_listing_and_skip_held_and_too_large_files() {
        let p = Prefetch::default();
        let mut list: Vec<DirEntry> = (10..20).map(|i| entry(i, 1000)).collect();
        list[3] = entry(13, LARGE + 1);
        p.listed(1, &list);
        assert_eq!(p.candidates(10), vec![11, 12, 14, 15, 16, 17, 18, 19]);
        assert!(p.candidates(13).is_empty(), "a file over LARGE is not read ahead");
        assert!(p.candidates(99).is_empty(), "nor one of an unlisted directory");
        assert!(p.candidates(11).is_empty(), "files asked for already are not asked again before their grants");

        let p = Prefetch::default();
        p.listed(1, &list);
        assert_eq!(p.claim(vec![grant(15, 1000, 1)]).len(), 1);
        assert_eq!(p.candidates(14), vec![16, 17, 18, 19], "held files are not asked again");
        p.claim(vec![grant(16, 1000, 1), grant(17, 1000, 1)]);
        assert!(p.candidates(15).is_empty(), "18 and 19 are still being asked for");
    }

    #[test]
    fn the_window_is_topped_up_in_large_steps() {
        let p = Prefetch::default();
        // 40 files of 2 MB: the window holds 16 of them.
        let list: Vec<DirEntry> = (100..140).map(|i| entry(i, 2 * MB)).collect();
        p.listed(1, &list);
        let first = p.candidates(100);
        assert_eq!(first, (101..117).collect::<Vec<Ino>>(), "AHEAD bytes after the opened file");
        let grants = std::iter::once(100).chain(first).map(|i| grant(i, 2 * MB, 1)).collect();
        assert_eq!(p.claim(grants).len(), 17);
        for i in 101..104 {
            assert!(p.candidates(i).is_empty(), "{i}: under TOP_UP missing, nothing asked");
        }
        assert_eq!(p.candidates(104), (117..121).collect::<Vec<Ino>>(), "TOP_UP missing: asked in one bundle");
        p.claim((117..137).map(|i| grant(i, 2 * MB, 1)).collect());
        assert!(p.candidates(122).is_empty(), "137 and 138 missing: under TOP_UP");
        assert_eq!(p.candidates(124), vec![137, 138, 139], "a window reaching the directory's end is completed");
    }

    #[test]
    fn an_unheld_file_is_fetched_with_its_window_in_inode_order() {
        let p = Prefetch::default();
        // Names in one order, inode numbers in another (cp -r reads by inode).
        let list = vec![entry(30, 10), entry(10, 10), entry(20, 10), entry(40, 10)];
        p.listed(1, &list);
        assert_eq!(p.candidates(10), vec![20, 30, 40], "lowest inode first, not the first name: by inode");
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

    #[tokio::test]
    async fn a_body_this_mount_wrote_is_served_for_its_generation_only() {
        let p = Prefetch::default();
        let body = Bytes::from_static(b"written here");
        let mut a = attr(9, body.len() as u64, 3);
        a.hash = Some(*blake3::hash(&body).as_bytes());
        p.written(&a, Bytes::from_static(b"written hers"));
        assert!(p.grant(9, 3, a.hash).is_none(), "a body that is not what was committed is not kept");
        p.written(&a, body.clone());
        let g = p.grant(9, 3, a.hash).expect("kept");
        assert!(g.cap.is_none() && g.replicas.is_empty(), "served here only");
        assert_eq!(p.body(&g).await, Some(body));
        assert!(p.grant(9, 4, a.hash).is_none(), "another generation is read anew");
        p.forget(9);
        assert!(p.grant(9, 3, a.hash).is_none(), "an invalidation drops it");
        assert_eq!(p.bytes(), 0);
    }

    #[test]
    fn memory_is_bounded() {
        let p = Prefetch::default();
        let n = (MAX_BYTES / MB) as Ino;
        let all = p.claim((0..n + 5).map(|i| grant(i, MB, 1)).collect());
        assert_eq!(all.len() as Ino, n, "nothing beyond the bound is claimed while all are in flight");
        for w in &all {
            let _ = w.tx.send(Some(Some(Bytes::new())));
        }
        let more = p.claim(vec![grant(1000, MB, 1)]);
        assert_eq!(more.len(), 1, "finished bodies make room, oldest first");
        assert!(p.bytes() <= MAX_BYTES);
    }
}
