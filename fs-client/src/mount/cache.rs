//! The metadata cache: attributes, names, directory listings, symlink
//! targets and extended attributes, each trusted until its lease runs out or
//! the meta server invalidates it (see [`fs_proto::callback`]).
//!
//! Something is cached only under a live subscription, and only if no
//! invalidation of it arrived while the request that fetched it was in
//! flight: a [`Ticket`] taken before sending records the subscription and
//! the invalidation sequence number, and [`Cache`] refuses to insert a value
//! that an invalidation applied since then touched (the last [`RECENT`]
//! invalidations are kept to tell; a ticket older than that caches nothing).
//! So a reply computed before a change can never be cached after the
//! change's invalidation was applied. This mount's own changes send it no
//! invalidation: [`Cache::forget_attr`] and [`Cache::forget_entry`] note
//! when each was made, and a reply to a request sent before that is not
//! cached either ([`Cache::changed_since`] tells a caller to ask again).
//!
//! Memory is bounded by [`MAX_ENTRIES`]; beyond it the cache starts over.

use fs_proto::callback::Invalidation;
use fs_proto::{Attr, DirEntry, Ino};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most objects cached (attributes + names + listings) before starting over.
pub const MAX_ENTRIES: usize = 2_000_000;
/// Invalidations remembered to judge tickets of requests in flight.
pub const RECENT: usize = 4096;

/// What an insert would cache, to compare with recent invalidations.
#[derive(Clone, Copy)]
enum Key<'a> {
    Attr(Ino),
    Name(Ino, &'a str),
    Listing(Ino),
}

impl Key<'_> {
    fn touched_by(&self, inv: &Invalidation) -> bool {
        match (self, inv) {
            (_, Invalidation::Reset) => true,
            (Key::Attr(i), Invalidation::Attr { ino }) => i == ino,
            (Key::Name(p, n), Invalidation::Entry { parent, name }) => p == parent && n == name,
            (Key::Listing(d), Invalidation::Entry { parent, .. }) => d == parent,
            (Key::Name(p, _) | Key::Listing(p), Invalidation::Leased { dir }) => p == dir,
            _ => false,
        }
    }
}

/// What a request was sent under; see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    sub: u64,
    seq: u64,
    sent: Instant,
    /// The connection the subscription is on (replies must come over it).
    pub conn: usize,
}

/// A cached value and until when it may be trusted.
type Cached<T> = (T, Instant);

#[derive(Default)]
struct State {
    /// Subscription generation: bumped when one starts or ends.
    sub: u64,
    /// Live subscription: connection id and lease.
    live: Option<(usize, Duration)>,
    /// Invalidations applied.
    seq: u64,
    /// The last invalidations, with their sequence numbers.
    recent: std::collections::VecDeque<(u64, Invalidation)>,
    attrs: HashMap<Ino, Cached<Attr>>,
    names: HashMap<(Ino, String), Cached<Option<Ino>>>,
    listings: HashMap<Ino, Cached<Arc<Vec<DirEntry>>>>,
    links: HashMap<Ino, Cached<String>>,
    xattrs: HashMap<(Ino, String), Cached<Option<Vec<u8>>>>,
    xattr_lists: HashMap<Ino, Cached<Vec<String>>>,
    /// When this mount last changed an inode's attributes, or a name (and
    /// so its directory's listing) itself.
    changed_attrs: Changes,
    changed_dirs: Changes,
    /// The directory each inode was last seen in (a hint: it may have
    /// moved since; see [`Cache::parent_hint`]).
    parents: HashMap<Ino, Ino>,
}

impl State {
    fn len(&self) -> usize {
        self.attrs.len() + self.names.len() + self.listings.len() + self.xattrs.len() + self.parents.len()
    }

    fn clear(&mut self) {
        self.attrs.clear();
        self.names.clear();
        self.listings.clear();
        self.links.clear();
        self.xattrs.clear();
        self.xattr_lists.clear();
        self.parents.clear();
    }

    fn drop_attr(&mut self, ino: Ino) {
        self.attrs.remove(&ino);
        self.links.remove(&ino);
        self.xattrs.retain(|(i, _), _| *i != ino);
        self.xattr_lists.remove(&ino);
    }

    fn drop_entry(&mut self, parent: Ino, name: &str) {
        self.names.remove(&(parent, name.to_string()));
        self.listings.remove(&parent);
    }
}

/// When this mount last changed each of some inodes, kept for a while.
/// Pruning follows the order of the notes (no scan of the whole map per
/// change: a `chmod -R` of 10,000 files made that quadratic); beyond
/// [`MAX_CHANGES`] notes the oldest go and stand for a floor: any inode
/// counts as changed at that time.
#[derive(Default)]
struct Changes {
    at: HashMap<Ino, Instant>,
    order: std::collections::VecDeque<(Instant, Ino)>,
    floor: Option<Instant>,
}

/// Most change notes kept (see [`Changes`]).
const MAX_CHANGES: usize = 1 << 20;

impl Changes {
    fn note(&mut self, ino: Ino, now: Instant, keep: Duration) {
        while let Some(&(at, i)) = self.order.front() {
            let old = now.saturating_duration_since(at) >= keep;
            if !old && self.order.len() < MAX_CHANGES {
                break;
            }
            self.order.pop_front();
            if self.at.get(&i) == Some(&at) {
                self.at.remove(&i);
            }
            if !old {
                self.floor = Some(self.floor.map_or(at, |f| f.max(at)));
            }
        }
        self.at.insert(ino, now);
        self.order.push_back((now, ino));
    }

    /// When `ino` was last changed here, as far as is remembered.
    fn at(&self, ino: Ino) -> Option<Instant> {
        match (self.at.get(&ino).copied(), self.floor) {
            (Some(a), Some(f)) => Some(a.max(f)),
            (a, f) => a.or(f),
        }
    }
}

/// The cache.
#[derive(Default)]
pub struct Cache {
    state: Mutex<State>,
    /// Woken when a subscription becomes live.
    went_live: tokio::sync::Notify,
}

/// A valid cached value with the time it stays valid.
pub type Fresh<T> = Option<(T, Duration)>;

fn fresh<T: Clone>(v: Option<&(T, Instant)>, now: Instant) -> Fresh<T> {
    v.filter(|(_, until)| *until > now).map(|(t, until)| (t.clone(), *until - now))
}

impl Cache {
    fn st(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A ticket for a request about to be sent, if caching is possible.
    pub fn ticket(&self) -> Option<Ticket> {
        let st = self.st();
        st.live.map(|(conn, _)| Ticket { sub: st.sub, seq: st.seq, sent: Instant::now(), conn })
    }

    /// Until when something fetched under `t` may be trusted (None: not at
    /// all, or `key` was invalidated since `t` was taken).
    fn until_for(st: &State, t: Option<Ticket>, key: Option<Key<'_>>) -> Option<Instant> {
        Self::until_for_reply(st, t, key, false)
    }

    /// As [`Self::until_for`]; `own`: the reply to this mount's own change,
    /// which reflects it (so later local changes are what count).
    fn until_for_reply(st: &State, t: Option<Ticket>, key: Option<Key<'_>>, own: bool) -> Option<Instant> {
        let t = t?;
        let (_, lease) = st.live?;
        if t.sub != st.sub {
            return None;
        }
        let changed = match key {
            _ if own => None,
            Some(Key::Attr(i)) => st.changed_attrs.at(i),
            Some(Key::Name(p, _) | Key::Listing(p)) => st.changed_dirs.at(p),
            None => None,
        };
        if changed.is_some_and(|at| t.sent <= at) {
            // Asked before this mount's own change: the reply may predate it.
            return None;
        }
        if t.seq != st.seq {
            let key = key?;
            // Every invalidation since the ticket must still be remembered.
            if st.recent.front().is_none_or(|(first, _)| *first > t.seq + 1) {
                return None;
            }
            if st.recent.iter().any(|(s, inv)| *s > t.seq && key.touched_by(inv)) {
                return None;
            }
        }
        Some(t.sent + lease.mul_f64(0.9))
    }

    fn room(st: &mut State) {
        if st.len() >= MAX_ENTRIES {
            tracing::debug!("metadata cache full; starting over");
            st.clear();
        }
    }

    /// A subscription started on connection `conn`.
    pub fn subscribed(&self, conn: usize, lease: Duration) {
        let mut st = self.st();
        st.clear();
        st.recent.clear();
        st.sub += 1;
        st.live = Some((conn, lease));
        drop(st);
        self.went_live.notify_waiters();
    }

    /// The subscription ended: nothing cached can be trusted any more.
    pub fn lost(&self) {
        let mut st = self.st();
        st.clear();
        st.sub += 1;
        st.live = None;
    }

    /// Whether a subscription is live.
    pub fn is_live(&self) -> bool {
        self.st().live.is_some()
    }

    /// Wait up to `bound` for a subscription to be live; whether it is.
    pub async fn wait_live(&self, bound: Duration) -> bool {
        let wait = async {
            loop {
                let woken = self.went_live.notified();
                if self.is_live() {
                    return;
                }
                woken.await;
            }
        };
        tokio::time::timeout(bound, wait).await.is_ok()
    }

    /// Apply invalidations from the meta server; what the kernel must be
    /// told: the list, plus every name this cache knew in a directory now
    /// leased to another mount (the kernel may hold those entries too, and
    /// no callback will tell us when the holder changes them).
    pub fn apply(&self, list: &[Invalidation]) -> Vec<Invalidation> {
        let mut kernel = list.to_vec();
        let mut st = self.st();
        for inv in list {
            st.seq += 1;
            let seq = st.seq;
            st.recent.push_back((seq, inv.clone()));
            if st.recent.len() > RECENT {
                st.recent.pop_front();
            }
            match inv {
                Invalidation::Attr { ino } => st.drop_attr(*ino),
                Invalidation::Entry { parent, name } => st.drop_entry(*parent, name),
                Invalidation::Reset => st.clear(),
                Invalidation::Leased { dir } => {
                    let mut names: std::collections::BTreeSet<String> =
                        st.names.keys().filter(|(p, _)| p == dir).map(|(_, n)| n.clone()).collect();
                    st.names.retain(|(p, _), _| p != dir);
                    if let Some(l) = st.listings.remove(dir) {
                        names.extend(l.0.iter().map(|e| e.name.clone()));
                    }
                    kernel.extend(names.into_iter().map(|name| Invalidation::Entry { parent: *dir, name }));
                }
                Invalidation::Recall { .. } => {}
            }
        }
        kernel
    }

    /// Forget what this client itself just changed.
    pub fn forget_attr(&self, ino: Ino) {
        let mut st = self.st();
        st.drop_attr(ino);
        Self::note(&mut st, |st| &mut st.changed_attrs, ino);
    }

    /// Forget a name (and the listing of its directory).
    pub fn forget_entry(&self, parent: Ino, name: &str) {
        let mut st = self.st();
        st.drop_entry(parent, name);
        Self::note(&mut st, |st| &mut st.changed_dirs, parent);
    }

    /// Note a change made now. Notes older than the lease are pruned once
    /// there are many: a reply to a request sent that long ago could only
    /// be cached as already expired.
    fn note(st: &mut State, map: fn(&mut State) -> &mut Changes, ino: Ino) {
        let keep = st.live.map_or(Duration::ZERO, |(_, lease)| lease).max(Duration::from_secs(30));
        map(st).note(ino, Instant::now(), keep);
    }

    /// Whether this mount changed `ino`'s attributes at or after `asked`:
    /// a reply to a request sent at `asked` may predate the change.
    pub fn changed_since(&self, ino: Ino, asked: Instant) -> bool {
        self.st().changed_attrs.at(ino).is_some_and(|at| asked <= at)
    }

    /// Forget attributes of every inode with several links (after removing a
    /// name whose inode was not known).
    pub fn forget_multilinked(&self) {
        self.st().attrs.retain(|_, (a, _)| a.nlink <= 1 || a.kind == fs_proto::FileKind::Directory);
    }

    /// Cached attributes.
    pub fn attr(&self, ino: Ino) -> Fresh<Attr> {
        fresh(self.st().attrs.get(&ino), Instant::now())
    }

    /// Cache attributes.
    pub fn put_attr(&self, t: Option<Ticket>, attr: &Attr) {
        let mut st = self.st();
        if let Some(until) = Self::until_for(&st, t, Some(Key::Attr(attr.ino))) {
            Self::room(&mut st);
            st.attrs.insert(attr.ino, (attr.clone(), until));
        }
    }

    /// This mount created `name` in `parent` as `attr` (the reply to its
    /// request under `t`): the listing is stale, the name and attributes
    /// are known.
    pub fn put_created(&self, t: Option<Ticket>, parent: Ino, name: &str, attr: &Attr) {
        let mut st = self.st();
        st.drop_entry(parent, name);
        Self::note(&mut st, |st| &mut st.changed_dirs, parent);
        if let Some(until) = Self::until_for_reply(&st, t, Some(Key::Name(parent, name)), true) {
            Self::room(&mut st);
            st.names.insert((parent, name.to_string()), (Some(attr.ino), until));
        }
        st.parents.insert(attr.ino, parent);
        if let Some(until) = Self::until_for_reply(&st, t, Some(Key::Attr(attr.ino)), true) {
            st.attrs.insert(attr.ino, (attr.clone(), until));
        }
    }

    /// Cached name: `Some(Some(ino))` exists, `Some(None)` known absent.
    pub fn name(&self, parent: Ino, name: &str) -> Fresh<Option<Ino>> {
        fresh(self.st().names.get(&(parent, name.to_string())), Instant::now())
    }

    /// Cache a name (None: known absent).
    pub fn put_name(&self, t: Option<Ticket>, parent: Ino, name: &str, ino: Option<Ino>) {
        let mut st = self.st();
        if let Some(until) = Self::until_for(&st, t, Some(Key::Name(parent, name))) {
            Self::room(&mut st);
            st.names.insert((parent, name.to_string()), (ino, until));
        }
        if let Some(ino) = ino {
            st.parents.insert(ino, parent);
        }
    }

    /// The directory `ino` was last seen in, by a lookup or a listing. Only
    /// a hint (an entry may have moved since, or have several names): what
    /// uses it checks the entry is still there under a lease.
    pub fn parent_hint(&self, ino: Ino) -> Option<Ino> {
        self.st().parents.get(&ino).copied()
    }

    /// A cached complete listing.
    pub fn listing(&self, dir: Ino) -> Fresh<Arc<Vec<DirEntry>>> {
        fresh(self.st().listings.get(&dir), Instant::now())
    }

    /// Cache a complete listing, and the names, attributes and xattr names
    /// in it (the attributes' lease covers the xattr names).
    pub fn put_listing(&self, t: Option<Ticket>, dir: Ino, entries: &[DirEntry]) {
        let mut st = self.st();
        let Some(until) = Self::until_for(&st, t, Some(Key::Listing(dir))) else { return };
        Self::room(&mut st);
        let mut bare = Vec::with_capacity(entries.len());
        for e in entries {
            st.names.insert((dir, e.name.clone()), (Some(e.ino), until));
            st.parents.insert(e.ino, dir);
            if let Some(a) = &e.attr {
                if Self::until_for(&st, t, Some(Key::Attr(e.ino))).is_some() {
                    st.attrs.insert(e.ino, (a.clone(), until));
                    if let Some(names) = &e.xattrs {
                        st.xattr_lists.insert(e.ino, (names.clone(), until));
                    }
                }
            }
            bare.push(DirEntry { attr: None, xattrs: None, ..e.clone() });
        }
        st.listings.insert(dir, (Arc::new(bare), until));
    }

    /// A cached symlink target.
    pub fn link(&self, ino: Ino) -> Fresh<String> {
        fresh(self.st().links.get(&ino), Instant::now())
    }

    /// Cache a symlink target.
    pub fn put_link(&self, t: Option<Ticket>, ino: Ino, target: &str) {
        let mut st = self.st();
        if let Some(until) = Self::until_for(&st, t, Some(Key::Attr(ino))) {
            st.links.insert(ino, (target.to_string(), until));
        }
    }

    /// A cached xattr value (`Some(None)`: known absent).
    pub fn xattr(&self, ino: Ino, name: &str) -> Fresh<Option<Vec<u8>>> {
        fresh(self.st().xattrs.get(&(ino, name.to_string())), Instant::now())
    }

    /// Cache an xattr value.
    pub fn put_xattr(&self, t: Option<Ticket>, ino: Ino, name: &str, value: Option<Vec<u8>>) {
        let mut st = self.st();
        if let Some(until) = Self::until_for(&st, t, Some(Key::Attr(ino))) {
            Self::room(&mut st);
            st.xattrs.insert((ino, name.to_string()), (value, until));
        }
    }

    /// Cached xattr names.
    pub fn xattr_list(&self, ino: Ino) -> Fresh<Vec<String>> {
        fresh(self.st().xattr_lists.get(&ino), Instant::now())
    }

    /// Cache xattr names.
    pub fn put_xattr_list(&self, t: Option<Ticket>, ino: Ino, names: &[String]) {
        let mut st = self.st();
        if let Some(until) = Self::until_for(&st, t, Some(Key::Attr(ino))) {
            st.xattr_lists.insert(ino, (names.to_vec(), until));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fs_proto::FileKind;

    #[test]
    fn change_notes_are_pruned_in_order_and_bounded() {
        let mut c = Changes::default();
        let t0 = Instant::now();
        let keep = Duration::from_secs(30);
        c.note(1, t0, keep);
        c.note(2, t0 + Duration::from_secs(10), keep);
        c.note(1, t0 + Duration::from_secs(20), keep);
        assert_eq!(c.at(1), Some(t0 + Duration::from_secs(20)));
        c.note(3, t0 + Duration::from_secs(45), keep);
        assert_eq!(c.at(2), None, "older than the lease: forgotten");
        assert_eq!(c.at(1), Some(t0 + Duration::from_secs(20)), "a later note of the same inode stays");
        assert!(c.floor.is_none());
        // Past the bound the oldest notes go, and stand for a floor.
        let t1 = t0 + Duration::from_secs(50);
        for i in 0..MAX_CHANGES as Ino + 10 {
            c.note(100 + i, t1, keep);
        }
        assert!(c.order.len() <= MAX_CHANGES);
        assert_eq!(c.at(7), Some(t1), "an inode whose note may have gone counts as changed at the floor");
    }

    fn attr(ino: Ino) -> Attr {
        Attr { uid: 1, gid: 1, ..Attr::new(ino, FileKind::Regular, 0o644) }
    }

    #[test]
    fn nothing_cached_without_subscription() {
        let c = Cache::default();
        assert!(c.ticket().is_none());
        c.put_attr(None, &attr(5));
        assert!(c.attr(5).is_none());
    }

    #[test]
    fn invalidation_in_flight_blocks_insert() {
        let c = Cache::default();
        c.subscribed(1, Duration::from_secs(60));
        let t = c.ticket();
        c.apply(&[Invalidation::Attr { ino: 5 }]);
        c.put_attr(t, &attr(5));
        assert!(c.attr(5).is_none(), "a reply older than its invalidation must not be cached");
        let t = c.ticket();
        c.apply(&[Invalidation::Attr { ino: 9 }]);
        c.put_attr(t, &attr(6));
        assert!(c.attr(6).is_some(), "an invalidation of something else does not matter");
        c.apply(&[Invalidation::Entry { parent: 1, name: "x".into() }]);
        c.put_name(t, 1, "x", None);
        assert!(c.name(1, "x").is_none(), "a name invalidated in flight is not cached");
        c.put_name(t, 1, "y", None);
        assert!(c.name(1, "y").is_some());
        let t = c.ticket();
        c.put_attr(t, &attr(5));
        assert!(c.attr(5).is_some());
        c.apply(&[Invalidation::Attr { ino: 5 }]);
        assert!(c.attr(5).is_none());
    }

    #[test]
    fn listing_caches_xattr_names_under_the_attribute_lease() {
        let c = Cache::default();
        c.subscribed(1, Duration::from_secs(60));
        let e = DirEntry {
            name: "a".into(),
            ino: 5,
            kind: FileKind::Regular,
            attr: Some(attr(5)),
            xattrs: Some(vec!["user.tag".into()]),
        };
        c.put_listing(c.ticket(), 1, &[e]);
        assert_eq!(c.xattr_list(5).map(|v| v.0), Some(vec!["user.tag".to_string()]));
        assert!(c.listing(1).is_some_and(|(l, _)| l[0].xattrs.is_none()), "the listing itself stays bare");
        c.apply(&[Invalidation::Attr { ino: 5 }]);
        assert!(c.xattr_list(5).is_none(), "a change of the inode drops its xattr names");
    }

    #[test]
    fn entry_invalidation_drops_name_and_listing() {
        let c = Cache::default();
        c.subscribed(1, Duration::from_secs(60));
        let e = DirEntry { name: "a".into(), ino: 5, kind: FileKind::Regular, attr: Some(attr(5)), xattrs: None };
        c.put_listing(c.ticket(), 1, &[e]);
        assert_eq!(c.name(1, "a").map(|v| v.0), Some(Some(5)));
        assert!(c.listing(1).is_some() && c.attr(5).is_some());
        c.apply(&[Invalidation::Entry { parent: 1, name: "b".into() }]);
        assert!(c.listing(1).is_none());
        assert!(c.name(1, "a").is_some(), "other names stay");
        c.lost();
        assert!(c.name(1, "a").is_none() && c.attr(5).is_none());
    }
}
