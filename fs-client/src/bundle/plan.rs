//! The bundle planner, sans IO: which pending entries go together into
//! which bundle, when a bundle is sealed (enough files, enough bytes, old
//! enough, or someone waits for one of its entries) and when it may be sent
//! (fewer than `max_inflight` in flight, and every bundle holding the
//! directory one of its entries lives in already done, so a parent is
//! always committed before, or in the same bundle as, its children).
//!
//! Entries are identified by inode number. Time comes in as `now`.

use fs_proto::Ino;
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Identifies one bundle.
pub type BundleId = u64;

/// Bounds of one bundle and of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries per bundle.
    pub max_files: usize,
    /// Bytes per bundle (a larger file makes a bundle alone).
    pub max_bytes: u64,
    /// How long an entry may wait before its bundle is sealed.
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
    items: Vec<Ino>,
    bytes: u64,
    since: Instant,
}

#[derive(Debug)]
struct Sealed {
    id: BundleId,
    items: Vec<Ino>,
    deps: HashSet<BundleId>,
}

/// What to do now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Poll {
    /// Bundles to send now, with their entries in order.
    pub send: Vec<(BundleId, Vec<Ino>)>,
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
    /// Entry -> the bundle holding it (forming, sealed or in flight).
    place: HashMap<Ino, BundleId>,
    /// Entry -> its parent directory.
    parent: HashMap<Ino, Ino>,
    /// Entries of bundles not yet done, for [`Planner::done`].
    members: HashMap<BundleId, Vec<Ino>>,
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
            parent: HashMap::new(),
            members: HashMap::new(),
            urgent: false,
        }
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Entries not yet done.
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

    /// Whether `ino` is pending (in any bundle not yet done).
    pub fn contains(&self, ino: Ino) -> bool {
        self.place.contains_key(&ino)
    }

    /// Whether `ino` is pending and its bundle has been sent.
    pub fn is_sent(&self, ino: Ino) -> bool {
        self.place.get(&ino).is_some_and(|b| self.inflight.contains(b))
    }

    /// Queue entry `ino` in `parent` carrying `bytes`.
    pub fn add(&mut self, ino: Ino, parent: Ino, bytes: u64, now: Instant) {
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
            f.items.push(ino);
            f.bytes += bytes;
        }
        self.place.insert(ino, id);
        self.parent.insert(ino, parent);
        self.members.entry(id).or_default().push(ino);
        let full = self
            .forming
            .as_ref()
            .is_some_and(|f| f.items.len() >= self.limits.max_files || f.bytes >= self.limits.max_bytes);
        if full {
            self.seal();
        }
    }

    /// Take `ino` back if its bundle is still forming (e.g. the file was
    /// removed before it was sent). False if it is sealed or sent.
    pub fn remove(&mut self, ino: Ino) -> bool {
        let Some(f) = &mut self.forming else { return false };
        if self.place.get(&ino) != Some(&f.id) {
            return false;
        }
        f.items.retain(|i| *i != ino);
        let id = f.id;
        if f.items.is_empty() {
            self.forming = None;
        }
        self.place.remove(&ino);
        self.parent.remove(&ino);
        if let Some(m) = self.members.get_mut(&id) {
            m.retain(|i| *i != ino);
        }
        true
    }

    /// Someone waits for `ino`: seal the bundle holding it now.
    pub fn hurry(&mut self, ino: Ino) {
        if self.forming.as_ref().is_some_and(|f| self.place.get(&ino) == Some(&f.id)) {
            self.seal();
        }
    }

    /// Seal whatever is forming (and keep doing so for entries added until
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
        for ino in &f.items {
            if let Some(b) = self.parent.get(ino).and_then(|p| self.place.get(p)) {
                if *b != f.id {
                    deps.insert(*b);
                }
            }
        }
        self.sealed.push_back(Sealed { id: f.id, items: f.items, deps });
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

    /// Bundle `id` is done (committed, or failed): its entries are no
    /// longer pending. Returns them.
    pub fn done(&mut self, id: BundleId) -> Vec<Ino> {
        self.inflight.remove(&id);
        let items = self.members.remove(&id).unwrap_or_default();
        for ino in &items {
            self.place.remove(ino);
            self.parent.remove(ino);
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

    #[test]
    fn seals_by_count_bytes_and_age() {
        let t0 = Instant::now();
        let mut p = Planner::new(limits());
        for ino in 10..13 {
            p.add(ino, 1, 1, t0);
        }
        let poll = p.poll(t0);
        assert_eq!(poll.send, vec![(1, vec![10, 11, 12])], "three files fill a bundle");
        p.add(20, 1, 150, t0);
        assert_eq!(p.poll(t0).send, vec![(2, vec![20])], "a big file makes a bundle alone");
        p.add(30, 1, 1, t0);
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
        p.add(5, 1, 0, t0); // mkdir 5
        p.hurry(5);
        p.add(6, 5, 1, t0); // a file in 5: next bundle
        p.add(7, 1, 1, t0);
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
        p.add(5, 1, 0, t0);
        p.add(6, 5, 1, t0);
        p.hurry(6);
        assert_eq!(p.poll(t0).send, vec![(1, vec![5, 6])]);
    }

    #[test]
    fn removed_before_sealing() {
        let t0 = Instant::now();
        let mut p = Planner::new(limits());
        p.add(5, 1, 1, t0);
        p.add(6, 1, 1, t0);
        assert!(p.remove(5));
        p.hurry(6);
        assert!(!p.remove(6), "sealed entries stay");
        assert_eq!(p.poll(t0).send, vec![(1, vec![6])]);
        assert_eq!(p.len(), 1);
        p.done(1);
        assert!(p.is_empty());
        p.add(7, 1, 1, t0);
        assert!(p.remove(7));
        assert!(p.poll(t0 + Duration::from_secs(1)).send.is_empty(), "an emptied bundle is never sent");
    }
}
