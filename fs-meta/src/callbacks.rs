//! Callbacks: which caching sessions hold leases on which inodes, and
//! pushing invalidations to them when those inodes change.
//!
//! A *session* is one subscription on one QUIC connection (see
//! [`fs_proto::callback`]). Every successful reply to a session grants it a
//! lease of [`Callbacks::lease`] on the inodes the reply described
//! ([`lease_keys`]); a change to an inode ([`invalidations`]) is pushed to
//! every other session holding an unexpired lease on it.
//!
//! Ordering: reads take the read side of `order` across handling and lease
//! registration; mutations take the write side across computing what they
//! change, handling, and choosing whom to tell. So a mutation either
//! precedes a read entirely (the read sees the new state) or follows its
//! lease registration (the reader is told). Mutations are serialised by the
//! namespace lock anyway, so the write side costs no parallelism.
//!
//! Memory is bounded: a session may hold [`MAX_LEASES_PER_SESSION`] leases
//! and have [`QUEUE_DEPTH`] batches waiting; beyond either it is dropped (its
//! stream ends, the client forgets its cache and subscribes again). Expired
//! leases and those of dropped sessions are swept every [`SWEEP_EVERY`].

use crate::namespace::Namespace;
use crate::perm::Caller;
use crate::service::MetaService;
use fs_proto::callback::Invalidation;
use fs_proto::meta::{MetaCall, MetaReply, MetaRequest, MetaResponse};
use fs_proto::{ErrorCode, Identity, Ino};
use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Identifies one subscription (0: none).
pub type SessionId = u64;

/// Most leases one session may hold before it is dropped.
pub const MAX_LEASES_PER_SESSION: usize = 1_000_000;
/// Batches of invalidations that may wait for one session's stream.
pub const QUEUE_DEPTH: usize = 4096;
/// Callback sessions one principal may hold at once (a mount or client
/// each): beyond, a subscription is refused until one ends.
pub const MAX_SESSIONS_PER_PRINCIPAL: usize = 256;

/// Why a subscription was refused, and when to ask again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// For the peer and the log.
    pub reason: String,
    /// When asking again may succeed.
    pub retry_after: Duration,
}
/// How often expired leases are swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// How long a change waits for the sessions it was pushed to.
pub const ACK_BOUND: Duration = Duration::from_millis(fs_proto::callback::ACK_BOUND_MS);
/// What a session's acknowledgement watch holds once its peer closed the
/// connection: nothing it cached matters any more.
pub const PEER_GONE: u64 = u64::MAX;

/// A numbered batch of invalidations for one session's stream.
pub type Batch = (u64, Vec<Invalidation>);

/// Invalidations to deliver once the change is durable.
#[derive(Default)]
pub struct Pending(Vec<(SessionId, Vec<Invalidation>)>);

/// Invalidations handed to sessions' streams, to be acknowledged.
#[derive(Default)]
#[must_use = "a change is answered only once its invalidations are acknowledged"]
pub struct Delivery(Vec<(SessionId, u64, watch::Receiver<u64>)>);

impl Delivery {
    /// Nobody to wait for.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One subscription as its stream's task sees it.
pub struct Subscription {
    /// The session.
    pub id: SessionId,
    /// Numbered batches to write.
    pub rx: mpsc::Receiver<Batch>,
    /// Where the task records the client's acknowledgements (the highest
    /// sequence number, or [`PEER_GONE`]).
    pub acked: watch::Sender<u64>,
    /// Turns true when the session held others up ([`Callbacks::penalize`]):
    /// the serving task then bars its connection, and strikes the principal
    /// if the connection is still alive a while later (a killed mount's is
    /// not: its user is not to blame).
    pub struck: watch::Receiver<bool>,
}

struct Session {
    /// The principal (certificate name) it belongs to.
    who: String,
    /// Its connection (`quinn::Connection::stable_id`).
    conn: usize,
    /// Set when it held others up: no directory leases any more.
    struck: watch::Sender<bool>,
    tx: mpsc::Sender<Batch>,
    leases: usize,
    /// Sequence number of the last batch queued.
    seq: u64,
    acked: watch::Receiver<u64>,
}

#[derive(Default)]
struct State {
    next_id: SessionId,
    sessions: HashMap<SessionId, Session>,
    holders: HashMap<Ino, HashMap<SessionId, Instant>>,
    last_sweep: Option<Instant>,
}

/// The lease table and the subscriptions.
pub struct Callbacks {
    lease: Duration,
    order: RwLock<()>,
    state: Mutex<State>,
    /// Bumped whenever a session ends, so that whoever waits on a session
    /// (a directory lease recall) stops waiting at once.
    ended: tokio::sync::watch::Sender<u64>,
    /// Principals that held others up, barred for a while.
    penalties: Mutex<crate::penalty::Penalties>,
    /// Connections whose session held others up: no new subscription on
    /// them until the instant.
    barred_conns: Mutex<HashMap<usize, Instant>>,
}

fn root() -> Caller {
    Caller { name: "callbacks".into(), uid: 0, gid: 0, groups: Vec::new() }
}

impl Callbacks {
    /// A table granting leases of `lease`.
    pub fn new(lease: Duration) -> Self {
        Callbacks {
            lease,
            order: RwLock::new(()),
            state: Mutex::new(State { next_id: 1, ..Default::default() }),
            ended: tokio::sync::watch::channel(0).0,
            penalties: Mutex::new(Default::default()),
            barred_conns: Mutex::new(HashMap::new()),
        }
    }

    /// How long a lease lasts.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start a session for principal `who` on connection `conn`; numbered
    /// batches of invalidations for it arrive on the receiver, and its
    /// acknowledgements go into `acked`. Refused, with the time left, while
    /// `who` or `conn` is barred ([`crate::penalty`]), or while `who` holds
    /// [`MAX_SESSIONS_PER_PRINCIPAL`] sessions.
    pub fn subscribe(&self, who: &str, conn: usize) -> Result<Subscription, Refused> {
        let held_up = |left: Duration| {
            Refused {
            reason: format!(
                "{who} recently held other clients up (an invalidation not acknowledged, or a recalled directory not given back); no callbacks for {} s",
                left.as_secs() + 1
            ),
            retry_after: left,
        }
        };
        if let Some(left) = self.barred(who) {
            return Err(held_up(left));
        }
        {
            let now = Instant::now();
            let mut b = self.barred_conns.lock().unwrap_or_else(|p| p.into_inner());
            b.retain(|_, until| *until > now);
            if let Some(until) = b.get(&conn) {
                return Err(held_up(until.saturating_duration_since(now)));
            }
        }
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let (acked, acked_rx) = watch::channel(0);
        let (struck_tx, struck) = watch::channel(false);
        let mut st = self.state();
        if st.sessions.values().filter(|s| s.who == who).count() >= MAX_SESSIONS_PER_PRINCIPAL {
            return Err(Refused {
                reason: format!(
                    "{who} holds {MAX_SESSIONS_PER_PRINCIPAL} callback sessions, the most one principal may (one per mount or client)"
                ),
                retry_after: SWEEP_EVERY,
            });
        }
        let id = st.next_id;
        st.next_id += 1;
        let session = Session { who: who.to_string(), conn, struck: struck_tx, tx, leases: 0, seq: 0, acked: acked_rx };
        st.sessions.insert(id, session);
        Ok(Subscription { id, rx, acked, struck })
    }

    fn penalties(&self) -> std::sync::MutexGuard<'_, crate::penalty::Penalties> {
        self.penalties.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How much longer principal `who` is barred, if it is.
    pub fn barred(&self, who: &str) -> Option<Duration> {
        self.penalties().barred(who, Instant::now())
    }

    /// Whether session `id` may not be granted directory leases: it held
    /// others up, or its principal is barred.
    pub fn session_barred(&self, id: SessionId) -> bool {
        let (who, struck) = match self.state().sessions.get(&id) {
            Some(s) => (s.who.clone(), *s.struck.borrow()),
            None => return false,
        };
        struck || self.barred(&who).is_some()
    }

    /// Session `id` held others up: mark it (its serving task bars the
    /// connection and, if the peer turns out to be alive, strikes the
    /// principal: [`Self::strike`]), and end the session if `end`. Returns
    /// the principal.
    pub fn penalize(&self, id: SessionId, end: bool) -> Option<String> {
        let (who, conn) = {
            let st = self.state();
            let s = st.sessions.get(&id)?;
            s.struck.send_replace(true);
            (s.who.clone(), s.conn)
        };
        self.barred_conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(conn, Instant::now() + crate::penalty::FIRST_BAR);
        tracing::warn!(session = id, principal = %who, "session held others up: no more directory leases for it");
        if end {
            self.unsubscribe(id);
        }
        Some(who)
    }

    /// Principal `who` held others up while its connection lived: no
    /// callbacks and no directory leases for a while. Returns the bar.
    pub fn strike(&self, who: &str) -> Duration {
        let bar = self.penalties().strike(who, Instant::now());
        tracing::warn!(principal = %who, bar_s = bar.as_secs(), "a live peer held others up; its principal gets no callbacks or directory leases for a while");
        bar
    }

    /// End a session (its leases are swept later).
    pub fn unsubscribe(&self, id: SessionId) {
        if self.state().sessions.remove(&id).is_some() {
            self.ended.send_modify(|n| *n += 1);
        }
    }

    /// Changes each time a session ends.
    pub fn endings(&self) -> tokio::sync::watch::Receiver<u64> {
        self.ended.subscribe()
    }

    /// Number of live sessions.
    pub fn sessions(&self) -> usize {
        self.state().sessions.len()
    }

    /// Number of unexpired leases held by live sessions.
    pub fn leases(&self) -> usize {
        let st = self.state();
        st.sessions.values().map(|s| s.leases).sum()
    }

    /// Handle one call for `session` (0: the caller does not cache),
    /// registering leases and computing whom to tell about changes.
    pub fn handle(&self, svc: &MetaService, id: &Identity, session: SessionId, call: MetaCall) -> (MetaReply, Pending) {
        if !call.req.is_mutation() {
            let _read = self.order.read().unwrap_or_else(|p| p.into_inner());
            let keys = if session != 0 { Some(call.req.clone()) } else { None };
            let reply = svc.handle(id, call);
            if let Some(req) = keys {
                self.grant(session, &lease_keys(&req, &reply));
            }
            return (reply, Pending::default());
        }
        let _write = self.order.write().unwrap_or_else(|p| p.into_inner());
        let changes = invalidations(&svc.ns, &call.req);
        let req = call.req.clone();
        let reply = svc.handle(id, call);
        let changes = succeeded(changes, &reply);
        if session != 0 {
            self.grant(session, &lease_keys(&req, &reply));
        }
        let pending = self.route(session, changes);
        (reply, pending)
    }

    fn grant(&self, session: SessionId, inos: &[Ino]) {
        if inos.is_empty() {
            return;
        }
        let now = Instant::now();
        let until = now + self.lease;
        let mut st = self.state();
        if !st.sessions.contains_key(&session) {
            return;
        }
        let mut added = 0;
        for &ino in inos {
            if st.holders.entry(ino).or_default().insert(session, until).is_none() {
                added += 1;
            }
        }
        let drop_it = match st.sessions.get_mut(&session) {
            Some(s) => {
                s.leases += added;
                s.leases > MAX_LEASES_PER_SESSION
            }
            None => false,
        };
        if drop_it {
            tracing::warn!(session, "session holds too many leases; dropping it (the client will resubscribe)");
            st.sessions.remove(&session);
        }
        if st.last_sweep.is_none_or(|t| now.duration_since(t) >= SWEEP_EVERY) {
            sweep(&mut st, now);
        }
    }

    fn route(&self, origin: SessionId, changes: Vec<Invalidation>) -> Pending {
        if changes.is_empty() {
            return Pending::default();
        }
        let now = Instant::now();
        let st = self.state();
        let mut per: HashMap<SessionId, Vec<Invalidation>> = HashMap::new();
        for change in changes {
            let Some(key) = change.lease_key() else { continue };
            let Some(holders) = st.holders.get(&key) else { continue };
            for (&sid, &until) in holders {
                if sid != origin && until > now && st.sessions.contains_key(&sid) {
                    per.entry(sid).or_default().push(change.clone());
                }
            }
        }
        Pending(per.into_iter().collect())
    }

    /// Whether session `id` is subscribed (its stream is open).
    pub fn is_subscribed(&self, id: SessionId) -> bool {
        id != 0 && self.state().sessions.contains_key(&id)
    }

    /// Queue a numbered batch for session `id`; the batch's number and
    /// the session's acknowledgements, or None if the session is gone or
    /// does not keep up (then dropped).
    fn queue(&self, id: SessionId, list: Vec<Invalidation>) -> Option<(u64, watch::Receiver<u64>)> {
        let mut st = self.state();
        let s = st.sessions.get_mut(&id)?;
        let seq = s.seq + 1;
        if s.tx.try_send((seq, list)).is_err() {
            drop(st);
            tracing::warn!(session = id, "session does not keep up with invalidations; dropping it");
            self.unsubscribe(id);
            return None;
        }
        s.seq = seq;
        Some((seq, s.acked.clone()))
    }

    /// Send `list` to session `id` alone (e.g. a directory lease recall):
    /// the batch's number and the session's acknowledgements, or None if
    /// the session is gone or does not keep up (then dropped).
    pub fn send_to(&self, id: SessionId, list: Vec<Invalidation>) -> Option<(u64, watch::Receiver<u64>)> {
        self.queue(id, list)
    }

    /// What session `id` has been sent and not acknowledged yet (its last
    /// batch), to wait on with [`Self::acknowledged`].
    pub fn unacknowledged(&self, id: SessionId) -> Delivery {
        let st = self.state();
        match st.sessions.get(&id) {
            Some(s) if s.seq > *s.acked.borrow() => Delivery(vec![(id, s.seq, s.acked.clone())]),
            _ => Delivery::default(),
        }
    }

    /// Run a change made outside [`Self::handle`] with the ordering a
    /// mutation has there (see the module docs), and compute whom to tell
    /// about `changes` (everyone holding a lease but `origin`).
    pub fn exclusive<T>(&self, origin: SessionId, f: impl FnOnce() -> (T, Vec<Invalidation>)) -> (T, Pending) {
        let _write = self.order.write().unwrap_or_else(|p| p.into_inner());
        let (out, changes) = f();
        (out, self.route(origin, changes))
    }

    /// Hand invalidations to the sessions' streams; a session whose queue
    /// is full is dropped. Wait on the result with [`Self::acknowledged`]
    /// before answering the change.
    pub fn push(&self, pending: Pending) -> Delivery {
        let mut out = Vec::new();
        for (sid, list) in pending.0 {
            if let Some((seq, acked)) = self.queue(sid, list) {
                out.push((sid, seq, acked));
            }
        }
        Delivery(out)
    }

    /// Wait until every session of `delivery` has acknowledged its batch or
    /// its peer closed the connection, at most [`ACK_BOUND`]; a session
    /// that has not by then is dropped (its client, hearing nothing, has
    /// stopped trusting its cache by then: see [`fs_proto::callback`]).
    pub async fn acknowledged(&self, delivery: Delivery) {
        if delivery.is_empty() {
            return;
        }
        let deadline = tokio::time::Instant::now() + ACK_BOUND;
        let mut late = Vec::new();
        for (sid, seq, mut acked) in delivery.0 {
            let wait = async { acked.wait_for(|a| *a >= seq).await.is_ok() };
            match tokio::time::timeout_at(deadline, wait).await {
                Ok(true) => {}
                // The session's stream ended without an acknowledgement:
                // its client may not know yet; wait out the bound.
                Ok(false) => tokio::time::sleep_until(deadline).await,
                Err(_) => late.push(sid),
            }
        }
        for sid in late {
            tracing::warn!(session = sid, "no acknowledgement of invalidations within the bound; dropping the session");
            if self.penalize(sid, true).is_none() {
                self.unsubscribe(sid);
            }
        }
    }
}

fn sweep(st: &mut State, now: Instant) {
    st.last_sweep = Some(now);
    let State { sessions, holders, .. } = st;
    for s in sessions.values_mut() {
        s.leases = 0;
    }
    holders.retain(|_, h| {
        h.retain(|sid, until| *until > now && sessions.contains_key(sid));
        for sid in h.keys() {
            if let Some(s) = sessions.get_mut(sid) {
                s.leases += 1;
            }
        }
        !h.is_empty()
    });
}

/// The inodes a reply described, on which the caller now holds a lease.
pub fn lease_keys(req: &MetaRequest, reply: &MetaReply) -> Vec<Ino> {
    use MetaRequest as Q;
    use MetaResponse as A;
    let mut out = Vec::new();
    match (req, reply) {
        (Q::Batch(reqs), Ok(A::Batch(replies))) => {
            for (q, a) in reqs.iter().zip(replies) {
                out.extend(lease_keys(q, a));
            }
        }
        // A missing name is cached too (negative entry) under the directory.
        (Q::Lookup { parent, .. } | Q::LookupPlus { parent, .. }, Err(e)) if e.code == ErrorCode::NotFound => {
            out.push(*parent)
        }
        (Q::LookupPlus { parent, .. }, Ok(A::Entry(e))) => out.extend([*parent, e.ino]),
        (Q::GetXattr { ino, .. }, Err(e)) if e.code == ErrorCode::NoAttr => out.push(*ino),
        (_, Err(_)) => {}
        (Q::ReadDir { ino, .. }, Ok(A::Entries { entries, .. })) => {
            out.push(*ino);
            out.extend(entries.iter().filter(|e| e.attr.is_some()).map(|e| e.ino));
        }
        (Q::Lookup { parent, .. }, Ok(A::Attr(a)))
        | (Q::Create { parent, .. }, Ok(A::Attr(a)))
        | (Q::Mkdir { parent, .. }, Ok(A::Attr(a)))
        | (Q::Symlink { parent, .. }, Ok(A::Attr(a))) => out.extend([*parent, a.ino]),
        (Q::Link { new_parent, .. }, Ok(A::Attr(a))) => out.extend([*new_parent, a.ino]),
        (_, Ok(A::Attr(a))) => out.push(a.ino),
        (Q::OpenRead { ino }, Ok(A::Read(g))) => out.extend([*ino, g.attr.ino]),
        (Q::ReadLink { ino }, Ok(_)) | (Q::GetXattr { ino, .. }, Ok(_)) | (Q::ListXattr { ino }, Ok(_)) => {
            out.push(*ino)
        }
        _ => {}
    }
    out
}

/// What a mutation will change, computed before it runs (so the inodes that
/// names pointed to are still known), from the request's footprint.
pub fn invalidations(ns: &Namespace, req: &MetaRequest) -> Vec<Invalidation> {
    let f = req.footprint();
    let mut v = Vec::new();
    for (parent, name, how) in f.names.into_iter().filter(|(_, _, how)| how.changes_dir()) {
        if how.changes_child() {
            v.extend(ns.lookup(&root(), parent, &name).ok().map(|a| Invalidation::Attr { ino: a.ino }));
        }
        v.push(Invalidation::Entry { parent, name });
        v.push(Invalidation::Attr { ino: parent });
    }
    v.extend(f.changes.into_iter().map(|ino| Invalidation::Attr { ino }));
    v
}

/// Keep the changes of a request only if it succeeded (a batch is kept
/// whole when any part succeeded: extra invalidations are harmless).
fn succeeded(changes: Vec<Invalidation>, reply: &MetaReply) -> Vec<Invalidation> {
    match reply {
        Ok(MetaResponse::Batch(rs)) if rs.iter().all(|r| r.is_err()) => Vec::new(),
        Ok(_) => changes,
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fs_proto::{Attr, DirEntry, FileKind, RemoteError};
    use std::sync::Arc;

    fn attr(ino: Ino) -> Attr {
        Attr { uid: 1, gid: 1, ..Attr::new(ino, FileKind::Regular, 0o644) }
    }

    #[test]
    fn replies_lease_what_they_describe() {
        let lookup = MetaRequest::Lookup { parent: 1, name: "a".into() };
        assert_eq!(lease_keys(&lookup, &Ok(MetaResponse::Attr(attr(7)))), vec![1, 7]);
        let missing = Err(RemoteError::new(ErrorCode::NotFound, "a"));
        assert_eq!(lease_keys(&lookup, &missing), vec![1], "an absent name is leased under its directory");
        let denied = Err(RemoteError::new(ErrorCode::PermissionDenied, "a"));
        assert!(lease_keys(&lookup, &denied).is_empty());
        let rd = MetaRequest::ReadDir { ino: 1, after: None, limit: 10, plus: true };
        let entries = vec![
            DirEntry { name: "a".into(), ino: 7, kind: FileKind::Regular, attr: Some(attr(7)), xattrs: None },
            DirEntry { name: "b".into(), ino: 8, kind: FileKind::Regular, attr: None, xattrs: None },
        ];
        assert_eq!(lease_keys(&rd, &Ok(MetaResponse::Entries { entries, more: false })), vec![1, 7]);
    }

    #[test]
    fn one_principal_holds_a_bounded_number_of_sessions() {
        let cb = Callbacks::new(Duration::from_secs(60));
        let subs: Vec<_> = (0..MAX_SESSIONS_PER_PRINCIPAL).map(|i| cb.subscribe("mallory", i).unwrap()).collect();
        let e = cb.subscribe("mallory", 9999).map(|s| s.id).unwrap_err();
        assert!(e.reason.contains("callback sessions"), "{e:?}");
        assert!(cb.subscribe("alice", 1).is_ok(), "another principal is not affected");
        cb.unsubscribe(subs[0].id);
        assert!(cb.subscribe("mallory", 9999).is_ok(), "one ended, one may start");
    }

    #[test]
    fn changes_reach_other_holders_only() {
        let cb = Callbacks::new(Duration::from_secs(60));
        let mut a = cb.subscribe("t", 0).unwrap();
        let mut b = cb.subscribe("t", 0).unwrap();
        let mut c = cb.subscribe("t", 0).unwrap();
        cb.grant(a.id, &[1, 7]);
        cb.grant(b.id, &[1]);
        let change = vec![Invalidation::Entry { parent: 1, name: "x".into() }, Invalidation::Attr { ino: 7 }];
        let _ = cb.push(cb.route(b.id, change));
        assert_eq!(a.rx.try_recv().unwrap().1.len(), 2, "a holds both");
        assert!(b.rx.try_recv().is_err(), "the session that made the change is not called back");
        assert!(c.rx.try_recv().is_err(), "c holds no lease");
        cb.unsubscribe(a.id);
        let _ = cb.push(cb.route(c.id, vec![Invalidation::Attr { ino: 1 }]));
        assert!(a.rx.try_recv().is_err(), "a dropped session hears nothing");
        assert_eq!(b.rx.try_recv().unwrap(), (1, vec![Invalidation::Attr { ino: 1 }]));
        assert_eq!(cb.sessions(), 2);
    }

    #[test]
    fn expired_leases_are_not_called_back_and_are_swept() {
        let cb = Callbacks::new(Duration::ZERO);
        let mut a = cb.subscribe("t", 0).unwrap();
        cb.grant(a.id, &[5]);
        assert!(cb.push(cb.route(0, vec![Invalidation::Attr { ino: 5 }])).is_empty());
        assert!(a.rx.try_recv().is_err(), "a lease of zero length has expired");
        let mut st = cb.state();
        sweep(&mut st, Instant::now());
        assert!(st.holders.is_empty());
    }

    #[test]
    fn a_session_that_does_not_keep_up_is_dropped() {
        let cb = Callbacks::new(Duration::from_secs(60));
        let a = cb.subscribe("t", 0).unwrap();
        cb.grant(a.id, &[5]);
        for _ in 0..=QUEUE_DEPTH {
            let _ = cb.push(cb.route(0, vec![Invalidation::Attr { ino: 5 }]));
        }
        assert_eq!(cb.sessions(), 0, "a full queue drops the session (its client resubscribes)");
    }

    #[test]
    fn what_a_session_has_not_acknowledged() {
        let cb = Callbacks::new(Duration::from_secs(60));
        let mut a = cb.subscribe("t", 0).unwrap();
        assert!(cb.unacknowledged(a.id).is_empty(), "nothing sent yet");
        cb.grant(a.id, &[5]);
        let _ = cb.push(cb.route(0, vec![Invalidation::Attr { ino: 5 }]));
        let _ = cb.push(cb.route(0, vec![Invalidation::Attr { ino: 5 }]));
        let d = cb.unacknowledged(a.id);
        assert_eq!(d.0.iter().map(|(s, seq, _)| (*s, *seq)).collect::<Vec<_>>(), vec![(a.id, 2)], "the last batch");
        let (seq, _) = a.rx.try_recv().unwrap();
        a.acked.send_replace(seq);
        assert!(!cb.unacknowledged(a.id).is_empty(), "one of two acknowledged");
        a.acked.send_replace(2);
        assert!(cb.unacknowledged(a.id).is_empty());
        assert!(cb.unacknowledged(999).is_empty(), "no such session");
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_waits_for_the_acknowledgement() {
        let cb = Arc::new(Callbacks::new(Duration::from_secs(60)));
        let mut a = cb.subscribe("t", 0).unwrap();
        cb.grant(a.id, &[5]);
        let delivery = cb.push(cb.route(0, vec![Invalidation::Attr { ino: 5 }]));
        let waiter = tokio::spawn({
            let cb = cb.clone();
            async move {
                let t = tokio::time::Instant::now();
                cb.acknowledged(delivery).await;
                t.elapsed()
            }
        });
        let (seq, _) = a.rx.recv().await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        a.acked.send_replace(seq);
        let waited = waiter.await.unwrap();
        assert_eq!(waited, Duration::from_millis(30), "answered when acknowledged, not before");
        assert_eq!(cb.sessions(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_session_holds_a_change_for_the_bound_and_is_dropped() {
        let cb = Callbacks::new(Duration::from_secs(60));
        let a = cb.subscribe("t", 0).unwrap();
        cb.grant(a.id, &[5]);
        let t = tokio::time::Instant::now();
        cb.acknowledged(cb.push(cb.route(0, vec![Invalidation::Attr { ino: 5 }]))).await;
        assert_eq!(t.elapsed(), ACK_BOUND);
        assert_eq!(cb.sessions(), 0, "dropped");
        drop(a);
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_closed_holds_nothing_up_but_a_lost_stream_does() {
        let cb = Callbacks::new(Duration::from_secs(60));
        let a = cb.subscribe("t", 0).unwrap();
        let b = cb.subscribe("t", 0).unwrap();
        cb.grant(a.id, &[5]);
        cb.grant(b.id, &[6]);
        let to_a = cb.push(cb.route(0, vec![Invalidation::Attr { ino: 5 }]));
        a.acked.send_replace(PEER_GONE);
        let t = tokio::time::Instant::now();
        cb.acknowledged(to_a).await;
        assert_eq!(t.elapsed(), Duration::ZERO, "a closed peer trusts nothing");
        // b's stream task ended without an acknowledgement (e.g. its
        // connection timed out): its client may not know yet.
        let to_b = cb.push(cb.route(0, vec![Invalidation::Attr { ino: 6 }]));
        drop(b);
        cb.acknowledged(to_b).await;
        assert_eq!(t.elapsed(), ACK_BOUND);
    }
}
