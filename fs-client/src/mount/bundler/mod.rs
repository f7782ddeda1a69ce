//! Small-file bundling in the mount (see [`fs_proto::bundle`]).
//!
//! When the mount creates something in a directory, it asks the meta server
//! for a write lease on that directory (one round trip, with a range of
//! inode numbers and a bundle capability), and fetches its listing if it
//! had entries. From then on, creates, mkdirs, symlinks, writes, closes,
//! lookups, listings and attribute changes of new entries in it are
//! answered here ([`ops`]); a directory made here is leased here too. New
//! entries wait in bundles ([`crate::bundle::plan`]): sealed after 100 ms,
//! 1,024 entries or 32 MiB, sent by [`Bundler`]'s driver to the file server
//! the meta server named at our site, several in flight.
//!
//! - close acknowledges locally only within disk space reserved on that file
//!   server ([`Bundler::reserve`]); beyond it, close sends the file and
//!   waits, so running out of space is ENOSPC at close, not lost data.
//! - fsync, close of an `O_SYNC` file, `fsyncdir` and unmount send what they
//!   cover and wait until it is committed.
//! - a recall ([`fs_proto::callback::Invalidation::Recall`]) commits every
//!   local entry of the directory and gives the lease back; so does any
//!   change this mount makes to a leased directory through the meta server,
//!   and any request naming a local entry waits for its commit first
//!   ([`Bundler::before`], called for every metadata request).
//! - when the callback subscription ends, every lease is gone; local entries
//!   are still committed.
//!
//! The state is the sans-IO [`state::LocalState`]; this module does the IO.

mod ops;
pub mod state;
mod writeback;

use super::remote::Remote;
use crate::bundle::plan::{BundleId, ItemId, Limits, OP_BASE};
use crate::bundle::ship::{ship, Outgoing};
use crate::counters::Counters;
use crate::error::ClientError;
use fs_proto::bundle::{LeaseGrant, LeaseRequest};
use fs_proto::callback::Invalidation;
use fs_proto::meta::{MetaRequest, MetaResponse};
use fs_proto::rpc::{call, PeerAddr};
use fs_proto::server::{ServerRequest, ServerResponse};
use fs_proto::{Attr, ErrorCode, FileKind, Ino, RemoteError, ServerLoc, SignedCapability, Timestamp};
use state::{LocalState, Stage};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch, Notify};

/// Inode numbers asked for at a time.
pub const INO_BATCH: u32 = 4096;
/// Ask for more inode numbers below this many.
pub const INO_LOW: u64 = 512;
/// Disk space reserved at a time.
pub const RESERVE_CHUNK: u64 = 64 << 20;
/// How long not to ask again for a lease that was recalled or refused.
pub const COOLDOWN: Duration = Duration::from_secs(2);
/// Local entries at most (creates beyond wait for commits).
pub const MAX_LOCAL: usize = 16_384;

/// Where bundles go and with which capability.
#[derive(Debug, Clone)]
pub struct Target {
    /// The file server.
    pub server: ServerLoc,
    /// The bundle capability.
    pub cap: SignedCapability,
    /// Its expiry (ms since the epoch).
    pub expires_ms: u64,
}

type Waiter = oneshot::Sender<Result<Attr, RemoteError>>;

/// Why a local entry is committed before its time: the name of the counter
/// bumped (and the reason logged) when that commits a file still open here
/// alone, its bytes following in a write session of its own (`OpenWrite`).
pub mod why {
    /// The meta server recalled the directory's lease.
    pub const RECALL: &str = "data.alone.recall";
    /// An operation acknowledged here was refused: the lease is given back.
    pub const RESYNC: &str = "data.alone.resync";
    /// This mount changes the leased directory through the meta server.
    pub const RELEASE: &str = "data.alone.release";
    /// A listing of the directory goes to the meta server.
    pub const LISTING: &str = "data.alone.listing";
    /// A request to the meta server names the entry.
    pub const REQUEST: &str = "data.alone.request";
    /// An operation on the entry itself (open, setattr, fsync, commit).
    pub const LOCAL: &str = "data.alone.local";
}

struct Shared {
    local: LocalState,
    /// Files created (alone, before their bytes) writable by their owner
    /// though their mode says otherwise: the mode to set at their last close.
    deferred_perm: HashMap<Ino, u32>,
    waiters: HashMap<Ino, Vec<Waiter>>,
    sync_handles: HashSet<u64>,
    target: Option<Target>,
    /// Callback sessions begun or ended: a capability granted under an
    /// earlier one is not kept (see `lost`).
    epoch: u64,
}

/// The federation user the mount acts as (its certificate's).
#[derive(Debug, Clone)]
pub struct User {
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Root in the namespace (chown, any mode): the meta server's rules
    /// for uid 0. A federation admin acts as root only through `-o cred`,
    /// which never writes back, so this is the federation uid being 0.
    pub admin: bool,
}

impl User {
    /// Member of `gid`.
    pub fn in_group(&self, gid: u32) -> bool {
        self.admin || self.gid == gid || self.groups.contains(&gid)
    }

    /// Owner of something owned by `uid` (or root).
    pub fn owns(&self, uid: u32) -> bool {
        self.admin || self.uid == uid
    }
}

/// The mount's bundling: local state, leases, the driver sending bundles.
pub struct Bundler {
    enabled: bool,
    user: User,
    site: String,
    remote: Remote,
    counters: Arc<Counters>,
    cache: Arc<super::cache::Cache>,
    /// Where the small files this mount commits are kept for its own reads.
    prefetch: Arc<super::prefetch::Prefetch>,
    shared: Mutex<Shared>,
    kick: Notify,
    settled: watch::Sender<u64>,
    acquiring: tokio::sync::Mutex<()>,
    reserving: tokio::sync::Mutex<()>,
    /// Invalidations for the kernel (entries it cached under a lease we give back).
    notes: super::notify::KernelNotes,
}

/// Whether a bundle's failure leaves its outcome open, so it must be sent
/// again: the answer was lost, the commit's outcome is unknown, or nothing
/// could take it yet.
fn retryable(e: &RemoteError) -> bool {
    matches!(e.code, ErrorCode::Unavailable | ErrorCode::NoServer | ErrorCode::Interrupted)
}

/// Files up to this size that this mount committed are kept (within the
/// read-ahead's memory bound) to serve its own reads of them.
const KEEP_WRITTEN: u64 = 1 << 20;

fn gone(what: &str) -> RemoteError {
    RemoteError::new(ErrorCode::Interrupted, what.to_string())
}

impl Bundler {
    /// A bundler acting as federation user `uid`/`gid` at `site`
    /// (`enabled`: false for `-o nobundle`, `cred` and `ro` mounts).
    #[allow(clippy::too_many_arguments)] // the mount's shared parts, each once
    pub fn new(
        enabled: bool,
        user: User,
        site: String,
        remote: Remote,
        counters: Arc<Counters>,
        cache: Arc<super::cache::Cache>,
        prefetch: Arc<super::prefetch::Prefetch>,
        notes: super::notify::KernelNotes,
    ) -> Arc<Self> {
        Arc::new(Bundler {
            enabled,
            user,
            site,
            remote,
            counters,
            cache,
            prefetch,
            notes,
            shared: Mutex::new(Shared {
                local: LocalState::new(Limits::default()),
                deferred_perm: HashMap::new(),
                waiters: HashMap::new(),
                sync_handles: HashSet::new(),
                target: None,
                epoch: 0,
            }),
            kick: Notify::new(),
            settled: watch::channel(0).0,
            acquiring: tokio::sync::Mutex::new(()),
            reserving: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether the mount bundles at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` on the local state.
    pub fn with<T>(&self, f: impl FnOnce(&mut LocalState) -> T) -> T {
        f(&mut self.lock().local)
    }

    /// Start the driver that sends bundles (it ends once the bundler is
    /// dropped).
    pub fn start(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(Self::drive(Arc::downgrade(self)))
    }

    /// Handle `fh` was opened with `O_SYNC`: its close waits for durability.
    pub fn mark_sync(&self, fh: u64) {
        self.lock().sync_handles.insert(fh);
    }

    /// Whether `fh` was opened with `O_SYNC` (forgotten on `release`).
    pub fn is_sync(&self, fh: u64, release: bool) -> bool {
        let mut s = self.lock();
        if release {
            s.sync_handles.remove(&fh)
        } else {
            s.sync_handles.contains(&fh)
        }
    }

    /// Whether `ino` is a local entry, and where.
    pub fn stage(&self, ino: Ino) -> Option<Stage> {
        self.lock().local.nodes.get(&ino).map(|n| n.stage)
    }

    /// Callbacks arrived: recalls start giving leases back.
    pub fn on_callbacks(self: &Arc<Self>, list: &[Invalidation]) {
        for inv in list {
            if let Invalidation::Recall { dir } = inv {
                let (me, dir) = (self.clone(), *dir);
                tokio::spawn(async move { me.give_back(dir, why::RECALL).await });
            }
        }
    }

    /// The callback subscription ended: every lease is gone.
    pub fn lost(&self) {
        let mut s = self.lock();
        if !s.local.dirs.is_empty() {
            tracing::info!(dirs = s.local.dirs.len(), "directory leases lost with the callback subscription");
        }
        let absent: Vec<Invalidation> =
            s.local.lost().into_iter().map(|(parent, name)| Invalidation::Entry { parent, name }).collect();
        self.notes.send(&absent);
        // The bundle capability names the session it was granted to as the
        // holder its commits act for: one of the ended session would act as
        // another mount's, so the leases the next session takes here would
        // be recalled by this mount's own bundles (a file still open in such
        // a directory then goes alone, in a write session of its own). The
        // next bundle asks for one of the new session.
        s.target = None;
        s.epoch += 1;
    }

    /// A callback session began: capabilities asked for before it (while
    /// there was none, or under the one before) are not kept.
    pub fn subscribed(&self) {
        let mut s = self.lock();
        s.target = None;
        s.epoch += 1;
    }

    /// Take what a `LeaseDir` answer gives, asked for in callback-session
    /// `epoch` (its capability is kept only if that session still runs).
    fn granted(&self, g: &LeaseGrant, epoch: u64) {
        let mut s = self.lock();
        if let Some(r) = g.inos {
            s.local.add_range(r);
        }
        let expires_ms = g.cap.peek().map(|c| c.expires_ms).unwrap_or(0);
        s.local.set_room(g.room);
        if s.epoch == epoch {
            s.target = Some(Target { server: g.target.clone(), cap: g.cap.clone(), expires_ms });
        }
    }

    /// Ask for a lease on `dir` (None: only inode numbers and a fresh
    /// capability), and on the directories `also` if they may be had.
    /// Returns the grant.
    pub async fn ask(&self, dir: Option<Ino>, also: Vec<Ino>) -> Result<LeaseGrant, ClientError> {
        let inos = if self.with(|l| l.inos_left()) < INO_LOW { INO_BATCH } else { 0 };
        let held = self.with(|l| l.held());
        let req = LeaseRequest { dir, inos, site: self.site.clone(), held, also };
        let epoch = self.lock().epoch;
        match self.remote.call(None, MetaRequest::LeaseDir(req)).await?.0 {
            MetaResponse::Lease(g) => {
                self.granted(&g, epoch);
                Ok(g)
            }
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Serialise lease requests.
    pub async fn acquiring(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.acquiring.lock().await
    }

    /// Wait for local entry `ino` to be committed (None: it is not local).
    async fn wait(&self, ino: Ino) -> Option<Result<Attr, RemoteError>> {
        let rx = {
            let mut s = self.lock();
            if !s.local.nodes.contains_key(&ino) {
                return None;
            }
            let (tx, rx) = oneshot::channel();
            s.waiters.entry(ino).or_default().push(tx);
            rx
        };
        Some(rx.await.unwrap_or_else(|_| Err(gone("bundler stopped"))))
    }

    /// Queue `ino` (only its creation, if it is still open here) and seal
    /// its bundle now.
    fn hurry(&self, ino: Ino, why: &'static str) {
        {
            let mut s = self.lock();
            let now = Instant::now();
            if let Some(n) = s.local.nodes.get_mut(&ino).filter(|n| n.stage == Stage::Open) {
                tracing::info!(ino, name = %n.name, why, "a file still open here is committed alone");
                self.counters.bump(why);
                // Its bytes follow as a new generation, which the meta
                // server lets only a writer of the file make.
                let perm = n.attr.perm;
                if n.attr.kind == FileKind::Regular && perm & 0o200 == 0 {
                    n.attr.perm |= 0o200;
                    s.deferred_perm.insert(ino, perm);
                }
                s.local.queue(ino, None, false, now);
            }
            // Local directories above it must be queued too (they are, unless open files).
            s.local.hurry(ino);
        }
        self.kick();
    }

    /// Make `ino` exist at the meta server (committing its bundle, or only
    /// its creation if it is still open here) and wait.
    pub async fn materialize(&self, ino: Ino, why: &'static str) -> Option<Result<Attr, RemoteError>> {
        self.hurry(ino, why);
        self.wait(ino).await
    }

    /// Queue `ino` with its bytes (`source`, `size`), sealing its bundle
    /// now when `urgent`.
    pub fn queue_data(&self, ino: Ino, source: Option<crate::bundle::ship::Source>, size: u64, urgent: bool) {
        {
            let mut s = self.lock();
            let now = Instant::now();
            if let Some(n) = s.local.nodes.get_mut(&ino) {
                n.attr.size = size;
            }
            s.local.queue(ino, source, true, now);
            if urgent {
                s.local.hurry(ino);
            }
        }
        self.kick();
    }

    /// Commit every local entry of `dir` and wait.
    pub async fn settle_dir(&self, dir: Ino, why: &'static str) {
        let (inos, ops) = self.with(|l| {
            let mut ops = l.pending_on(dir);
            if let Some(d) = l.dirs.get(&dir) {
                for (ino, _) in d.names.values() {
                    ops.extend(l.pending_on(*ino));
                }
            }
            ops.retain(|i| *i >= OP_BASE);
            (l.in_dir(dir), ops)
        });
        for &i in &inos {
            self.hurry(i, why);
        }
        for i in inos {
            if let Some(Err(e)) = self.wait(i).await {
                tracing::debug!(dir, ino = i, "entry not committed: {e}");
            }
        }
        self.wait_items(&ops).await;
    }

    /// Give the lease on `dir` back: stop local work there, commit what is
    /// local in it, release it at the meta server.
    pub async fn give_back(&self, dir: Ino, why: &'static str) {
        let mut absent = Vec::new();
        let held = {
            let mut s = self.lock();
            s.local.cooldown.insert(dir, Instant::now() + COOLDOWN);
            match s.local.dirs.get_mut(&dir) {
                Some(d) => {
                    d.recalling = true;
                    absent = std::mem::take(&mut d.absent)
                        .into_iter()
                        .map(|name| Invalidation::Entry { parent: dir, name })
                        .collect();
                    true
                }
                None => {
                    // Granted but not taken up yet (its listing is on its
                    // way): it will not be.
                    s.local.recalled.insert(dir);
                    false
                }
            }
        };
        if !held {
            self.give_back_now(dir).await;
            return;
        }
        // Names the kernel caches as absent on our word go first: once the
        // lease is back another mount may create them at once. (Not waited
        // for: the notification may need a lock the kernel holds while it
        // waits for this, e.g. an rmdir of `dir`; the notify thread passes
        // it on long before the release's round trip and commits are done.)
        self.notes.send(&absent);
        self.settle_dir(dir, why).await;
        let r = self.remote.call(None, MetaRequest::ReleaseDirs { dirs: vec![dir] }).await;
        if let Err(e) = r {
            tracing::debug!(dir, "releasing the lease: {e}");
        }
        let mut s = self.lock();
        if let Some(d) = s.local.dirs.remove(&dir) {
            // The kernel cached its names on our word while we held the
            // lease; once another mount changes them we hear nothing (we
            // hold no callback on them now), so the kernel must ask again.
            let names: Vec<Invalidation> =
                d.names.keys().map(|name| Invalidation::Entry { parent: dir, name: name.clone() }).collect();
            self.notes.send(&names);
            // What we did to its entries' attributes is no longer ours to
            // answer for: the meta server has it all now.
            for (ino, _) in d.names.values() {
                if s.local.covering(*ino).is_none() {
                    s.local.attrs.remove(ino);
                    s.local.bare.remove(ino);
                    self.cache.forget_attr(*ino);
                }
            }
        }
        s.local.attrs.remove(&dir);
        drop(s);
        self.cache.forget_attr(dir);
        tracing::debug!(dir, "directory lease given back");
    }

    /// Before a metadata request goes out: commit the local entries it
    /// names, and give back leased directories it changes.
    pub async fn before(&self, req: &MetaRequest) {
        if !self.enabled || matches!(req, MetaRequest::LeaseDir(_) | MetaRequest::ReleaseDirs { .. }) {
            return;
        }
        let b = {
            let s = self.lock();
            if s.local.is_quiet() {
                return;
            }
            let cache = &self.cache;
            s.local.classify(req, &|p, n| cache.name(p, n).and_then(|(i, _)| i))
        };
        self.wait_items(&b.ops).await;
        for d in b.release {
            self.give_back(d, why::RELEASE).await;
        }
        for d in b.settle {
            self.settle_dir(d, why::LISTING).await;
        }
        for i in b.inos {
            if let Some(Err(e)) = self.materialize(i, why::REQUEST).await {
                tracing::debug!(ino = i, "local entry not committed: {e}");
            }
        }
    }

    /// Send everything local that is queued and wait (bounded) until it is
    /// committed.
    pub async fn flush_all(&self, bound: Duration) {
        let mut changed = self.settled.subscribe();
        self.lock().local.planner.hurry_all();
        self.kick.notify_one();
        let until = tokio::time::Instant::now() + bound;
        loop {
            if self.lock().local.planner.is_empty() {
                break;
            }
            if tokio::time::timeout_at(until, changed.changed()).await.is_err() {
                tracing::warn!("bundles still pending after {bound:?}");
                break;
            }
        }
        self.lock().local.planner.relax();
    }

    /// Reserve `bytes` of disk space on the bundle target (from what is
    /// reserved already, else by asking it). `NoSpace` when it cannot.
    pub async fn reserve(&self, bytes: u64) -> Result<(), RemoteError> {
        {
            // Past the quota's room, closes are no longer acknowledged
            // here but committed and waited for, so the meta server's
            // refusal reaches close(2) as EDQUOT.
            let mut s = self.lock();
            let room = &mut s.local.room;
            if let Some(left) = room.limit.bytes {
                if room.bytes.saturating_add(bytes) > left {
                    return Err(RemoteError::new(
                        ErrorCode::QuotaExceeded,
                        format!("the quota left {left} bytes when this mount's lease was granted"),
                    ));
                }
            }
            room.bytes += bytes;
        }
        let take = |s: &mut Shared| {
            if s.local.budget >= bytes {
                s.local.budget -= bytes;
                true
            } else {
                false
            }
        };
        if take(&mut self.lock()) {
            return Ok(());
        }
        let _one = self.reserving.lock().await;
        if take(&mut self.lock()) {
            return Ok(());
        }
        let target = self.target().await?;
        let mut last = RemoteError::new(ErrorCode::NoSpace, "no space reserved");
        for want in [bytes.max(RESERVE_CHUNK), bytes] {
            match self.ask_server(&target, want).await {
                Ok(()) => {
                    let mut s = self.lock();
                    s.local.budget += want;
                    if take(&mut s) {
                        return Ok(());
                    }
                }
                Err(e) if e.code == ErrorCode::NoSpace => last = e,
                Err(e) => return Err(e),
            }
            if want == bytes {
                break;
            }
        }
        Err(last)
    }

    async fn ask_server(&self, target: &Target, bytes: u64) -> Result<(), RemoteError> {
        self.counters.bump("data.reserve");
        let peer = PeerAddr { addr: target.server.addr, name: target.server.host.clone() };
        let unreachable = |e: String| RemoteError::new(ErrorCode::Unavailable, e);
        let conn = self.remote.dialer().connect(&peer).await.map_err(|e| unreachable(e.to_string()))?;
        let req = ServerRequest::Reserve { cap: target.cap.clone(), bytes };
        match call::<_, ServerResponse>(&conn, &peer.name, &req, self.remote.timeout()).await {
            Ok(ServerResponse::Reserved { .. }) => Ok(()),
            Ok(other) => Err(RemoteError::new(ErrorCode::Internal, format!("unexpected reply {other:?}"))),
            Err(fs_proto::rpc::CallError::Remote(e)) => Err(e),
            Err(e) => Err(unreachable(e.to_string())),
        }
    }

    /// The bundle target with a capability valid for a while yet.
    async fn target(&self) -> Result<Target, RemoteError> {
        let now = Timestamp::now().as_millis();
        if let Some(t) = self.lock().target.clone() {
            if t.expires_ms > now + 60_000 {
                return Ok(t);
            }
        }
        let _one = self.acquiring.lock().await;
        if let Some(t) = self.lock().target.clone() {
            if t.expires_ms > now + 60_000 {
                return Ok(t);
            }
        }
        // A capability granted while the callback session changed is not
        // kept: ask again (a few times; then the caller retries later).
        for _ in 0..3 {
            self.ask(None, Vec::new()).await.map_err(|e| RemoteError::new(ErrorCode::Unavailable, e.to_string()))?;
            if let Some(t) = self.lock().target.clone() {
                return Ok(t);
            }
        }
        Err(RemoteError::new(ErrorCode::NoServer, "no bundle target kept: the callback session keeps changing"))
    }

    async fn drive(me: std::sync::Weak<Self>) {
        loop {
            let Some(me) = me.upgrade() else { return };
            let now = Instant::now();
            let poll = me.lock().local.planner.poll(now);
            for (id, items) in poll.send {
                let me = me.clone();
                tokio::spawn(async move { me.send(id, items).await });
            }
            let at = poll.wake.unwrap_or(now + Duration::from_secs(1)).min(now + Duration::from_secs(1));
            let _ = tokio::time::timeout_at(tokio::time::Instant::from_std(at), me.kick.notified()).await;
        }
    }

    /// Send bundle `id` and apply its results.
    async fn send(self: Arc<Self>, id: BundleId, ids: Vec<ItemId>) {
        let (kept, items): (Vec<ItemId>, Vec<Outgoing>) = {
            let s = self.lock();
            ids.iter()
                .filter_map(|i| {
                    if *i >= OP_BASE {
                        return s.local.ops.get(i).map(|o| (*i, Outgoing { op: o.op.clone(), source: None }));
                    }
                    let n = s.local.nodes.get(i)?;
                    let data = matches!(n.stage, Stage::Queued { data: true }) && n.attr.kind == FileKind::Regular;
                    let entry = n.entry(data);
                    let source = if data && entry.size > 0 { n.source.clone() } else { None };
                    Some((*i, Outgoing::create(entry, source)))
                })
                .unzip()
        };
        // Taken before anything is sent: what the commits answer may be
        // cached unless something changed those inodes meanwhile.
        let ticket = self.cache.ticket();
        let results = self.deliver(id, &items).await;
        let mut kept_bodies = Vec::new();
        for ((item, it), r) in kept.iter().zip(&items).zip(&results) {
            if let (true, Ok(a)) = (*item < OP_BASE, r) {
                // The attributes of a file this mount just created: its next
                // lookup and open here ask nothing.
                self.cache.put_attr(ticket, a);
                if let Some(src) = it.source.as_ref().filter(|_| a.size <= KEEP_WRITTEN) {
                    kept_bodies.push((a.clone(), src.clone()));
                }
            }
        }
        if !kept_bodies.is_empty() {
            let pf = self.prefetch.clone();
            tokio::task::spawn_blocking(move || {
                for (a, src) in kept_bodies {
                    match src.read_whole(a.size) {
                        Ok(body) => pf.written(&a, body),
                        Err(e) => tracing::debug!(ino = a.ino, "not kept for local reads: {e}"),
                    }
                }
            });
        }
        let mut s = self.lock();
        s.local.planner.done(id);
        let mut failed = 0;
        for ((item, it), r) in kept.iter().zip(&items).zip(results) {
            if r.is_err() {
                failed += 1;
            }
            if *item >= OP_BASE {
                s.local.ops.remove(item);
                if let Err(e) = r {
                    s.local.op_refused(&it.op, e);
                }
                continue;
            }
            let ino = *item;
            s.local.settled(ino, r.is_ok());
            let waiters = s.waiters.remove(&ino).unwrap_or_default();
            if let Err(e) = &r {
                if waiters.is_empty() {
                    tracing::error!(ino, op = ?it.op, "acknowledged entry could not be committed: {e}");
                    s.local.refused.insert(ino, e.clone());
                }
            }
            for w in waiters {
                let _ = w.send(r.clone());
            }
        }
        // Entries that vanished from the local state meanwhile have no result.
        for i in ids {
            if let Some(ws) = s.waiters.get(&i) {
                if !s.local.nodes.contains_key(&i) && !ws.is_empty() {
                    for w in s.waiters.remove(&i).unwrap_or_default() {
                        let _ = w.send(Err(gone("entry dropped")));
                    }
                }
            }
        }
        let resync = std::mem::take(&mut s.local.resync);
        drop(s);
        for dir in resync {
            let me = self.clone();
            tokio::spawn(async move { me.give_back(dir, why::RESYNC).await });
        }
        tracing::debug!(bundle = id, items = items.len(), failed, "bundle done");
        self.settled.send_modify(|v| *v += 1);
        self.kick.notify_one();
    }

    /// Wait until none of `items` is pending (sealing their bundles now).
    pub async fn wait_items(&self, items: &[ItemId]) {
        if items.is_empty() {
            return;
        }
        let mut changed = self.settled.subscribe();
        loop {
            let left = {
                let mut s = self.lock();
                let left: Vec<ItemId> = items.iter().copied().filter(|i| s.local.planner.contains(*i)).collect();
                for i in &left {
                    s.local.planner.hurry(*i);
                }
                left
            };
            if left.is_empty() {
                return;
            }
            self.kick.notify_one();
            if changed.changed().await.is_err() {
                return;
            }
        }
    }

    /// Ship `items` until every entry has a definite answer. What the mount
    /// acknowledged is never dropped because an answer was lost: a file
    /// server or the meta server that restarted, a commit whose outcome is
    /// unknown, no live file server yet, all mean "send it again" (the file
    /// server finds the replicas it stored in place and the meta server
    /// recognises a commit it made already), with a backoff, for as long as
    /// the mount lives. Only a refusal (the meta server said no) ends an
    /// entry in error.
    async fn deliver(&self, id: BundleId, items: &[Outgoing]) -> Vec<Result<Attr, RemoteError>> {
        let bytes: u64 = items.iter().map(|i| i.op.data_len()).sum();
        let bound = self.remote.timeout() * 2 + Duration::from_secs(bytes / (4 << 20));
        let mut results: Vec<Option<Result<Attr, RemoteError>>> = vec![None; items.len()];
        let mut backoff = Duration::from_millis(100);
        for attempt in 0u32.. {
            let todo: Vec<usize> = (0..items.len()).filter(|&i| results[i].is_none()).collect();
            if todo.is_empty() {
                break;
            }
            let batch: Vec<Outgoing> = todo.iter().map(|&i| items[i].clone()).collect();
            let answer = match self.target().await {
                Ok(t) => ship(self.remote.dialer(), &t.server, &t.cap, &batch, &self.counters, bound)
                    .await
                    .map_err(|e| RemoteError::new(e.code().unwrap_or(ErrorCode::Unavailable), e.to_string())),
                Err(e) => Err(e),
            };
            match answer {
                Ok(r) => {
                    for (&i, r) in todo.iter().zip(r) {
                        match r {
                            Err(e) if retryable(&e) => {
                                tracing::info!(
                                    bundle = id,
                                    attempt,
                                    op = ?items[i].op,
                                    "entry not committed yet: {e}"
                                )
                            }
                            r => results[i] = Some(r),
                        }
                    }
                }
                Err(e) if retryable(&e) => tracing::warn!(bundle = id, attempt, "bundle not delivered, retrying: {e}"),
                Err(e) => {
                    for &i in &todo {
                        results[i] = Some(Err(e.clone()));
                    }
                }
            }
            if results.iter().any(Option::is_none) {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                // The target may be the server that went away, and the
                // capability may name a session of a meta server that
                // restarted: ask for both again.
                self.lock().target = None;
            }
        }
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(gone("bundle not delivered")))).collect()
    }

    /// The mode to give `ino` at its last close (see `hurry`).
    pub fn take_deferred_perm(&self, ino: Ino) -> Option<u32> {
        self.lock().deferred_perm.remove(&ino)
    }

    /// The user the mount acts as (uid, gid), for new entries' attributes.
    pub fn ids(&self) -> (u32, u32) {
        (self.user.uid, self.user.gid)
    }

    /// The user the mount acts as.
    pub fn user(&self) -> &User {
        &self.user
    }
}

impl fs_proto::mode::Who for User {
    fn is_root(&self) -> bool {
        self.admin
    }
    fn in_group(&self, gid: u32) -> bool {
        User::in_group(self, gid)
    }
    fn gid(&self) -> u32 {
        self.gid
    }
}
