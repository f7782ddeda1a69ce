//! What the mount knows locally under its directory write leases, sans IO:
//! the leased directories with every name in them, the entries created
//! here and not yet committed ([`Node`]s), the other operations done here
//! and not yet committed ([`PendingOp`]s: unlink, rmdir, rename, link,
//! setattr; write-back), all in one [`Planner`] in the order they were
//! made; the attributes those operations gave committed inodes (an
//! overlay), the leased inode numbers, the reserved disk space, and which
//! pending items a request to the meta server must wait for
//! ([`LocalState::classify`]).

use crate::bundle::plan::{Claim, ItemId, Limits, Object, Planner, OP_BASE};
use crate::bundle::ship::Source;
use fs_proto::bundle::{BundleEntry, BundleOp, InoRange, QuotaRoom, MAX_HELD_RANGES};
use fs_proto::meta::MetaRequest;
use fs_proto::{Attr, DirEntry, FileKind, Ino, RemoteError};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Instant, SystemTime};

/// Where a local entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A regular file still open here: its bytes are in the open file's
    /// dirty state.
    Open,
    /// In a bundle (forming, sealed or sent); `data`: with its bytes (else
    /// only its creation, the bytes follow as a new generation).
    Queued {
        /// Carries its bytes.
        data: bool,
    },
}

/// A grant's quota room and what this mount charged against it since:
/// local creates (files) and space reserved for local closes (bytes, as
/// stored cost: a little more than the quota counts, so on the safe side).
#[derive(Debug, Clone, Copy, Default)]
pub struct Room {
    /// What the meta server said was left.
    pub limit: QuotaRoom,
    /// Files charged.
    pub files: u64,
    /// Bytes charged.
    pub bytes: u64,
}

/// An entry created here and not yet committed.
#[derive(Debug, Clone)]
pub struct Node {
    /// Directory.
    pub parent: Ino,
    /// Name.
    pub name: String,
    /// Attributes as shown.
    pub attr: Attr,
    /// Symlink target.
    pub target: Option<String>,
    /// Where it is.
    pub stage: Stage,
    /// Its bytes, once queued with them.
    pub source: Option<Source>,
    /// Reserved space charged for it.
    pub charged: u64,
    /// When times were last set explicitly (they win over older writes).
    pub times_set: Option<SystemTime>,
    /// The entry as its bundle will carry it, fixed the first time it was
    /// changed after its bundle was sealed (later changes are operations of
    /// their own, after it); None: built from the current state.
    pub frozen: Option<BundleEntry>,
    /// Owner and group asked for by chown before it was sent (None: the
    /// mount's user, the directory's group rules).
    pub owner: (Option<u32>, Option<u32>),
}

impl Node {
    /// The entry its bundle carries (`data`: with its bytes).
    pub fn entry(&self, data: bool) -> BundleEntry {
        if let Some(e) = &self.frozen {
            return e.clone();
        }
        BundleEntry {
            parent: self.parent,
            name: self.name.clone(),
            ino: self.attr.ino,
            kind: self.attr.kind,
            perm: self.attr.perm,
            atime: self.attr.atime,
            mtime: self.attr.mtime,
            ctime: self.attr.ctime,
            size: if data { self.attr.size } else { 0 },
            target: self.target.clone(),
            uid: self.owner.0,
            gid: self.owner.1,
        }
    }
}

/// An operation other than a create, done here and waiting in a bundle.
#[derive(Debug, Clone)]
pub struct PendingOp {
    /// What the meta server is to do.
    pub op: BundleOp,
}

pub use crate::bundle::plan::create_claims;

/// A directory this mount holds the write lease on.
#[derive(Debug, Clone)]
pub struct DirState {
    /// Its attributes when leased or created.
    pub attr: Attr,
    /// Every name in it (committed or local) and what it names.
    pub names: HashMap<String, (Ino, FileKind)>,
    /// Being given back: no new local work.
    pub recalling: bool,
    /// Names the kernel was told are absent, for as long as it caches
    /// entries (negative dentries: `rsync` looks its target names up three
    /// times before it renames onto them). Invalidated before the lease
    /// goes back.
    pub absent: HashSet<String>,
}

/// Most names per leased directory the kernel may cache as absent.
pub const MAX_ABSENT: usize = 1 << 16;

/// The answer to a lookup in a leased directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A local entry with these attributes.
    Local(Attr),
    /// A committed entry: ask for its attributes the usual way.
    Committed(Ino),
    /// No such name.
    Absent,
}

/// What a request to the meta server must wait for first.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Before {
    /// Local entries to commit.
    pub inos: Vec<Ino>,
    /// Directories whose local entries must all be committed.
    pub settle: Vec<Ino>,
    /// Leased directories to settle and give back (we change them through
    /// the meta server).
    pub release: Vec<Ino>,
    /// Pending operations on what the request names, to commit first.
    pub ops: Vec<ItemId>,
}

/// The local state.
#[derive(Debug)]
pub struct LocalState {
    /// Local entries.
    pub nodes: HashMap<Ino, Node>,
    by_name: HashMap<(Ino, String), Ino>,
    /// Leased directories.
    pub dirs: HashMap<Ino, DirState>,
    /// Pending bundles.
    pub planner: Planner,
    ranges: VecDeque<InoRange>,
    /// The latest ranges as granted (numbers of them may still be pending):
    /// each new bundle capability must cover them.
    granted: VecDeque<InoRange>,
    /// Reserved bytes not yet charged to an entry.
    pub budget: u64,
    /// The quota room of the latest grant and what was charged against it.
    pub room: Room,
    /// Directories not to ask a lease for again before the instant.
    pub cooldown: HashMap<Ino, Instant>,
    /// Bytes of queued entries not yet committed.
    pub queued_bytes: u64,
    /// Directories recalled while their lease was being taken (the grant
    /// came, the listing had not): not to be held.
    pub recalled: std::collections::HashSet<Ino>,
    /// Operations other than creates, by item number (from [`OP_BASE`]).
    pub ops: HashMap<ItemId, PendingOp>,
    next_op: ItemId,
    /// Attributes of committed inodes as operations done here left them
    /// (true while a lease of ours covers them).
    pub attrs: HashMap<Ino, Attr>,
    /// Operations acknowledged here that the meta server refused, by the
    /// inode they concern: reported at its next fsync or close.
    pub refused: HashMap<Ino, RemoteError>,
    /// Leased directories whose local view a refused operation made
    /// untrue: to give back (their truth is at the meta server).
    pub resync: Vec<Ino>,
    /// Inodes made here that have no extended attributes (committed, in a
    /// directory still leased here): `getxattr` and `listxattr` are
    /// answered here (chown(2) and write(2) probe `security.capability`).
    pub bare: std::collections::HashSet<Ino>,
}

impl LocalState {
    /// Empty, bundling within `limits`.
    pub fn new(limits: Limits) -> Self {
        LocalState {
            nodes: HashMap::new(),
            by_name: HashMap::new(),
            dirs: HashMap::new(),
            planner: Planner::new(limits),
            ranges: VecDeque::new(),
            granted: VecDeque::new(),
            budget: 0,
            room: Room::default(),
            cooldown: HashMap::new(),
            queued_bytes: 0,
            recalled: Default::default(),
            ops: HashMap::new(),
            next_op: OP_BASE,
            attrs: HashMap::new(),
            refused: HashMap::new(),
            resync: Vec::new(),
            bare: Default::default(),
        }
    }

    /// Queue operation `op` with its `claims` after everything done before.
    pub fn record(&mut self, op: BundleOp, claims: Vec<Claim>, now: Instant) -> ItemId {
        self.next_op += 1;
        let id = self.next_op;
        self.ops.insert(id, PendingOp { op });
        self.planner.add(id, claims, 0, now);
        id
    }

    /// Pending items (entries or operations) claiming `ino` or its names.
    pub fn pending_on(&self, ino: Ino) -> Vec<ItemId> {
        let mut v = self.planner.claiming(Object::Ino(ino));
        v.extend(self.planner.claiming(Object::Names(ino)));
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Take `name` out of leased `dir` (and out of the local entries' name
    /// index); what it named.
    pub fn remove_name(&mut self, dir: Ino, name: &str) -> Option<(Ino, FileKind)> {
        let d = self.dirs.get_mut(&dir)?;
        let gone = d.names.remove(name)?;
        if self.by_name.get(&(dir, name.to_string())) == Some(&gone.0) {
            self.by_name.remove(&(dir, name.to_string()));
        }
        Some(gone)
    }

    /// Put `name` -> `ino` in leased `dir` (replacing what it named); a
    /// local entry moves there.
    pub fn insert_name(&mut self, dir: Ino, name: &str, ino: Ino, kind: FileKind) {
        if let Some(d) = self.dirs.get_mut(&dir) {
            d.names.insert(name.to_string(), (ino, kind));
        }
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.parent = dir;
            n.name = name.to_string();
            self.by_name.insert((dir, name.to_string()), ino);
        }
    }

    /// The attributes known here of `ino` (a local entry's, or what
    /// operations done here left); None: ask the cache.
    pub fn attr_of(&self, ino: Ino) -> Option<Attr> {
        self.nodes.get(&ino).map(|n| n.attr.clone()).or_else(|| self.attrs.get(&ino).cloned())
    }

    /// Change the attributes of `ino` as known here (a local entry's own,
    /// else the overlay, starting from `base`).
    pub fn update_attr(&mut self, ino: Ino, base: Option<Attr>, f: impl FnOnce(&mut Attr)) -> Option<Attr> {
        if let Some(n) = self.nodes.get_mut(&ino) {
            f(&mut n.attr);
            return Some(n.attr.clone());
        }
        let a = match self.attrs.get_mut(&ino) {
            Some(a) => a,
            None => self.attrs.entry(ino).or_insert(base?),
        };
        f(a);
        Some(a.clone())
    }

    /// Directory `dir` changed here at `now`: its times.
    pub fn touch_dir(&mut self, dir: Ino, now: fs_proto::Timestamp, links: i32) {
        let base = self.dirs.get(&dir).map(|d| d.attr.clone());
        let upd = |a: &mut Attr| {
            a.mtime = now;
            a.ctime = now;
            a.nlink = (a.nlink as i64 + links as i64).max(2) as u32;
        };
        if let Some(d) = self.dirs.get_mut(&dir) {
            upd(&mut d.attr);
        }
        self.update_attr(dir, base, upd);
    }

    /// The meta server answered a change of a committed inode made through
    /// it with `a`: the attributes shown here for it (a leased directory's,
    /// the overlay's) are that answer now.
    pub fn answered(&mut self, a: &Attr) {
        if let Some(x) = self.attrs.get_mut(&a.ino) {
            *x = a.clone();
        }
        if let Some(d) = self.dirs.get_mut(&a.ino) {
            d.attr = a.clone();
        }
    }

    /// The meta server refused operation `op`, acknowledged here: what it
    /// was to change is not what the local state says. Keep the refusal for
    /// the next fsync/close of what it concerns, and stop trusting the local
    /// view of it: its directories' leases are given back by the caller
    /// (see [`Self::refused_dirs`]), the attributes dropped.
    pub fn op_refused(&mut self, op: &BundleOp, e: RemoteError) {
        tracing::warn!(?op, "an operation acknowledged here was refused by the meta server: {e}");
        let req = op.as_request();
        for ino in req.named_inos() {
            self.attrs.remove(&ino);
            self.refused.insert(ino, e.clone());
            if self.dirs.contains_key(&ino) {
                self.resync.push(ino);
            }
        }
    }

    /// An operation on local entry `ino` is recorded after its creation:
    /// fix what its creation carries first (see [`Node::frozen`]), so that
    /// later changes to it do not change it. True if it is queued (an entry
    /// still open here is not: nothing about it may be recorded yet).
    pub fn freeze(&mut self, ino: Ino) -> bool {
        let Some(n) = self.nodes.get_mut(&ino) else { return false };
        if n.stage == Stage::Open {
            return false;
        }
        if n.frozen.is_none() {
            let data = matches!(n.stage, Stage::Queued { data: true }) && n.attr.kind == FileKind::Regular;
            n.frozen = Some(n.entry(data));
        }
        true
    }

    /// Whether `ino` may still be changed in place (a local entry open
    /// here, or whose bundle is still forming).
    pub fn foldable(&self, ino: Ino) -> bool {
        self.nodes
            .get(&ino)
            .is_some_and(|n| n.frozen.is_none() && (n.stage == Stage::Open || self.planner.is_forming(ino)))
    }

    /// Whether `ino` is a local entry still open here, not queued.
    pub fn is_open_node(&self, ino: Ino) -> bool {
        self.nodes.get(&ino).is_some_and(|n| n.stage == Stage::Open)
    }

    /// The leased directory holding `ino` (None: none known here).
    pub fn covering(&self, ino: Ino) -> Option<Ino> {
        if let Some(n) = self.nodes.get(&ino) {
            return self.leased(n.parent).map(|_| n.parent);
        }
        if self.leased(ino).is_some() {
            return Some(ino);
        }
        self.dirs.iter().find(|(_, d)| !d.recalling && d.names.values().any(|(i, _)| *i == ino)).map(|(p, _)| *p)
    }

    /// [`LocalState::covering`], looking first in `hint`, the directory
    /// `ino` was last seen in (one directory's names, not every one's).
    pub fn covering_hinted(&self, ino: Ino, hint: Option<Ino>) -> Option<Ino> {
        if let Some(h) = hint.filter(|h| *h != ino) {
            if !self.nodes.contains_key(&ino)
                && self.leased(h).is_some_and(|d| d.names.values().any(|(i, _)| *i == ino))
            {
                return Some(h);
            }
        }
        self.covering(ino)
    }

    /// Nothing local at all (the fast path of every request).
    pub fn is_quiet(&self) -> bool {
        self.nodes.is_empty() && self.dirs.is_empty() && self.ops.is_empty()
    }

    /// A leased directory we may work in locally.
    pub fn leased(&self, dir: Ino) -> Option<&DirState> {
        self.dirs.get(&dir).filter(|d| !d.recalling)
    }

    /// Inode numbers left.
    pub fn inos_left(&self) -> u64 {
        self.ranges.iter().map(|r| r.count).sum()
    }

    /// More inode numbers.
    pub fn add_range(&mut self, r: InoRange) {
        if r.count > 0 {
            self.ranges.push_back(r);
            self.granted.push_back(r);
            if self.granted.len() > MAX_HELD_RANGES {
                self.granted.pop_front();
            }
        }
    }

    /// The ranges a new bundle capability must cover (see `granted`).
    pub fn held(&self) -> Vec<InoRange> {
        self.granted.iter().copied().collect()
    }

    /// Take a grant's quota room: entries not yet committed were not
    /// counted by the meta server when it granted, so they are charged
    /// against it from the start.
    pub fn set_room(&mut self, limit: QuotaRoom) {
        let files = self.nodes.len() as u64;
        let bytes = self.nodes.values().map(|n| n.charged).sum();
        self.room = Room { limit, files, bytes };
    }

    /// Whether the quota leaves no room for another local create.
    pub fn no_file_room(&self) -> bool {
        self.room.limit.files.is_some_and(|f| self.room.files >= f)
    }

    /// The next inode number (None: none left, or no quota room for
    /// another file: the create goes to the meta server, which decides).
    pub fn take_ino(&mut self) -> Option<Ino> {
        if self.no_file_room() {
            return None;
        }
        self.room.files += 1;
        loop {
            let r = self.ranges.front_mut()?;
            if r.count == 0 {
                self.ranges.pop_front();
                continue;
            }
            let ino = r.first;
            r.first += 1;
            r.count -= 1;
            return Some(ino);
        }
    }

    /// The local entry named `name` in `parent`, if any.
    pub fn node_named(&self, parent: Ino, name: &str) -> Option<Ino> {
        self.by_name.get(&(parent, name.to_string())).copied()
    }

    /// Look `name` up in leased `dir` (None: not leased here).
    pub fn lookup(&self, dir: Ino, name: &str) -> Option<Found> {
        let d = self.leased(dir)?;
        Some(match d.names.get(name) {
            None => Found::Absent,
            Some((ino, _)) => match self.nodes.get(ino) {
                Some(n) => Found::Local(n.attr.clone()),
                None => Found::Committed(*ino),
            },
        })
    }

    /// The kernel is to cache `name` in leased `dir` as absent: true if it
    /// may (the lease is held, the name is absent, and the directory's
    /// list of such names has room); the name is remembered so that it is
    /// invalidated before the lease goes back.
    pub fn note_absent(&mut self, dir: Ino, name: &str) -> bool {
        let Some(d) = self.dirs.get_mut(&dir).filter(|d| !d.recalling) else { return false };
        if d.names.contains_key(name) {
            return false;
        }
        if d.absent.contains(name) {
            return true;
        }
        if d.absent.len() >= MAX_ABSENT {
            return false;
        }
        d.absent.insert(name.to_string());
        true
    }

    /// Record a new local entry in leased `parent` (a directory is leased
    /// too, empty). False if the name exists.
    pub fn create(&mut self, node: Node) -> bool {
        let (parent, ino, kind) = (node.parent, node.attr.ino, node.attr.kind);
        let Some(d) = self.dirs.get_mut(&parent).filter(|d| !d.recalling) else { return false };
        if d.names.contains_key(&node.name) {
            return false;
        }
        d.names.insert(node.name.clone(), (ino, kind));
        self.by_name.insert((parent, node.name.clone()), ino);
        if kind == FileKind::Directory {
            self.dirs.insert(
                ino,
                DirState { attr: node.attr.clone(), names: HashMap::new(), recalling: false, absent: HashSet::new() },
            );
        }
        self.nodes.insert(ino, node);
        true
    }

    /// Queue local entry `ino` in a bundle (with its bytes, or only its
    /// creation).
    pub fn queue(&mut self, ino: Ino, source: Option<Source>, data: bool, now: Instant) {
        let Some(n) = self.nodes.get_mut(&ino) else { return };
        if n.stage != Stage::Open {
            return;
        }
        let bytes = if data { n.attr.size } else { 0 };
        if !data {
            n.attr.size = 0;
        }
        n.stage = Stage::Queued { data };
        n.source = source;
        self.queued_bytes += bytes;
        let claims = create_claims(n.parent, ino);
        self.planner.add(ino, claims, bytes, now);
    }

    /// Someone waits for `ino`: seal its bundle, and those of the local
    /// directories above it.
    pub fn hurry(&mut self, ino: Ino) {
        let mut cur = Some(ino);
        for _ in 0..4096 {
            let Some(i) = cur else { break };
            self.planner.hurry(i);
            cur = self.nodes.get(&i).map(|n| n.parent).filter(|p| self.nodes.contains_key(p));
        }
    }

    /// Drop a local entry that was never sent (removed before commit).
    /// False if it is open, sent, a directory with entries, or named by an
    /// item recorded after its creation (it is frozen, or a directory other
    /// items still claim: dropping its creation would leave them without
    /// their subject).
    pub fn forget(&mut self, ino: Ino) -> bool {
        let Some(n) = self.nodes.get(&ino) else { return false };
        if n.stage == Stage::Open || n.frozen.is_some() {
            return false;
        }
        if n.attr.kind == FileKind::Directory && self.dirs.get(&ino).is_some_and(|d| !d.names.is_empty()) {
            return false;
        }
        // Nor a directory that items recorded since still name (entries
        // made in it and moved out or removed by operations of their own):
        // without its creation they would fail.
        let named = |o| self.planner.claiming(o).iter().any(|i| *i != ino);
        if named(Object::Ino(ino)) || named(Object::Names(ino)) {
            return false;
        }
        if !self.planner.remove(ino) {
            return false;
        }
        self.drop_node(ino, false);
        true
    }

    fn drop_node(&mut self, ino: Ino, committed: bool) -> Option<Node> {
        let n = self.nodes.remove(&ino)?;
        if n.stage == (Stage::Queued { data: true }) {
            self.queued_bytes = self.queued_bytes.saturating_sub(n.attr.size);
        }
        self.by_name.remove(&(n.parent, n.name.clone()));
        if !committed {
            if let Some(d) = self.dirs.get_mut(&n.parent) {
                if d.names.get(&n.name).is_some_and(|(i, _)| *i == ino) {
                    d.names.remove(&n.name);
                }
            }
            self.dirs.remove(&ino);
        }
        Some(n)
    }

    /// The commit of `ino` is done: it is no longer local. A directory
    /// that failed is no longer leased either.
    pub fn settled(&mut self, ino: Ino, ok: bool) -> Option<Node> {
        if ok && self.nodes.contains_key(&ino) {
            self.bare.insert(ino);
        }
        self.drop_node(ino, ok)
    }

    /// Whether `ino` is known here to have no extended attributes.
    pub fn is_bare(&self, ino: Ino) -> bool {
        self.nodes.contains_key(&ino) || self.bare.contains(&ino)
    }

    /// Put back a local entry whose bundle failed, as open here again (its
    /// bytes are back in the open file); its name is listed again if its
    /// directory is still leased.
    pub fn reinsert(&mut self, mut node: Node) {
        node.stage = Stage::Open;
        node.source = None;
        node.attr.size = 0;
        let ino = node.attr.ino;
        if let Some(d) = self.dirs.get_mut(&node.parent) {
            d.names.insert(node.name.clone(), (ino, node.attr.kind));
        }
        self.by_name.insert((node.parent, node.name.clone()), ino);
        self.nodes.insert(ino, node);
    }

    /// Local entries directly in `dir`.
    pub fn in_dir(&self, dir: Ino) -> Vec<Ino> {
        self.nodes.iter().filter(|(_, n)| n.parent == dir).map(|(i, _)| *i).collect()
    }

    /// The names of leased `dir`, each with the local attributes when it is
    /// a local entry (`attr` None: a committed entry, attributes elsewhere).
    pub fn listing(&self, dir: Ino) -> Option<Vec<DirEntry>> {
        let d = self.leased(dir)?;
        let mut v: Vec<_> = d
            .names
            .iter()
            .map(|(name, (ino, kind))| DirEntry {
                name: name.clone(),
                ino: *ino,
                kind: *kind,
                attr: self.nodes.get(ino).map(|n| n.attr.clone()).or_else(|| self.attrs.get(ino).cloned()),
                xattrs: None,
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Some(v)
    }

    /// The subscription ended: no lease holds any more (local entries and
    /// operations are still committed; what they did to attributes is no
    /// longer known to be true).
    /// Returns the names the kernel may cache as absent in them.
    pub fn lost(&mut self) -> Vec<(Ino, String)> {
        let absent = self
            .dirs
            .iter_mut()
            .flat_map(|(d, s)| std::mem::take(&mut s.absent).into_iter().map(|n| (*d, n)))
            .collect();
        self.dirs.clear();
        self.attrs.clear();
        self.bare.clear();
        absent
    }

    /// What `req` must wait for before it goes to the meta server.
    /// `child` names what a name in a directory stands for when known
    /// (e.g. from the metadata cache).
    pub fn classify(&self, req: &MetaRequest, child: &dyn Fn(Ino, &str) -> Option<Ino>) -> Before {
        let mut b = Before::default();
        let ino = |i: Ino, b: &mut Before| {
            if self.nodes.contains_key(&i) {
                b.inos.push(i);
            }
        };
        let named = |p: Ino, n: &str, b: &mut Before| {
            if let Some(i) = self.node_named(p, n) {
                b.inos.push(i);
            }
        };
        let changes = |d: Ino, b: &mut Before| {
            if self.dirs.contains_key(&d) {
                b.release.push(d);
            }
        };
        // A directory removed or replaced must be empty at the meta server:
        // what is local in it goes first. When we cannot tell which it is,
        // every leased directory with local entries does.
        let child_dir = |p: Ino, n: &str, b: &mut Before| {
            let known = match self.dirs.get(&p) {
                Some(d) => d.names.get(n).map(|(i, _)| *i),
                None => child(p, n),
            };
            match known {
                Some(i) if self.dirs.contains_key(&i) => b.release.push(i),
                Some(_) => {}
                None if self.dirs.contains_key(&p) => {}
                None => {
                    b.release.extend(self.dirs.keys().filter(|d| self.nodes.values().any(|x| x.parent == **d)).copied())
                }
            }
        };
        let f = req.footprint();
        for i in f.addresses {
            ino(i, &mut b);
        }
        for d in f.lists {
            ino(d, &mut b);
            if self.nodes.values().any(|n| n.parent == d) {
                b.settle.push(d);
            }
        }
        for (p, n, how) in &f.names {
            ino(*p, &mut b);
            named(*p, n, &mut b);
            if how.may_take_dir() {
                child_dir(*p, n, &mut b);
            }
            if how.changes_dir() {
                changes(*p, &mut b);
            }
        }
        // Whatever the request names by number: operations done here on it
        // go first (the meta server must see them before it answers).
        for i in req.named_inos() {
            b.ops.extend(self.pending_on(i).into_iter().filter(|x| *x >= OP_BASE));
        }
        b.inos.sort_unstable();
        b.inos.dedup();
        b.release.sort_unstable();
        b.release.dedup();
        b.ops.sort_unstable();
        b.ops.dedup();
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ino: Ino, kind: FileKind) -> Attr {
        Attr { uid: 1, gid: 1, ..Attr::new(ino, kind, 0o644) }
    }

    fn node(parent: Ino, name: &str, ino: Ino, kind: FileKind) -> Node {
        Node {
            parent,
            name: name.into(),
            attr: attr(ino, kind),
            target: None,
            stage: if kind == FileKind::Regular { Stage::Open } else { Stage::Queued { data: false } },
            source: None,
            charged: 0,
            times_set: None,
            frozen: None,
            owner: (None, None),
        }
    }

    fn leased(dir: Ino, names: &[(&str, Ino)]) -> LocalState {
        let mut s = LocalState::new(Limits::default());
        let names = names.iter().map(|(n, i)| (n.to_string(), (*i, FileKind::Regular))).collect();
        s.dirs.insert(
            dir,
            DirState { attr: attr(dir, FileKind::Directory), names, recalling: false, absent: HashSet::new() },
        );
        s
    }

    #[test]
    fn absent_names_are_remembered_while_the_lease_is_held() {
        let mut s = leased(1, &[("old", 50)]);
        assert!(s.note_absent(1, "nope"), "an absent name in a leased directory may be cached");
        assert!(s.note_absent(1, "nope"), "again");
        assert!(!s.note_absent(1, "old"), "a name that is there is not absent");
        assert!(!s.note_absent(2, "x"), "not leased: the kernel may not cache it");
        let mut again = leased(1, &[]);
        again.dirs.get_mut(&1).unwrap().recalling = true;
        assert!(!again.note_absent(1, "x"), "not while giving the lease back");
        assert_eq!(s.lost(), vec![(1, "nope".to_string())], "the names to invalidate when the leases are lost");
        assert!(!s.note_absent(1, "nope"), "no lease any more");
    }

    #[test]
    fn lookups_in_a_leased_directory_are_answered_here() {
        let mut s = leased(1, &[("old", 50)]);
        s.add_range(InoRange { first: 100, count: 2 });
        let ino = s.take_ino().unwrap();
        assert!(s.create(node(1, "new", ino, FileKind::Regular)));
        assert!(!s.create(node(1, "old", 101, FileKind::Regular)), "an existing name is not created again");
        assert_eq!(s.lookup(1, "old"), Some(Found::Committed(50)));
        assert!(matches!(s.lookup(1, "new"), Some(Found::Local(a)) if a.ino == 100));
        assert_eq!(s.lookup(1, "nope"), Some(Found::Absent), "a name nobody has is known absent");
        assert_eq!(s.lookup(2, "x"), None, "not leased: ask the meta server");
        assert_eq!(s.listing(1).unwrap().iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["new", "old"]);
        s.dirs.get_mut(&1).unwrap().recalling = true;
        assert_eq!(s.lookup(1, "old"), None, "nothing is answered locally while giving the lease back");
        assert_eq!(s.take_ino(), Some(101));
        assert_eq!(s.take_ino(), None);
    }

    #[test]
    fn new_directories_are_leased_and_entries_settle() {
        let mut s = leased(1, &[]);
        let now = Instant::now();
        assert!(s.create(node(1, "d", 10, FileKind::Directory)));
        s.queue(10, None, false, now); // no-op: already queued by construction
        s.planner.add(10, create_claims(1, 10), 0, now);
        assert!(s.leased(10).is_some(), "a directory made here is leased here");
        assert!(s.create(node(10, "f", 11, FileKind::Regular)));
        s.queue(11, None, true, now);
        assert!(!s.forget(10), "a directory with entries stays");
        assert_eq!(s.in_dir(10), vec![11]);
        assert!(s.forget(11), "an entry never sent can be dropped");
        assert!(s.lookup(10, "f") == Some(Found::Absent));
        s.hurry(10);
        let p = s.planner.poll(now);
        assert_eq!(p.send.len(), 1);
        let (id, items) = &p.send[0];
        assert_eq!(items, &vec![10]);
        s.planner.done(*id);
        assert!(s.settled(10, true).is_some());
        assert_eq!(s.lookup(1, "d"), Some(Found::Committed(10)));
        assert!(s.leased(10).is_some(), "still leased once committed");
        s.lost();
        assert!(s.leased(1).is_none() && s.leased(10).is_none());
    }

    #[test]
    fn unsent_entries_are_not_rewritten_under_what_came_since() {
        let mut s = leased(1, &[]);
        let now = Instant::now();
        assert!(s.create(node(1, "t", 10, FileKind::Directory)));
        s.planner.add(10, create_claims(1, 10), 0, now);
        // An entry of t moved out by an operation of its own: t's creation
        // stays, or the operation has no directory to act in.
        s.record(
            BundleOp::Rename {
                parent: 10,
                name: "f".into(),
                new_parent: 1,
                new_name: "f".into(),
                flags: Default::default(),
                ino: 11,
            },
            vec![Claim::exclusive(Object::Names(10)), Claim::exclusive(Object::Names(1))],
            now,
        );
        assert!(!s.forget(10), "an operation recorded since acts in it");
        assert!(s.planner.claimed_after(10, Object::Names(1)), "a name of 1 was used since t was made");
        assert!(!s.planner.claimed_after(10, Object::Names(7)));
    }

    #[test]
    fn failed_entries_disappear() {
        let mut s = leased(1, &[]);
        assert!(s.create(node(1, "d", 10, FileKind::Directory)));
        s.settled(10, false);
        assert_eq!(s.lookup(1, "d"), Some(Found::Absent));
        assert!(s.leased(10).is_none());
    }

    #[test]
    fn requests_wait_for_what_they_name() {
        let mut s = leased(1, &[("old", 50)]);
        assert!(s.create(node(1, "new", 100, FileKind::Regular)));
        let q = |r: MetaRequest| s.classify(&r, &|_, _| None);
        assert_eq!(q(MetaRequest::GetAttr { ino: 100 }).inos, vec![100]);
        assert_eq!(q(MetaRequest::GetAttr { ino: 50 }), Before::default(), "committed entries need nothing");
        assert_eq!(q(MetaRequest::Lookup { parent: 1, name: "new".into() }).inos, vec![100]);
        let b = q(MetaRequest::ReadDir { ino: 1, after: None, limit: 10, plus: true });
        assert_eq!(b.settle, vec![1]);
        let b = q(MetaRequest::Unlink { parent: 1, name: "old".into() });
        assert_eq!((b.inos, b.release), (vec![], vec![1]), "changing a leased directory gives it back");
        let b = q(MetaRequest::Rename {
            parent: 1,
            name: "new".into(),
            new_parent: 2,
            new_name: "x".into(),
            flags: Default::default(),
        });
        assert_eq!((b.inos, b.release), (vec![100], vec![1]));
        let b = q(MetaRequest::Batch(vec![MetaRequest::GetAttr { ino: 100 }, MetaRequest::OpenRead { ino: 100 }]));
        assert_eq!(b.inos, vec![100]);
        // A leased directory (7) whose parent (3) is not leased here.
        s.dirs.insert(
            7,
            DirState {
                attr: attr(7, FileKind::Directory),
                names: HashMap::new(),
                recalling: false,
                absent: HashSet::new(),
            },
        );
        assert!(s.create(node(7, "x", 101, FileKind::Regular)));
        let rmdir = MetaRequest::Rmdir { parent: 3, name: "d".into() };
        assert_eq!(s.classify(&rmdir, &|p, n| (p == 3 && n == "d").then_some(7)).release, vec![7]);
        assert_eq!(s.classify(&rmdir, &|_, _| Some(99)).release, Vec::<Ino>::new(), "another directory");
        assert_eq!(s.classify(&rmdir, &|_, _| None).release, vec![1, 7], "unknown: every one with local entries");
    }
}
