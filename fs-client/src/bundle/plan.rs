//! The bundle planner, sans IO: which pending items (new entries, and the
//! other operations a mount does under its directory leases) go together
//! into which bundle, when a bundle is sealed (enough items, enough bytes,
//! old enough, or someone waits for one of its items) and when it may be
//! sent (fewer than `max_inflight` in flight, and every earlier bundle it
//! conflicts with already done).
//!
//! Each item claims objects ([`Claim`]): a directory's names, an inode.
//! Two items conflict when they claim the same object and one of them
//! exclusively; a bundle is sent only after every earlier bundle holding a
//! conflicting item is done, so operations on one object commit in the
//! order they were made (creates in one directory claim its names shared,
//! and go in parallel; an unlink, rename or rmdir claims them exclusively).
//! Within a bundle, items keep their order.
//!
//! Items are identified by a `u64` (the mount uses a new entry's inode
//! number, and numbers above [`OP_BASE`] for other operations). Time comes
//! in as `now`.

use fs_proto::Ino;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Identifies one bundle.
pub type BundleId = u64;
/// Identifies one pending item.
pub type ItemId = u64;
/// Item numbers from here on are operations, not new inodes.
pub const OP_BASE: ItemId = 1 << 63;

/// What an item claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Object {
    /// An inode (its attributes, its existence).
    Ino(Ino),
    /// The names in a directory.
    Names(Ino),
}

/// One claim of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// On what.
    pub object: Object,
    /// Exclusive (conflicts with every other claim on it) or shared
    /// (conflicts with exclusive ones only).
    pub exclusive: bool,
}

impl Claim {
    /// A shared claim.
    pub fn shared(object: Object) -> Self {
        Claim { object, exclusive: false }
    }

    /// An exclusive claim.
    pub fn exclusive(object: Object) -> Self {
        Claim { object, exclusive: true }
    }
}

/// The claims of a new entry `ino` in `parent`: after its directory exists,
/// in parallel with other creates there, before anything done to it.
pub fn create_claims(parent: Ino, ino: Ino) -> Vec<Claim> {
    vec![Claim::shared(Object::Ino(parent)), Claim::shared(Object::Names(parent)), Claim::exclusive(Object::Ino(ino))]
}

/// Bounds of one bundle and of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Items per bundle.
    pub max_files: usize,
    /// Bytes per bundle (a larger file makes a bundle alone).
    pub max_bytes: u64,
    /// How long an item may wait before its bundle is sealed.
    pub max_delay: Duration,
    /// Bundles in flight at once.
    pub max_inflight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_files: 1024, max_bytes: 32 << 20, max_delay: Duration::from_millis(100), max_inflight: 4 }
    }
}

#[derive(Debug)]
struct Forming {
    id: BundleId,
    items: Vec<ItemId>,
    bytes: u64,
    since: Instant,
}

#[derive(Debug)]
struct Sealed {
    id: BundleId,
    items: Vec<ItemId>,
    deps: HashSet<BundleId>,
}

/// What to do now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Poll {
    /// Bundles to send now, with their items in order.
    pub send: Vec<(BundleId, Vec<ItemId>)>,
    /// When to poll again at the latest (a forming bundle's deadline).
    pub wake: Option<Instant>,
}

/// The planner.
#[derive(Debug)]
pub struct Planner {
    limits: Limits,
    next: BundleId,
    forming: Option<Forming>,
    sealed: VecDeque<Sealed>,
    inflight: HashSet<BundleId>,
    /// Item -> the bundle holding it (forming, sealed or in flight).
    place: HashMap<ItemId, BundleId>,
    /// Item -> its claims.
    claims: HashMap<ItemId, Vec<Claim>>,
    /// Object -> pending items claiming it (and whether exclusively).
    by_object: HashMap<Object, Vec<(ItemId, bool)>>,
    /// Items of bundles not yet done, for [`Planner::done`].
    members: HashMap<BundleId, Vec<ItemId>>,
    urgent: bool,
}

impl Planner {
    /// A planner with `limits`.
    pub fn new(limits: Limits) -> Self {
        Planner {
            limits,
            next: 1,
            forming: None,
            sealed: VecDeque::new(),
            inflight: HashSet::new(),
            place: HashMap::new(),
            claims: HashMap::new(),
            by_object: HashMap::new(),
            members: HashMap::new(),
            urgent: false,
        }
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Items not yet done.
    pub fn len(&self) -> usize {
        self.place.len()
    }

    /// Nothing pending.
    pub fn is_empty(&self) -> bool {
        self.place.is_empty()
    }

    /// Bundles in flight.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Whether `item` is pending (in any bundle not yet done).
    pub fn contains(&self, item: ItemId) -> bool {
        self.place.contains_key(&item)
    }

    /// Whether `item` is pending and its bundle has been sent.
    pub fn is_sent(&self, item: ItemId) -> bool {
        self.place.get(&item).is_some_and(|b| self.inflight.contains(b))
    }

    /// Whether `item` is pending and its bundle is still forming (it can be
    /// changed or taken back).
    pub fn is_forming(&self, item: ItemId) -> bool {
        self.forming.as_ref().is_some_and(|f| self.place.get(&item) == Some(&f.id))
    }

    /// Whether an item added to the forming bundle after `item` claims
    /// `object`: `item` may then not be changed as if it were made now
    /// (e.g. created under a name another item used since).
    pub fn claimed_after(&self, item: ItemId, object: Object) -> bool {
        let Some(f) = &self.forming else { return false };
        let Some(at) = f.items.iter().position(|i| *i == item) else { return false };
        f.items[at + 1..].iter().any(|i| self.claims.get(i).is_some_and(|c| c.iter().any(|c| c.object == object)))
    }

    /// Pending items claiming `object` (in any way).
    pub fn claiming(&self, object: Object) -> Vec<ItemId> {
        self.by_object.get(&object).map(|v| v.iter().map(|(i, _)| *i).collect()).unwrap_or_default()
    }

    /// Queue `item` with its `claims`, carrying `bytes`.
    pub fn add(&mut self, item: ItemId, claims: Vec<Claim>, bytes: u64, now: Instant) {
        let id = match &mut self.forming {
            Some(f) => f.id,
            None => {
                let id = self.next;
                self.next += 1;
                self.forming = Some(Forming { id, items: Vec::new(), bytes: 0, since: now });
                id
            }
        };
        if let Some(f) = &mut self.forming {
            f.items.push(item);
            f.bytes += bytes;
        }
        self.place.insert(item, id);
        for c in &claims {
            self.by_object.entry(c.object).or_default().push((item, c.exclusive));
        }
        self.claims.insert(item, claims);
        self.members.entry(id).or_default().push(item);
        let full = self
            .forming
            .as_ref()
            .is_some_and(|f| f.items.len() >= self.limits.max_files || f.bytes >= self.limits.max_bytes);
        if full {
            self.seal();
        }
    }

    fn forget(&mut self, item: ItemId) {
        self.place.remove(&item);
        for c in self.claims.remove(&item).unwrap_or_default() {
            if let Some(v) = self.by_object.get_mut(&c.object) {
                v.retain(|(i, _)| *i != item);
                if v.is_empty() {
                    self.by_object.remove(&c.object);
                }
            }
        }
    }

    /// Take `item` back if its bundle is still forming (e.g. a file removed
    /// before it was sent). False if it is sealed or sent.
    pub fn remove(&mut self, item: ItemId) -> bool {
        let Some(f) = &mut self.forming else { return false };
        if self.place.get(&item) != Some(&f.id) {
            return false;
        }
        f.items.retain(|i| *i != item);
        let id = f.id;
        if f.items.is_empty() {
            self.forming = None;
        }
        self.forget(item);
        if let Some(m) = self.members.get_mut(&id) {
            m.retain(|i| *i != item);
            if m.is_empty() {
                self.members.remove(&id);
            }
        }
        true
    }

    /// Add claims to a pending item still forming (an entry renamed before
    /// it was sent now also claims its new directory's names).
    pub fn claim_more(&mut self, item: ItemId, more: &[Claim]) {
        if !self.is_forming(item) {
            return;
        }
        for c in more {
            self.by_object.entry(c.object).or_default().push((item, c.exclusive));
        }
        self.claims.entry(item).or_default().extend_from_slice(more);
    }

    /// Someone waits for `item`: seal the bundle holding it now.
    pub fn hurry(&mut self, item: ItemId) {
        if self.is_forming(item) {
            self.seal();
        }
    }

    /// Seal whatever is forming (and keep doing so for items added until
    /// [`Self::relax`]): a flush of everything.
    pub fn hurry_all(&mut self) {
        self.urgent = true;
        self.seal();
    }

    /// End [`Self::hurry_all`].
    pub fn relax(&mut self) {
        self.urgent = false;
    }

    fn seal(&mut self) {
        let Some(f) = self.forming.take() else { return };
        let mut deps = HashSet::new();
        for item in &f.items {
            for c in self.claims.get(item).into_iter().flatten() {
                for (other, ex) in self.by_object.get(&c.object).into_iter().flatten() {
                    if !(c.exclusive || *ex) {
                        continue;
                    }
                    if let Some(b) = self.place.get(other) {
                        if *b != f.id {
                            deps.insert(*b);
                        }
                    }
                }
            }
        }
        self.sealed.push_back(Sealed { id: f.id, items: f.items, deps });
    }

    /// Whether the driver has to poll now rather than at the deadline it
    /// knows: a bundle is sealed and may go, a flush is on, or a bundle
    /// just started forming (its deadline is new). An item joining a
    /// forming bundle needs no wake-up: one per file cost a thread switch
    /// each in a `tar x`.
    pub fn wants_poll(&self) -> bool {
        (!self.sealed.is_empty() && self.inflight.len() < self.limits.max_inflight)
            || self.urgent
            || self.forming.as_ref().is_some_and(|f| f.items.len() == 1)
    }

    /// What to send now, and when to poll again.
    pub fn poll(&mut self, now: Instant) -> Poll {
        let due =
            self.forming.as_ref().is_some_and(|f| self.urgent || now.duration_since(f.since) >= self.limits.max_delay);
        if due {
            self.seal();
        }
        let mut out = Poll::default();
        let mut i = 0;
        while i < self.sealed.len() && self.inflight.len() < self.limits.max_inflight {
            let ready = self.sealed[i].deps.iter().all(|d| !self.members.contains_key(d));
            if ready {
                if let Some(s) = self.sealed.remove(i) {
                    self.inflight.insert(s.id);
                    out.send.push((s.id, s.items));
                }
            } else {
                i += 1;
            }
        }
        out.wake = self.forming.as_ref().map(|f| f.since + self.limits.max_delay);
        out
    }

    /// Bundle `id` is done (committed, or failed): its items are no longer
    /// pending. Returns them.
    pub fn done(&mut self, id: BundleId) -> Vec<ItemId> {
        self.inflight.remove(&id);
        let items = self.members.remove(&id).unwrap_or_default();
        for item in &items {
            self.forget(*item);
        }
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { max_files: 3, max_bytes: 100, max_delay: Duration::from_millis(100), max_inflight: 2 }
    }

    fn create(parent: Ino, ino: Ino) -> Vec<Claim> {
        create_claims(parent, ino)
    }

    #[test]
    fn the_driver_is_woken_for_a_new_deadline_or_a_sealed_bundle_only() {
        let t0 = Instant::now();
        let mut p = Planner::new(limits());
        assert!(!p.wants_poll(), "nothing pending");
        p.add(10, create(1, 10), 1, t0);
        assert!(p.wants_poll(), "a bundle started forming: its deadline is new");
        assert_eq!(p.poll(t0).wake, Some(t0 + Duration::from_millis(100)));
        p.add(11, create(1, 11), 1, t0);
        assert!(!p.wants_poll(), "joining a forming bundle changes no deadline");
        p.add(12, create(1, 12), 1, t0);
        assert!(p.wants_poll(), "the third file sealed it: it may go");
        assert_eq!(p.poll(t0).send.len(), 1);
        assert!(!p.wants_poll());
        p.add(20, create(1, 20), 1, t0);
        p.poll(t0);
        p.add(21, create(1, 21), 1, t0);
        p.hurry(21);
        assert!(p.wants_poll(), "someone waits for it: sealed");
        p.poll(t0);
        p.add(30, create(1, 30), 200, t0);
        assert!(!p.wants_poll(), "sealed, but two bundles are in flight: their completion wakes the driver");
    }

    #[test]
    fn seals_by_count_bytes_and_age() {
        let t0 = Instant::now();
        let mut p = Planner::new(limits());
        for ino in 10..13 {
            p.add(ino, create(1, ino), 1, t0);
        }
        let poll = p.poll(t0);
        assert_eq!(poll.send, vec![(1, vec![10, 11, 12])], "three files fill a bundle");
        p.add(20, create(1, 20), 150, t0);
        assert_eq!(p.poll(t0).send, vec![(2, vec![20])], "a big file makes a bundle alone; siblings go in parallel");
        p.add(30, create(1, 30), 1, t0);
        let poll = p.poll(t0 + Duration::from_millis(50));
        assert!(poll.send.is_empty());
        assert_eq!(poll.wake, Some(t0 + Duration::from_millis(100)));
        assert!(p.poll(t0 + Duration::from_millis(100)).send.is_empty(), "two bundles in flight already");
        assert_eq!(p.done(1), vec![10, 11, 12]);
        assert_eq!(p.poll(t0 + Duration::from_millis(100)).send, vec![(3, vec![30])]);
        assert!(p.is_sent(30) && !p.contains(10));
    }

    #[test]
    fn children_wait_for_the_bundle_creating_their_directory() {
        let t0 = Instant::now();
        let mut p = Planner::new(limits());
        p.add(5, create(1, 5), 0, t0); // mkdir 5
        p.hurry(5);
        p.add(6, create(5, 6), 1, t0); // a file in 5: next bundle
        p.add(7, create(1, 7), 1, t0);
        p.hurry_all();
        let poll = p.poll(t0);
        assert_eq!(poll.send, vec![(1, vec![5])], "the file in 5 waits for 5's bundle");
        p.done(1);
        assert_eq!(p.poll(t0).send, vec![(2, vec![6, 7])]);
    }

    #[test]
    fn parents_in_the_same_bundle_go_first() {
        let t0 = Instant::now();
        let mut p = Planner::new(Limits { max_files: 10, ..limits() });
        p.add(5, create(1, 5), 0, t0);
        p.add(6, create(5, 6), 1, t0);
        p.hurry(6);
        assert_eq!(p.poll(t0).send, vec![(1, vec![5, 6])]);
    }

    #[test]
    fn operations_on_one_directory_keep_their_order() {
        let t0 = Instant::now();
        let mut p = Planner::new(Limits { max_files: 2, max_inflight: 4, ..limits() });
        p.add(10, create(1, 10), 0, t0);
        p.add(11, create(1, 11), 0, t0); // bundle 1
        let unlink = OP_BASE + 1;
        p.add(unlink, vec![Claim::exclusive(Object::Names(1)), Claim::exclusive(Object::Ino(10))], 0, t0);
        let chmod = OP_BASE + 2;
        p.add(chmod, vec![Claim::exclusive(Object::Ino(99))], 0, t0); // bundle 2
        p.add(12, create(2, 12), 0, t0);
        p.hurry_all();
        let poll = p.poll(t0);
        assert_eq!(poll.send, vec![(1, vec![10, 11]), (3, vec![12])], "the unlink waits; elsewhere goes on");
        assert_eq!(p.claiming(Object::Names(1)), vec![10, 11, unlink]);
        p.done(1);
        assert_eq!(p.poll(t0).send, vec![(2, vec![unlink, chmod])]);
    }

    #[test]
    fn removed_before_sealing() {
        let t0 = Instant::now();
        let mut p = Planner::new(limits());
        p.add(5, create(1, 5), 1, t0);
        p.add(6, create(1, 6), 1, t0);
        assert!(p.is_forming(5));
        assert!(p.remove(5));
        assert!(p.claiming(Object::Ino(5)).is_empty());
        p.hurry(6);
        assert!(!p.remove(6), "sealed items stay");
        assert_eq!(p.poll(t0).send, vec![(1, vec![6])]);
        assert_eq!(p.len(), 1);
        p.done(1);
        assert!(p.is_empty());
        p.add(7, create(1, 7), 1, t0);
        assert!(p.remove(7));
        assert!(p.poll(t0 + Duration::from_secs(1)).send.is_empty(), "an emptied bundle is never sent");
    }
}
