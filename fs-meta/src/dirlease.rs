//! Directory write leases (see [`fs_proto::bundle`]): granting them, and
//! recalling them before anyone else may see or change a leased directory.
//!
//! Every request passes [`DirLeases::admit`] before it is handled. When some
//! session other than the caller holds a lease, admission works out which
//! directories the request touches ([`touched`]), sends each conflicting
//! holder [`Invalidation::Recall`] and waits (bounded by `recall_timeout`)
//! until the holder has sent what was pending there and released it, or its
//! session ended, or the recall timed out (then the lease is broken: what
//! the holder acknowledged but did not make durable is lost, as when it
//! dies). Admission then holds the read side of a gate while the request is
//! handled; a lease is granted only under the write side, so no request
//! admitted before a grant is still running when the directory becomes
//! leased. The holder's own requests, and bundle commits acting under its
//! capability, never wait for its own leases.
//!
//! A lease lasts as long as its holder's callback session; the core of the
//! bookkeeping is the sans-IO [`Table`].

mod table;

pub use table::{Conflict, Table};

use crate::callbacks::{Callbacks, Pending, SessionId};
use crate::namespace::Namespace;
use crate::perm::{Caller, W, X};
use crate::service::MetaService;
use fs_proto::bundle::{
    AlsoDir, InoRange, LeaseGrant, LeaseRequest, QuotaRoom, MAX_ALSO, MAX_ALSO_ENTRIES, MAX_HELD_RANGES,
    MAX_INOS_PER_GRANT,
};
use fs_proto::callback::Invalidation;
use fs_proto::meta::{MetaCall, MetaReply, MetaRequest, MetaResponse};
use fs_proto::{Access, Capability, ErrorCode, FileKind, Identity, Ino, RemoteError, Role, ROOT_INO};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{watch, RwLock, RwLockReadGuard};

/// How long a holder has to acknowledge a recall (not to finish it: that is
/// the recall timeout) before its session is taken for dead: as long as a
/// mount goes without hearing from the meta server before it stops trusting
/// its cache ([`fs_proto::callback::SILENT_MS`]).
pub const RECALL_ACK_BOUND: Duration = Duration::from_millis(fs_proto::callback::SILENT_MS);

/// The lease table and its waiters.
pub struct DirLeases {
    boot: u64,
    table: Mutex<Table>,
    version: watch::Sender<u64>,
    gate: RwLock<()>,
    recall_timeout: Duration,
}

/// A request admitted past the leases (holds the gate's read side while it
/// is handled; drop it once the change is applied).
pub type Admitted<'a> = Option<RwLockReadGuard<'a, ()>>;

fn root() -> Caller {
    Caller { name: "dirlease".into(), uid: 0, gid: 0, groups: Vec::new() }
}

impl DirLeases {
    /// A table whose recalls wait at most `recall_timeout`.
    pub fn new(recall_timeout: Duration) -> Self {
        // Holder ids in capabilities carry this run's nonce, so a capability
        // from an earlier run of the meta server names no session of this one.
        let t = fs_proto::Timestamp::now();
        let nonce = (t.nanos as u64 ^ (t.secs as u64).rotate_left(17) ^ std::process::id() as u64) as u32;
        let boot = ((nonce | 1) as u64) << 32;
        DirLeases {
            boot,
            table: Mutex::new(Table::default()),
            version: watch::channel(0).0,
            gate: RwLock::new(()),
            recall_timeout,
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The holder id a bundle capability carries for `session` (0: none).
    pub fn holder_id(&self, session: SessionId) -> u64 {
        if session == 0 || session > u32::MAX as u64 {
            0
        } else {
            self.boot | session
        }
    }

    /// The session a holder id stands for in this run (0: none).
    pub fn session_of(&self, holder: u64) -> SessionId {
        if holder != 0 && holder & !0xffff_ffff == self.boot {
            holder & 0xffff_ffff
        } else {
            0
        }
    }

    /// Who holds the write lease on `dir` (tests, status).
    pub fn holder(&self, dir: Ino) -> Option<SessionId> {
        self.table().holder(dir)
    }

    /// Number of leases held.
    pub fn len(&self) -> usize {
        self.table().len()
    }

    /// No leases held.
    pub fn is_empty(&self) -> bool {
        self.table().is_empty()
    }

    /// `dir` was created by a bundle acting under `holder`'s leases: the
    /// holder holds it too (nobody else could know it before).
    pub fn adopt(&self, holder: u64, dir: Ino) {
        let session = self.session_of(holder);
        if session != 0 {
            self.table().adopt(dir, session);
        }
    }

    /// Wait until no other session's lease stands in the way of `req` (see
    /// the module docs).
    pub async fn admit(&self, ns: &Namespace, cbs: &Callbacks, session: SessionId, req: &MetaRequest) -> Admitted<'_> {
        if matches!(req, MetaRequest::LeaseDir(_) | MetaRequest::ReleaseDirs { .. } | MetaRequest::Subscribe) {
            // Served under the gate's write side (or touching nothing).
            return None;
        }
        let acting = match req {
            MetaRequest::CommitBundle(b) => {
                b.cap.peek().filter(|c| c.access == Access::Bundle).map(|c| self.session_of(c.gen)).unwrap_or(0)
            }
            _ => session,
        };
        let started = Instant::now();
        let give_up = started + self.recall_timeout * 3;
        let mut dirs: Option<Vec<Ino>> = None;
        // Recalls not acknowledged yet: (holder, batch, acknowledgements, by).
        let mut unacked: Vec<(SessionId, u64, watch::Receiver<u64>, Instant)> = Vec::new();
        loop {
            // A holder that does not even acknowledge its recall within
            // RECALL_ACK_BOUND is gone (killed, or cut off: it has stopped
            // trusting its cache by then): its session ends, and its leases
            // with it, instead of holding everyone up for the recall timeout.
            let now = Instant::now();
            unacked.retain(|(holder, seq, acked, by)| {
                if *acked.borrow() >= *seq || !cbs.is_subscribed(*holder) {
                    return false;
                }
                if now >= *by {
                    tracing::warn!(
                        session = holder,
                        "a lease holder did not acknowledge its recall; ending its session"
                    );
                    if cbs.penalize(*holder, true).is_none() {
                        cbs.unsubscribe(*holder);
                    }
                    return false;
                }
                true
            });
            let mut changed = self.version.subscribe();
            let mut endings = cbs.endings();
            let conflicts = {
                let mut t = self.table();
                if !t.any_other(acting) {
                    Vec::new()
                } else {
                    let d = dirs.get_or_insert_with(|| touched(ns, req));
                    t.conflicts(d, acting, Instant::now(), self.recall_timeout, |s| cbs.is_subscribed(s))
                }
            };
            // A holder that kept a recalled directory past the bound gets
            // no directory lease for a while: the next access to it does not
            // wait again.
            let conflicts: Vec<Conflict> = conflicts
                .into_iter()
                .filter(|c| match c {
                    Conflict::Broken { holder, .. } => {
                        cbs.penalize(*holder, false);
                        false
                    }
                    _ => true,
                })
                .collect();
            if conflicts.is_empty() || Instant::now() >= give_up {
                let gate = self.gate.read().await;
                let blocked = {
                    let t = self.table();
                    t.any_other(acting) && {
                        let d = dirs.get_or_insert_with(|| touched(ns, req));
                        d.iter().any(|dir| t.holder(*dir).is_some_and(|h| h != acting && cbs.is_subscribed(h)))
                    }
                };
                if !blocked || Instant::now() >= give_up {
                    if blocked {
                        tracing::warn!(kind = req.kind(), "directory leases still held after the recall bound");
                    }
                    return Some(gate);
                }
                continue;
            }
            let mut until = Instant::now() + self.recall_timeout;
            for c in conflicts {
                match c {
                    Conflict::Recall { dir, holder } => {
                        tracing::debug!(dir, holder, kind = req.kind(), "recalling a directory lease");
                        match cbs.send_to(holder, vec![Invalidation::Recall { dir }]) {
                            Some((seq, acked)) => unacked.push((holder, seq, acked, Instant::now() + RECALL_ACK_BOUND)),
                            None => {
                                self.table().release(holder, &[dir]);
                            }
                        }
                    }
                    Conflict::Wait { until: u, .. } => until = until.min(u),
                    Conflict::Broken { .. } => {}
                }
            }
            if let Some(by) = unacked.iter().map(|u| u.3).min() {
                until = until.min(by);
            }
            let until = tokio::time::Instant::from_std(until.min(give_up));
            // A release, or the end of any session (a holder's end frees
            // its leases), is worth looking again.
            let _ = tokio::time::timeout_at(until, async {
                tokio::select! {
                    _ = changed.changed() => {}
                    _ = endings.changed() => {}
                }
            })
            .await;
        }
    }

    /// Serve the requests that need the caller's session: `LeaseDir` and
    /// `ReleaseDirs`. None for every other request.
    pub async fn serve(
        &self,
        svc: &MetaService,
        cbs: &Callbacks,
        id: &Identity,
        session: SessionId,
        call: &MetaCall,
    ) -> Option<(MetaReply, Pending)> {
        match &call.req {
            MetaRequest::LeaseDir(r) => Some(self.lease(svc, cbs, id, session, call, r).await),
            MetaRequest::ReleaseDirs { dirs } => {
                let n = self.table().release(session, dirs);
                self.version.send_modify(|v| *v += 1);
                tracing::debug!(session, released = n, "directory leases released");
                Some((Ok(MetaResponse::Done), Pending::default()))
            }
            _ => None,
        }
    }

    async fn lease(
        &self,
        svc: &MetaService,
        cbs: &Callbacks,
        id: &Identity,
        session: SessionId,
        call: &MetaCall,
        r: &LeaseRequest,
    ) -> (MetaReply, Pending) {
        let fail = |e: RemoteError| (Err(e), Pending::default());
        if id.role != Role::User {
            return fail(RemoteError::new(ErrorCode::Unsupported, "bundles are written by users"));
        }
        let caller = match svc.authorize(id, call.cred.as_ref(), &call.req) {
            Ok((c, _)) => c,
            Err(e) => return fail(e),
        };
        let target = match svc.hosts.choose_write_target(&r.site) {
            Ok(t) => t,
            Err(e) => return fail(e),
        };
        let granted = {
            let _gate = self.gate.write().await;
            cbs.exclusive(session, || {
                let Some(dir) = r.dir else { return (Ok((None, Vec::new())), Vec::new()) };
                let attr = match self.grant_one(svc, cbs, &caller, id, session, dir) {
                    Ok(Some(a)) => a,
                    Ok(None) => return (Ok((None, Vec::new())), Vec::new()),
                    Err(e) => return (Err(e), Vec::new()),
                };
                let mut inv = vec![Invalidation::Leased { dir }];
                // The other directories of a walk: each under the same
                // rules, skipped (not an error) where they do not hold.
                let mut also: Vec<fs_proto::Attr> = Vec::new();
                for &d in r.also.iter().take(MAX_ALSO) {
                    if d == dir || also.iter().any(|a| a.ino == d) {
                        continue;
                    }
                    if let Ok(Some(a)) = self.grant_one(svc, cbs, &caller, id, session, d) {
                        inv.push(Invalidation::Leased { dir: d });
                        also.push(a);
                    }
                }
                (Ok((Some(attr), also)), inv)
            })
        };
        let ((dir, also), pending) = match granted {
            (Ok(d), p) => (d, p),
            (Err(e), p) => return (Err(e), p),
        };
        // The holder answers from its cache under the lease (the names it
        // lists, lookups, attributes) and changes the directory on that
        // word: every invalidation of a change made before the grant must
        // be applied there first, or it acts on a name another client has
        // already renamed or removed. Changes queue their invalidations
        // before they leave the gate (crate::node), so all of them are
        // queued by now; the grant waits until the holder acknowledged them.
        if dir.is_some() || !also.is_empty() {
            cbs.acknowledged(cbs.unacknowledged(session)).await;
        }
        // Their listings, read with the leases held (nobody else changes
        // them now); one that does not fit what is left of the bound, or
        // that the caller may not read, is given back.
        let mut listed = Vec::with_capacity(also.len());
        let mut left = MAX_ALSO_ENTRIES;
        let mut give_back = Vec::new();
        for a in also {
            match svc.ns.readdir(&caller, a.ino, None, left.max(1) as u32, true) {
                Ok((entries, false)) if entries.len() <= left => {
                    left -= entries.len();
                    listed.push(AlsoDir { attr: a, entries });
                }
                _ => give_back.push(a.ino),
            }
        }
        if !give_back.is_empty() {
            self.table().release(session, &give_back);
            self.version.send_modify(|v| *v += 1);
        }
        if let Some(d) = &dir {
            tracing::debug!(dir = d.ino, session, "directory lease granted");
        }
        // Quota: no more new inode numbers than files left, none once bytes
        // are used up, and what is left told to the mount (which
        // acknowledges locally only within it); bundles are admitted entry
        // by entry at commit (see crate::quota).
        let (files_room, bytes_room) = match svc.ns.quota_room(caller.uid) {
            Ok(r) => r,
            Err(e) => return (Err(e), pending),
        };
        let mut want = u64::from(r.inos.min(MAX_INOS_PER_GRANT));
        if let Some(f) = files_room {
            want = want.min(f);
        }
        if bytes_room == Some(0) {
            want = 0;
        }
        let inos = if want > 0 {
            match svc.ns.lease_inodes(&id.name, want) {
                Ok(range) => Some(range),
                Err(e) => return (Err(e), pending),
            }
        } else {
            None
        };
        // The capability covers the new range and every held one that is
        // really leased to the caller.
        let mut covered: Vec<InoRange> = Vec::new();
        for h in r.held.iter().take(MAX_HELD_RANGES) {
            match svc.ns.range_leased_to(*h, &id.name) {
                Ok(true) => covered.push(*h),
                Ok(false) => tracing::debug!(principal = %id.name, ?h, "a held range is not leased to its holder"),
                Err(e) => return (Err(e), pending),
            }
        }
        covered.extend(inos);
        let cap = svc.signer.sign(&Capability {
            ino: 0,
            gen: self.holder_id(session),
            access: Access::Bundle,
            principal: fs_proto::Principal::of(id),
            expires_ms: svc.expiry(),
            issued: svc.ns.voids.stamp(),
            base_gen: None,
            expect: None,
            inos: covered,
            room: None,
        });
        (
            Ok(MetaResponse::Lease(LeaseGrant {
                dir,
                inos,
                target,
                cap,
                also: listed,
                room: QuotaRoom { files: files_room, bytes: bytes_room },
            })),
            pending,
        )
    }

    /// Grant `session` the write lease on `dir` if the rules allow (a
    /// directory the caller may write and search, owns or is root for, not
    /// barred, not held by another live session): its attributes, or None
    /// (not granted; work through the meta server). Called with the gate's
    /// write side held, inside [`Callbacks::exclusive`].
    fn grant_one(
        &self,
        svc: &MetaService,
        cbs: &Callbacks,
        caller: &Caller,
        id: &Identity,
        session: SessionId,
        dir: Ino,
    ) -> Result<Option<fs_proto::Attr>, RemoteError> {
        let live = |s: SessionId| cbs.is_subscribed(s);
        let inode = svc.ns.inode(dir)?;
        if inode.kind != FileKind::Directory {
            return Err(RemoteError::new(ErrorCode::NotADirectory, format!("inode {dir}")));
        }
        caller.check(&inode, W | X, "write permission on the directory")?;
        // Only an owner (or root) may hold a directory for itself: a lease
        // on `/` or on a shared directory would let one user hold up
        // everyone else working there. The others work on it synchronously.
        if caller.uid != 0 && caller.uid != inode.uid {
            tracing::debug!(dir, principal = %id.name, "directory lease not granted: not the owner");
            return Ok(None);
        }
        if cbs.session_barred(session) {
            tracing::debug!(dir, principal = %id.name, "directory lease not granted: the principal is barred");
            return Ok(None);
        }
        let mut t = self.table();
        t.sweep(live);
        if !live(session) || !t.grant(dir, session, live) {
            return Ok(None);
        }
        Ok(Some(inode.attr(dir)))
    }
}

/// The directories a request looks into or changes (for admission), from
/// its footprint. A lease on a directory covers its children's attributes
/// too (the holder may change them under write-back): addressing an inode
/// touches every directory holding it.
pub fn touched(ns: &Namespace, req: &MetaRequest) -> Vec<Ino> {
    let f = req.footprint();
    let mut v = f.lists;
    for ino in f.addresses {
        v.push(ino);
        v.extend(ns.parents_of(ino));
    }
    for (parent, name, how) in f.names {
        v.push(parent);
        if how.may_take_dir() {
            v.extend(ns.lookup(&root(), parent, &name).ok().map(|a| a.ino));
        }
    }
    for path in f.walks {
        v.push(ROOT_INO);
        let mut cur = ROOT_INO;
        for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            match ns.lookup(&root(), cur, comp) {
                Ok(a) if a.kind == FileKind::Directory => {
                    cur = a.ino;
                    v.push(cur);
                }
                _ => break,
            }
        }
    }
    v.sort_unstable();
    v.dedup();
    v
}
