//! The mount's operations answered under directory write leases: each hook
//! returns `Some` when it handled the operation here, `None` to let the
//! ordinary path (through the meta server) run.

use super::state::{DirState, Found, Node, Stage};
use super::{COOLDOWN, MAX_LOCAL};
use crate::bundle::ship::Source;
use crate::mount::dirty::{Dirty, Piece};
use crate::mount::entries::HIDDEN_PREFIX;
use crate::mount::files::{FileState, OpenFile};
use crate::mount::fs::{io_errno, unexpected, Inner, Op};
use crate::mount::io::AttrChange;
use fs_proto::bundle::stored_cost;
use fs_proto::meta::{MetaRequest, MetaResponse};
use fs_proto::mode;
use fs_proto::{Attr, Cred, DirEntry, FileKind, Ino, Timestamp};
use fuser::{Errno, TimeOrNow};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Files up to this size are held in memory once closed (their spill file
/// is closed); larger ones keep it.
const IN_MEMORY: u64 = 1 << 20;
/// Bytes of queued entries before creates wait for commits.
const MAX_QUEUED_BYTES: u64 = 256 << 20;

fn errno_of(e: &fs_proto::RemoteError) -> Errno {
    Errno::from_i32(crate::error::to_errno(e.code))
}

/// The contents of a dirty file of a new entry (no base generation).
fn dirty_bytes(d: &Dirty) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(d.size as usize);
    for p in d.plan(0, d.size) {
        match p {
            Piece::Spill(a, b) => out.extend(d.read_spill(a, b - a)?),
            Piece::Zero(a, b) | Piece::Base(a, b) => out.resize(out.len() + (b - a) as usize, 0),
        }
    }
    Ok(out)
}

/// Whether `dir` is leased here (true), may not be asked for now (false:
/// being given back, or cooling down), or may be asked for (None).
fn lease_ready(b: &super::Bundler, dir: Ino) -> Option<bool> {
    b.with(|l| {
        if l.leased(dir).is_some() {
            Some(true)
        } else if l.dirs.contains_key(&dir) || l.cooldown.get(&dir).is_some_and(|t| *t > Instant::now()) {
            Some(false)
        } else {
            None
        }
    })
}

impl Inner {
    fn local_ttl(&self) -> Duration {
        if self.cache.is_live() {
            self.opts.kernel_ttl
        } else {
            Duration::ZERO
        }
    }

    /// Lookup in a leased directory.
    pub async fn local_lookup(&self, cred: Option<&Cred>, parent: Ino, name: &str) -> Option<Op<(Attr, Duration)>> {
        if !self.bundler.enabled() || name == "." || name == ".." {
            return None;
        }
        let found = self.bundler.with(|l| l.lookup(parent, name))?;
        Some(match found {
            Found::Absent => Err(Errno::ENOENT),
            Found::Local(a) => Ok((self.overlay(a).await, self.local_ttl())),
            Found::Committed(ino) => self.attr(cred, ino).await,
        })
    }

    /// How long the kernel may cache `name` in `parent` as absent, after a
    /// lookup answered ENOENT: the entry timeout while `parent` is leased
    /// here (nobody else can create the name; the kernel is told before
    /// the lease goes back), else not at all.
    pub fn absent_ttl(&self, parent: Ino, name: &str) -> Option<Duration> {
        if !self.bundler.enabled() || name == "." || name == ".." {
            return None;
        }
        let ttl = self.local_ttl();
        (!ttl.is_zero() && self.bundler.with(|l| l.note_absent(parent, name))).then_some(ttl)
    }

    /// Attributes of a local entry.
    pub async fn local_attr(&self, ino: Ino) -> Option<Op<(Attr, Duration)>> {
        if !self.bundler.enabled() {
            return None;
        }
        let a = self.bundler.with(|l| l.attr_of(ino))?;
        Some(Ok((self.overlay(a).await, self.local_ttl())))
    }

    /// The listing of a leased directory.
    pub async fn local_listing(&self, cred: Option<&Cred>, dir: Ino) -> Option<Op<Arc<Vec<DirEntry>>>> {
        if !self.bundler.enabled() {
            return None;
        }
        let mut out = self.bundler.with(|l| l.listing(dir))?;
        let mut missing = Vec::new();
        for (i, e) in out.iter_mut().enumerate() {
            if e.attr.is_none() {
                e.attr = self.cache.attr(e.ino).map(|(a, _)| a);
            }
            if e.attr.is_none() {
                missing.push(i);
            }
        }
        for chunk in missing.chunks(4096) {
            let reqs = chunk.iter().map(|&i| MetaRequest::GetAttr { ino: out[i].ino }).collect();
            let (replies, t) = match self.call(cred, MetaRequest::Batch(reqs)).await {
                Ok((MetaResponse::Batch(r), t)) => (r, t),
                Ok((other, _)) => return Some(Err(unexpected(other))),
                Err(e) => return Some(Err(e)),
            };
            for (&i, r) in chunk.iter().zip(replies) {
                if let Ok(MetaResponse::Attr(a)) = r {
                    self.cache.put_attr(t, &a);
                    out[i].attr = Some(a);
                }
            }
        }
        Some(Ok(Arc::new(out)))
    }

    /// Whether `dir` is leased here or may be asked for now (not being
    /// given back, not cooling down after a recall).
    pub(super) fn may_lease(&self, dir: Ino) -> bool {
        self.bundler.enabled() && self.cache.is_live() && lease_ready(&self.bundler, dir) != Some(false)
    }

    /// Hold the write lease on `dir` (asking for it if we may). False: work
    /// through the meta server.
    pub(super) async fn ensure_lease(&self, dir: Ino) -> bool {
        self.lease_dirs(dir, false).await
    }

    /// [`Self::ensure_lease`] for an operation of a tree walk (`rm -rf`,
    /// `chmod -R` remove or change entries directory after directory): the
    /// sibling directories listed beside `dir` are asked for in the same
    /// request, and come with their listings, so the rest of the walk asks
    /// nothing (one round trip instead of two per directory across a WAN).
    pub(super) async fn ensure_lease_walking(&self, dir: Ino) -> bool {
        self.lease_dirs(dir, true).await
    }

    /// Directories listed beside `dir` (in its parent's cached listing, or
    /// its leased parent's names) that are not held here and may be asked
    /// for.
    fn siblings(&self, dir: Ino) -> Vec<Ino> {
        let Some(parent) = self.cache.parent_hint(dir) else { return Vec::new() };
        let listed: Vec<(Ino, FileKind)> = match self.cache.listing(parent) {
            Some((l, _)) => l.iter().map(|e| (e.ino, e.kind)).collect(),
            None => {
                self.bundler.with(|l| l.leased(parent).map(|d| d.names.values().copied().collect())).unwrap_or_default()
            }
        };
        listed
            .into_iter()
            .filter(|(i, k)| *k == FileKind::Directory && *i != dir)
            .map(|(i, _)| i)
            .filter(|i| lease_ready(&self.bundler, *i).is_none())
            .take(fs_proto::bundle::MAX_ALSO)
            .collect()
    }

    async fn lease_dirs(&self, dir: Ino, walking: bool) -> bool {
        let b = &self.bundler;
        if !b.enabled() || !self.cache.is_live() {
            return false;
        }
        let ready = |b: &super::Bundler| lease_ready(b, dir);
        if let Some(r) = ready(b) {
            return r;
        }
        let _one = b.acquiring().await;
        if let Some(r) = ready(b) {
            return r;
        }
        let refuse = || {
            b.with(|l| l.cooldown.insert(dir, Instant::now() + COOLDOWN));
            false
        };
        let also = if walking { self.siblings(dir) } else { Vec::new() };
        b.with(|l| {
            l.recalled.remove(&dir);
            for d in &also {
                l.recalled.remove(d);
            }
        });
        let ticket = self.cache.ticket();
        let (attr, also) = match b.ask(Some(dir), also).await {
            Ok(g) => match g.dir {
                Some(a) => (a, g.also),
                None => return refuse(),
            },
            Err(e) => {
                tracing::debug!(dir, "no directory lease: {e}");
                return refuse();
            }
        };
        for a in also {
            let d = a.attr.ino;
            // The listing came with the lease: true while it is held.
            self.cache.put_listing(ticket, d, &a.entries);
            let names = a.entries.iter().map(|e| (e.name.clone(), (e.ino, e.kind))).collect();
            let held = b.with(|l| {
                if l.recalled.remove(&d) {
                    return false;
                }
                l.dirs.insert(d, DirState { attr: a.attr, names, recalling: false, absent: Default::default() });
                true
            });
            tracing::debug!(dir = d, held, entries = a.entries.len(), "directory lease held along with {dir}");
        }
        // Nobody else changes it now: its listing stays true.
        let list = match self.listing(None, dir).await {
            Ok(l) => l,
            Err(_) => {
                b.give_back_now(dir).await;
                return refuse();
            }
        };
        let names = list.iter().map(|e| (e.name.clone(), (e.ino, e.kind))).collect();
        let held = b.with(|l| {
            if l.recalled.remove(&dir) {
                return false;
            }
            l.dirs.insert(dir, DirState { attr, names, recalling: false, absent: Default::default() });
            true
        });
        if !held {
            return refuse();
        }
        tracing::debug!(dir, entries = list.len(), "directory lease held");
        true
    }

    /// Wait while too much is pending locally.
    async fn backpressure(&self) {
        for _ in 0..600 {
            let (n, bytes) = self.bundler.with(|l| (l.nodes.len(), l.queued_bytes));
            if n < MAX_LOCAL && bytes < MAX_QUEUED_BYTES {
                return;
            }
            self.bundler.flush_all(Duration::from_millis(100)).await;
        }
    }

    /// A fresh local entry's attributes, or None (no lease, no inode
    /// number, name taken).
    async fn new_node(&self, parent: Ino, name: &str, kind: FileKind, perm: u32) -> Option<Node> {
        if name.starts_with(HIDDEN_PREFIX) || !self.ensure_lease(parent).await {
            return None;
        }
        self.backpressure().await;
        let mut ino = self.bundler.with(|l| l.take_ino());
        if ino.is_none() {
            let _one = self.bundler.acquiring().await;
            // Out of numbers, or of quota room (which a fresh grant
            // recounts: entries committed since count at the meta server).
            if self.bundler.with(|l| l.inos_left() == 0 || l.no_file_room()) {
                let _ = self.bundler.ask(None, Vec::new()).await;
            }
            ino = self.bundler.with(|l| l.take_ino());
        }
        let ino = ino?;
        let user = self.bundler.user();
        let uid = user.uid;
        let pattr = self.bundler.with(|l| l.leased(parent).map(|d| d.attr.clone()))?;
        let now = Timestamp::now();
        let gid = mode::new_gid(user, pattr.perm, pattr.gid);
        let perm = mode::new_mode(user, kind, perm, pattr.perm, gid);
        let attr = Attr {
            ino,
            kind,
            perm,
            nlink: if kind == FileKind::Directory { 2 } else { 1 },
            uid,
            gid,
            size: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            rdev: 0,
            gen: 0,
            hash: None,
            ncopy: pattr.ncopy,
        };
        Some(Node {
            parent,
            name: name.to_string(),
            attr,
            target: None,
            stage: Stage::Open,
            source: None,
            charged: 0,
            times_set: None,
            frozen: None,
            owner: (None, None),
        })
    }

    /// Record a new local entry; None if the name appeared meanwhile.
    fn add_node(&self, node: Node, queue: bool) -> Option<Attr> {
        let attr = node.attr.clone();
        let parent = node.parent;
        let dir = attr.kind == FileKind::Directory;
        let ok = self.bundler.with(|l| {
            if !l.create(node) {
                return false;
            }
            // The directory changed here: its times (and links) as this
            // mount shows them while it holds the lease, so a stat of it
            // (the kernel asks after every create in it) is answered here,
            // not by the meta server once per bundle its commit changed.
            l.touch_dir(parent, attr.mtime, if dir { 1 } else { 0 });
            if queue {
                l.queue(attr.ino, None, true, Instant::now());
            }
            true
        });
        ok.then_some(attr)
    }

    /// Create (and open) a regular file in a leased directory.
    #[allow(clippy::too_many_arguments)]
    pub async fn local_create(
        &self,
        cred: Option<&Cred>,
        parent: Ino,
        name: &str,
        mode: u32,
        exclusive: bool,
        write: bool,
    ) -> Option<Op<(Attr, Duration, u64)>> {
        if !self.bundler.enabled() || cred.is_some() || !self.ensure_lease(parent).await {
            return None;
        }
        match self.bundler.with(|l| l.lookup(parent, name))? {
            Found::Absent => {}
            _ if exclusive => return Some(Err(Errno::EEXIST)),
            Found::Local(a) if self.bundler.stage(a.ino) == Some(Stage::Open) => {
                let (fh, _) = self.files.open(a.ino, write);
                return Some(Ok((self.overlay(a).await, self.local_ttl(), fh)));
            }
            Found::Local(a) => return self.open_existing(cred, a.ino, write).await,
            Found::Committed(ino) => return self.open_existing(cred, ino, write).await,
        }
        let node = self.new_node(parent, name, FileKind::Regular, mode).await?;
        let attr = self.add_node(node, false)?;
        let (fh, file) = self.files.open(attr.ino, write);
        let mut st = file.state.lock().await;
        if st.dirty.is_none() {
            st.attr = Some(attr.clone());
            st.grant = None;
        }
        drop(st);
        self.keep_pages(attr.ino, 0);
        Some(Ok((attr, self.local_ttl(), fh)))
    }

    /// Open an existing entry of a leased directory (a non-exclusive create).
    async fn open_existing(&self, cred: Option<&Cred>, ino: Ino, write: bool) -> Option<Op<(Attr, Duration, u64)>> {
        if let Some(Err(e)) = self.bundler.materialize(ino, super::why::LOCAL).await {
            return Some(Err(errno_of(&e)));
        }
        let (a, ttl) = match self.attr(cred, ino).await {
            Ok(x) => x,
            Err(e) => return Some(Err(e)),
        };
        match a.kind {
            FileKind::Regular => {}
            FileKind::Directory => return Some(Err(Errno::EISDIR)),
            _ => return Some(Err(Errno::EINVAL)),
        }
        let (fh, file) = self.files.open(ino, write);
        let mut st = file.state.lock().await;
        if st.dirty.is_none() {
            st.attr = Some(a.clone());
            st.grant = None;
        }
        drop(st);
        Some(Ok((self.overlay(a).await, ttl, fh)))
    }

    /// mkdir in a leased directory (the new directory is leased too).
    pub async fn local_mkdir(
        &self,
        cred: Option<&Cred>,
        parent: Ino,
        name: &str,
        mode: u32,
    ) -> Option<Op<(Attr, Duration)>> {
        if !self.bundler.enabled() || cred.is_some() || !self.ensure_lease(parent).await {
            return None;
        }
        if self.bundler.with(|l| l.lookup(parent, name))? != Found::Absent {
            return Some(Err(Errno::EEXIST));
        }
        let node = self.new_node(parent, name, FileKind::Directory, mode).await?;
        let attr = self.add_node(node, true)?;
        self.bundler.kick();
        Some(Ok((attr, self.local_ttl())))
    }

    /// symlink in a leased directory.
    pub async fn local_symlink(
        &self,
        cred: Option<&Cred>,
        parent: Ino,
        name: &str,
        target: &str,
    ) -> Option<Op<(Attr, Duration)>> {
        if !self.bundler.enabled() || cred.is_some() || target.is_empty() || target.len() > 4095 {
            return None;
        }
        if !self.ensure_lease(parent).await {
            return None;
        }
        if self.bundler.with(|l| l.lookup(parent, name))? != Found::Absent {
            return Some(Err(Errno::EEXIST));
        }
        let mut node = self.new_node(parent, name, FileKind::Symlink, 0o777).await?;
        node.attr.size = target.len() as u64;
        node.target = Some(target.to_string());
        let attr = self.add_node(node, true)?;
        self.bundler.kick();
        Some(Ok((attr, self.local_ttl())))
    }

    /// Remove a local entry never sent.
    pub async fn local_remove(&self, parent: Ino, name: &str, dir: bool) -> Option<Op<()>> {
        if !self.bundler.enabled() {
            return None;
        }
        let (ino, kind) = self.bundler.with(|l| {
            let ino = l.node_named(parent, name)?;
            l.nodes.get(&ino).map(|n| (ino, n.attr.kind))
        })?;
        match (dir, kind == FileKind::Directory) {
            (true, false) => return Some(Err(Errno::ENOTDIR)),
            (false, true) => return Some(Err(Errno::EISDIR)),
            _ => {}
        }
        let done = self.bundler.with(|l| {
            if !l.forget(ino) {
                return false;
            }
            if let Some(p) = l.nodes.get_mut(&parent) {
                if dir {
                    p.attr.nlink = p.attr.nlink.saturating_sub(1).max(2);
                }
            }
            true
        });
        done.then_some(Ok(()))
    }

    /// Open a local entry.
    pub async fn local_open(&self, ino: Ino, write: bool) -> Option<Op<(u64, bool)>> {
        if !self.bundler.enabled() {
            return None;
        }
        match self.bundler.stage(ino)? {
            Stage::Open => {
                let (fh, _) = self.files.open(ino, write);
                Some(Ok((fh, true)))
            }
            // Reading what was just written here: its bytes are here.
            Stage::Queued { data: true } if !write => {
                let attr = self.bundler.with(|l| l.nodes.get(&ino).map(|n| n.attr.clone()))?;
                let (fh, file) = self.files.open(ino, false);
                let mut st = file.state.lock().await;
                if st.dirty.is_none() {
                    st.attr = Some(attr);
                    st.grant = None;
                }
                Some(Ok((fh, true)))
            }
            Stage::Queued { .. } => match self.bundler.materialize(ino, super::why::LOCAL).await {
                Some(Err(e)) => Some(Err(errno_of(&e))),
                _ => None,
            },
        }
    }

    /// Read `len` bytes at `offset` of a local entry queued with its bytes
    /// (None: not such an entry any more; read the ordinary way).
    pub fn local_read(&self, ino: Ino, offset: u64, len: u64) -> Option<Op<Vec<u8>>> {
        if !self.bundler.enabled() {
            return None;
        }
        let (source, size) = self.bundler.with(|l| {
            let n = l.nodes.get(&ino)?;
            (n.stage == Stage::Queued { data: true }).then(|| (n.source.clone(), n.attr.size))
        })?;
        let end = offset.saturating_add(len).min(size);
        if offset >= end {
            return Some(Ok(Vec::new()));
        }
        Some(match source {
            None => Ok(vec![0; (end - offset) as usize]),
            Some(Source::Bytes(b)) => Ok(b.get(offset as usize..end as usize).unwrap_or_default().to_vec()),
            Some(Source::Dirty(d)) => {
                let mut out = Vec::with_capacity((end - offset) as usize);
                for p in d.plan(offset, end - offset) {
                    match p {
                        Piece::Spill(a, b) => match d.read_spill(a, b - a) {
                            Ok(v) => out.extend(v),
                            Err(e) => return Some(Err(io_errno(&e))),
                        },
                        Piece::Zero(a, b) | Piece::Base(a, b) => out.resize(out.len() + (b - a) as usize, 0),
                    }
                }
                Ok(out)
            }
            Some(Source::Path(_)) => return None,
        })
    }

    /// close(2) of a handle of a local file: acknowledged here within the
    /// reserved space; otherwise (or `O_SYNC`) sent and waited for.
    pub async fn local_flush(&self, fh: u64) -> Option<Op<()>> {
        if !self.bundler.enabled() {
            return None;
        }
        let h = self.files.handle(fh)?;
        let ino = h.file.ino;
        if self.bundler.stage(ino)? != Stage::Open {
            return None;
        }
        if self.bundler.is_sync(fh, false) {
            let mut st = h.file.state.lock().await;
            return Some(self.sync_local(&h.file, &mut st).await);
        }
        let size = h.file.state.lock().await.dirty.as_ref().map_or(0, |d| d.size);
        let charged = self.bundler.with(|l| l.nodes.get(&ino).map_or(0, |n| n.charged));
        let cost = stored_cost(size).saturating_sub(charged);
        let reserved = if cost == 0 { Ok(()) } else { self.bundler.reserve(cost).await };
        match reserved {
            Ok(()) => {
                self.bundler.with(|l| {
                    if let Some(n) = l.nodes.get_mut(&ino) {
                        n.charged += cost;
                    }
                });
                // The last handle is being closed: queue the file now, so
                // that what the close acknowledged is what any later
                // request sees (release follows on its own time).
                if self.files.handles(ino) <= 1 {
                    let mut st = h.file.state.lock().await;
                    if self.bundler.stage(ino) == Some(Stage::Open) {
                        let size = st.dirty.as_ref().map_or(0, |d| d.size);
                        self.stage_release(&h.file, &mut st).await;
                        if let Some(a) = st.attr.as_mut() {
                            a.size = size;
                        }
                    }
                }
                Some(Ok(()))
            }
            Err(e) => {
                tracing::debug!(ino, "no space reserved ({e}); committing at close");
                // What was acknowledged before goes first, then this file.
                self.bundler.flush_all(self.remote.timeout() * 6).await;
                let mut st = h.file.state.lock().await;
                Some(self.sync_local(&h.file, &mut st).await)
            }
        }
    }

    /// Send local file `f` with its bytes now and wait: fsync, `O_SYNC`
    /// close, close without reserved space. On failure the file stays (its
    /// creation committed alone), its bytes stay dirty here.
    async fn sync_local(&self, f: &OpenFile, st: &mut FileState) -> Op<()> {
        let ino = f.ino;
        let Some(snapshot) = self.bundler.with(|l| l.nodes.get(&ino).cloned()) else { return Ok(()) };
        let dirty = st.dirty.take().map(Arc::new);
        let size = dirty.as_ref().map_or(0, |d| d.size);
        let mtime = dirty.as_ref().map(|d| d.mtime);
        self.bundler.set_mtime(ino, mtime);
        self.bundler.queue_data(ino, dirty.clone().map(Source::Dirty), size, true);
        match self.bundler.wait_for(ino).await {
            Some(Ok(a)) => {
                st.attr = Some(a.clone());
                st.grant = None;
                self.cache.forget_attr(ino);
                self.keep_pages(ino, a.gen);
                Ok(())
            }
            None => Ok(()),
            Some(Err(e)) => {
                tracing::warn!(ino, "file not committed: {e}");
                st.dirty = dirty.and_then(|d| Arc::try_unwrap(d).ok());
                let mut back = snapshot;
                back.charged = 0;
                self.bundler.with(|l| l.reinsert(back));
                if let Some(Err(e2)) = self.bundler.materialize(ino, super::why::LOCAL).await {
                    tracing::warn!(ino, "its creation failed too: {e2}");
                }
                Err(errno_of(&e))
            }
        }
    }

    /// The last close of a local file (or unmount): queue it with its bytes.
    async fn stage_release(&self, f: &OpenFile, st: &mut FileState) {
        let ino = f.ino;
        let dirty = st.dirty.take();
        let size = dirty.as_ref().map_or(0, |d| d.size);
        let charged = self.bundler.with(|l| l.nodes.get(&ino).map_or(0, |n| n.charged));
        let cost = stored_cost(size).saturating_sub(charged);
        if cost > 0 {
            if let Err(e) = self.bundler.reserve(cost).await {
                tracing::warn!(ino, "closed without reserved space ({e}); sending it at once");
            }
        }
        let mtime = dirty.as_ref().map(|d| d.mtime);
        let source = match dirty {
            None => None,
            Some(d) if d.size == 0 => None,
            Some(d) if d.size <= IN_MEMORY => match dirty_bytes(&d) {
                Ok(b) => Some(Source::Bytes(b.into())),
                Err(e) => {
                    tracing::warn!(ino, "reading the spill file: {e}");
                    Some(Source::Dirty(Arc::new(d)))
                }
            },
            Some(d) => Some(Source::Dirty(Arc::new(d))),
        };
        self.bundler.set_mtime(ino, mtime);
        self.bundler.queue_data(ino, source, size, false);
    }

    /// `commit_locked` of a local file: nothing while it is open (its bytes
    /// stay local), queued at its last close; a queued one is waited for
    /// and then committed the ordinary way.
    pub async fn local_commit(&self, f: &OpenFile, st: &mut FileState) -> Option<Op<()>> {
        if !self.bundler.enabled() {
            return None;
        }
        if let Some(p) = self.bundler.take_deferred_perm(f.ino) {
            st.final_perm = Some(p);
        }
        match self.bundler.stage(f.ino)? {
            Stage::Open if self.files.file(f.ino).is_some() => Some(Ok(())),
            Stage::Open => {
                self.stage_release(f, st).await;
                Some(Ok(()))
            }
            // Queued at close with everything written: nothing more to do.
            Stage::Queued { .. } if st.dirty.is_none() => Some(Ok(())),
            // Written again since: commit that as a new generation.
            Stage::Queued { .. } => match self.bundler.materialize(f.ino, super::why::LOCAL).await {
                Some(Err(e)) => Some(Err(errno_of(&e))),
                _ => None,
            },
        }
    }

    /// fsync(2): a local file is sent with its bytes and waited for, and
    /// so is what was done to it here; an operation on it the meta server
    /// refused since it was acknowledged is the answer.
    pub async fn fsync(&self, fh: u64) -> Op<()> {
        let Some(h) = self.files.handle(fh) else { return Ok(()) };
        let ino = h.file.ino;
        let r = if self.bundler.enabled() && self.bundler.stage(ino) == Some(Stage::Open) {
            let mut st = h.file.state.lock().await;
            self.sync_local(&h.file, &mut st).await
        } else {
            self.flush(fh).await
        };
        let ops = self.bundler.with(|l| l.pending_on(ino));
        self.bundler.wait_items(&ops).await;
        r.and(self.refused(ino))
    }

    /// An operation on `ino` acknowledged here and refused since, once.
    pub fn refused(&self, ino: Ino) -> Op<()> {
        match self.bundler.with(|l| l.refused.remove(&ino)) {
            Some(e) => Err(errno_of(&e)),
            None => Ok(()),
        }
    }

    /// fsync(2) of a directory: its local entries are committed, and what
    /// was done in it here.
    pub async fn fsyncdir(&self, ino: Ino) -> Op<()> {
        if !self.bundler.enabled() {
            return Ok(());
        }
        self.bundler.settle_dir(ino, super::why::LOCAL).await;
        let ops = self.bundler.with(|l| l.pending_on(ino));
        self.bundler.wait_items(&ops).await;
        match self.bundler.materialize(ino, super::why::LOCAL).await {
            Some(Err(e)) => Err(errno_of(&e)),
            _ => self.refused(ino),
        }
    }

    /// A handle was closed for the last time: forget its `O_SYNC` mark.
    pub fn forget_handle(&self, fh: u64) {
        self.bundler.is_sync(fh, true);
    }

    /// `setattr` of a local entry: mode, times and size stay local; other
    /// changes commit it first.
    pub async fn local_setattr(&self, ino: Ino, ch: &AttrChange) -> Option<Op<(Attr, Duration)>> {
        if !self.bundler.enabled() {
            return None;
        }
        let stage = self.bundler.stage(ino)?;
        let foldable = self.bundler.with(|l| l.foldable(ino));
        let (kind, owner_now) =
            self.bundler.with(|l| l.nodes.get(&ino).map(|n| (n.attr.kind, (n.attr.uid, n.attr.gid))))?;
        let local_size = ch.size.is_none() || (stage == Stage::Open && kind == FileKind::Regular);
        let user = self.bundler.user().clone();
        let uid = ch.uid.map(|u| self.idmap.uid_to_fed(u));
        let gid = ch.gid.map(|g| self.idmap.gid_to_fed(g));
        // chown as the meta server allows it: another owner is root's, another
        // group one of the owner's own.
        let chown_ok = uid.is_none_or(|u| u == owner_now.0 || user.admin)
            && gid.is_none_or(|g| g == owner_now.1 || user.in_group(g));
        if !foldable || !local_size || !chown_ok {
            // Its bundle is sealed: write-back records the change after its
            // creation (`wb_setattr`); otherwise it is committed first and
            // changed the ordinary way.
            if self.opts.writeback && ch.size.is_none() && chown_ok {
                return None;
            }
            return match self.bundler.materialize(ino, super::why::LOCAL).await {
                Some(Err(e)) => Some(Err(errno_of(&e))),
                _ => None,
            };
        }
        if let Some(size) = ch.size {
            let f = self.files.file(ino)?;
            let mut st = f.state.lock().await;
            if self.bundler.stage(ino) != Some(Stage::Open) {
                // Closed (and queued) while we waited for its state: it is
                // committed first and changed the ordinary way.
                drop(st);
                return match self.bundler.materialize(ino, super::why::LOCAL).await {
                    Some(Err(e)) => Some(Err(errno_of(&e))),
                    _ => None,
                };
            }
            if st.dirty.is_none() {
                let base = st.attr.as_ref().map_or(0, |a| a.size);
                match Dirty::new(&self.opts.spill_dir, base) {
                    Ok(d) => st.dirty = Some(d),
                    Err(e) => return Some(Err(io_errno(&e))),
                }
            }
            if let Some(d) = st.dirty.as_mut() {
                if let Err(e) = d.truncate(size) {
                    return Some(Err(io_errno(&e)));
                }
            }
        }
        let now = SystemTime::now();
        let ts = |t: TimeOrNow| match t {
            TimeOrNow::Now => Timestamp::from_system(now),
            TimeOrNow::SpecificTime(s) => Timestamp::from_system(s),
        };
        let a = self.bundler.with(|l| {
            let n = l.nodes.get_mut(&ino)?;
            if let Some(m) = ch.mode {
                n.attr.perm = mode::chmod(&user, n.attr.kind, m, n.attr.gid);
            }
            if uid.is_some() || gid.is_some() {
                if let Some(u) = uid {
                    n.attr.uid = u;
                    n.owner.0 = Some(u);
                }
                if let Some(g) = gid {
                    n.attr.gid = g;
                    n.owner.1 = Some(g);
                }
                n.attr.perm = mode::after_chown(n.attr.kind, n.attr.perm);
            }
            if let Some(t) = ch.atime {
                n.attr.atime = ts(t);
            }
            if let Some(t) = ch.mtime {
                n.attr.mtime = ts(t);
            }
            if ch.atime.is_some() || ch.mtime.is_some() {
                n.times_set = Some(now);
            }
            n.attr.ctime = Timestamp::from_system(now);
            Some(n.attr.clone())
        })?;
        Some(Ok((self.overlay(a).await, self.local_ttl())))
    }

    /// At unmount: queue every local file still open, send everything, wait.
    pub async fn bundle_unmount(&self) {
        if !self.bundler.enabled() {
            return;
        }
        for f in self.files.all() {
            if self.bundler.stage(f.ino) == Some(Stage::Open) {
                let mut st = f.state.lock().await;
                self.stage_release(&f, &mut st).await;
            }
        }
        self.bundler.flush_all(self.remote.timeout() * 6).await;
        let left = self.bundler.with(|l| l.nodes.len());
        if left > 0 {
            tracing::error!(entries = left, "local entries not committed at unmount");
        }
    }
}

impl super::Bundler {
    /// Wake the driver if the planner needs it now (see
    /// [`crate::bundle::plan::Planner::wants_poll`]).
    pub fn kick(&self) {
        if self.lock().local.planner.wants_poll() {
            self.kick.notify_one();
        }
    }

    /// Give a lease back right away (the listing could not be fetched).
    pub async fn give_back_now(&self, dir: Ino) {
        let _ = self.remote.call(None, MetaRequest::ReleaseDirs { dirs: vec![dir] }).await;
    }

    /// Wait for the commit of local entry `ino` (None: not local).
    pub async fn wait_for(&self, ino: Ino) -> Option<Result<Attr, fs_proto::RemoteError>> {
        self.wait(ino).await
    }

    /// The modification time a closing file's entry gets: its last write,
    /// unless times were set explicitly after it.
    pub fn set_mtime(&self, ino: Ino, written: Option<SystemTime>) {
        let Some(w) = written else { return };
        self.with(|l| {
            if let Some(n) = l.nodes.get_mut(&ino) {
                if n.times_set.is_none_or(|t| t < w) {
                    n.attr.mtime = Timestamp::from_system(w);
                    n.attr.ctime = n.attr.ctime.max(n.attr.mtime);
                }
            }
        });
    }
}
