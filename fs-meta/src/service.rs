//! Request dispatch: turns one [`MetaCall`] from an authenticated peer into
//! one [`MetaReply`], enforcing who may do what. [`MetaService::handle`] is
//! the one place every request passes: the caller's identity and role
//! ([`Users::caller`]), admin-only requests ([`MetaRequest::admin_only`]),
//! and the inode-number rule ([`MetaService::check_reachable`]).

use crate::config::MetaConfig;
use crate::hosts::Hosts;
use crate::namespace::Namespace;
use crate::perm::Caller;
use crate::users::Users;
use fs_proto::meta::{
    BaseGrant, MetaCall, MetaReply, MetaRequest, MetaResponse, QuotaReport, ReadGrant, StatFs, WhoAmI, WriteGrant,
};
use fs_proto::{
    Access, Capability, CapabilitySigner, CapabilityVerifier, Cred, DirEntry, ErrorCode, Identity, Ino, Principal,
    RemoteError, ReplicaInfo, Role, ServerLoc, Timestamp,
};
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

type R<T> = Result<T, RemoteError>;

/// A file server's spool inventory being received: when it started (ms)
/// and the replicas listed so far.
type Inventory = (u64, HashSet<(Ino, u64)>);

/// Everything a request may touch.
pub struct MetaService {
    /// The namespace.
    pub ns: Namespace,
    /// The host registry.
    pub hosts: Hosts,
    pub(crate) users: Users,
    pub(crate) signer: CapabilitySigner,
    own_verifier: CapabilityVerifier,
    pub(crate) config: MetaConfig,
    /// Status of the replication worker and its wake-up signal.
    pub replication: crate::replication::Shared,
    inventories: Mutex<HashMap<String, Inventory>>,
    inode_count: Mutex<Option<(Instant, u64)>>,
    replica_count: Mutex<Option<(Instant, HashMap<String, u64>)>>,
    /// Monitoring state: check reports, rates, history, events, netcheck.
    pub monitor: crate::monitor::Monitor,
    /// Directory write leases for bundling clients.
    pub dirleases: crate::dirlease::DirLeases,
    /// POSIX byte-range locks across mounts.
    pub locks: crate::locks::Locks,
}

/// How long counts of files and replicas answered to anyone stay fresh.
const COUNTS_FRESH: Duration = Duration::from_secs(2);

impl MetaService {
    /// Assemble the service.
    pub fn new(ns: Namespace, hosts: Hosts, users: Users, signer: CapabilitySigner, config: MetaConfig) -> Self {
        let own_verifier = CapabilityVerifier::new(signer.public_key().to_vec());
        let monitor = crate::monitor::Monitor::new(&config);
        let dirleases = crate::dirlease::DirLeases::new(Duration::from_millis(config.recall_timeout_ms));
        MetaService {
            ns,
            hosts,
            users,
            signer,
            own_verifier,
            config,
            replication: crate::replication::Shared::new(),
            inventories: Mutex::new(HashMap::new()),
            inode_count: Mutex::new(None),
            replica_count: Mutex::new(None),
            monitor,
            dirleases,
            locks: Default::default(),
        }
    }

    pub(crate) fn expiry(&self) -> u64 {
        Timestamp::now().as_millis() + self.config.capability_ttl_secs * 1000
    }

    /// Handle one call from `id`.
    pub fn handle(&self, id: &Identity, call: MetaCall) -> MetaReply {
        let (caller, admin) = self.authorize(id, call.cred.as_ref(), &call.req)?;
        self.dispatch(id, &caller, admin, call.req)
    }

    /// Who `req` from `id` (asserting `cred`) runs as, and whether as an
    /// admin; refused if it names an inode the caller cannot reach (the
    /// inode-number rule). The one place a request's principal is decided:
    /// users as themselves ([`Users::caller`]), hosts as nobody unless
    /// `admin_hosts` grants them root, and hosts in `vpe_hosts` as root for
    /// a request that stays under `/vpe` ([`Namespace::within_vpe`]), as
    /// nobody for any other, never as admins.
    pub fn authorize(&self, id: &Identity, cred: Option<&Cred>, req: &MetaRequest) -> R<(Caller, bool)> {
        let (mut caller, admin) = self.users.caller(id, cred)?;
        if req.admin_only() && !admin {
            return Err(RemoteError::new(
                ErrorCode::NotPermitted,
                format!("only an admin may make a `{}` request, and {id} is not one", req.kind()),
            ));
        }
        if cred.is_none() && !caller.is_root() && self.users.vpe_host(id) && self.ns.within_vpe(req) {
            caller = Caller { name: id.name.clone(), uid: 0, gid: 0, groups: vec![] };
        }
        // A file server's bundle commit acts for the user its capability
        // names, not for the server: `bundle::commit` applies the
        // inode-number rule to that user, entry by entry. (Checked as the
        // server, nobody, every bundle into a directory only its user may
        // search was refused whole.)
        let for_capability = id.role == Role::Host && matches!(req, MetaRequest::CommitBundle(_));
        if !for_capability {
            self.check_reachable(&caller, req)?;
        }
        Ok((caller, admin))
    }

    /// The inode-number rule, in one place: every existing inode `req`
    /// names by number must be reachable by `c` by path
    /// ([`Namespace::check_reachable`]). An inode that does not exist is
    /// left to the request itself (it answers "not found").
    pub fn check_reachable(&self, c: &Caller, req: &MetaRequest) -> R<()> {
        if c.is_root() {
            return Ok(());
        }
        let mut inos = req.named_inos();
        inos.sort_unstable();
        inos.dedup();
        for ino in inos {
            match self.ns.check_reachable(c, ino) {
                Err(e) if e.code == ErrorCode::NotFound => {}
                r => r?,
            }
        }
        Ok(())
    }

    fn dispatch(&self, id: &Identity, c: &Caller, admin: bool, req: MetaRequest) -> MetaReply {
        use MetaRequest as Q;
        use MetaResponse as A;
        let host_only = |what: &str| self.users.file_server(id, what);
        Ok(match req {
            Q::WhoAmI => {
                A::WhoAmI(WhoAmI { name: id.name.clone(), uid: c.uid, gid: c.gid, groups: c.groups.clone(), admin })
            }
            Q::Lookup { parent, name } => A::Attr(self.ns.lookup(c, parent, &name)?),
            Q::LookupPlus { parent, name } => {
                let attr = self.ns.lookup(c, parent, &name)?;
                let xattrs = self.ns.listxattr(attr.ino)?;
                A::Entry(DirEntry { name, ino: attr.ino, kind: attr.kind, attr: Some(attr), xattrs: Some(xattrs) })
            }
            Q::GetAttr { ino } => A::Attr(self.ns.getattr(ino)?),
            Q::Resolve { path } => A::Attr(self.ns.resolve(c, &path)?),
            Q::ReadDir { ino, after, limit, plus } => {
                let (entries, more) = self.ns.readdir(c, ino, after.as_deref(), limit, plus)?;
                A::Entries { entries, more }
            }
            Q::ListDir { .. } => {
                return Err(RemoteError::new(
                    ErrorCode::InvalidArgument,
                    "ListDir is answered as a stream of its own, not inside a batch",
                ))
            }
            Q::ReadLink { ino } => A::Target(self.ns.readlink(ino)?),
            Q::Create { parent, name, kind, perm, rdev, exclusive } => {
                A::Attr(self.ns.create(c, parent, &name, kind, perm, rdev, exclusive)?.0)
            }
            Q::Mkdir { parent, name, perm } => A::Attr(self.ns.mkdir(c, parent, &name, perm)?),
            Q::Symlink { parent, name, target } => A::Attr(self.ns.symlink(c, parent, &name, &target)?),
            Q::Link { ino, new_parent, new_name } => A::Attr(self.ns.link(c, ino, new_parent, &new_name)?),
            Q::Unlink { parent, name } => {
                self.ns.unlink(c, parent, &name)?;
                A::Done
            }
            Q::Rmdir { parent, name } => {
                self.ns.rmdir(c, parent, &name)?;
                A::Done
            }
            Q::Rename { parent, name, new_parent, new_name, flags } => {
                self.ns.rename(c, parent, &name, new_parent, &new_name, flags)?;
                A::Done
            }
            Q::SetAttr { ino, set } => A::Attr(self.ns.setattr(c, ino, &set)?),
            Q::GetXattr { ino, name } => A::Xattr(self.ns.getxattr(c, ino, &name)?),
            Q::SetXattr { ino, name, value, flags } => {
                self.ns.setxattr(c, ino, &name, &value, flags)?;
                A::Done
            }
            Q::ListXattr { ino } => A::XattrNames(self.ns.listxattr(ino)?),
            Q::RemoveXattr { ino, name } => {
                self.ns.removexattr(c, ino, &name)?;
                A::Done
            }
            Q::OpenRead { ino } => A::Read(self.open_read(id, c, ino)?),
            Q::OpenWrite { ino, site } => A::Write(self.open_write(id, c, ino, &site)?),
            Q::Where { ino } => {
                let attr = self.ns.getattr(ino)?;
                let replicas = self
                    .ns
                    .replicas(ino)?
                    .into_iter()
                    .filter_map(|(host, r)| {
                        let (server, alive) = self.hosts.loc(&host)?;
                        Some(ReplicaInfo { server, gen: r.gen, size: r.size, hash: r.hash, alive: alive && !r.bad })
                    })
                    .collect();
                A::Replicas { attr, replicas }
            }
            Q::SetNcopy { ino, ncopy } => {
                let attr = self.ns.set_ncopy(c, ino, ncopy)?;
                self.replication.nudge();
                A::Attr(attr)
            }
            Q::StatFs => A::StatFs(self.statfs(admin)),
            Q::ListHosts => A::Hosts(self.hosts.list(&self.replica_counts()?)),
            Q::Monitor(m) => A::Monitor(crate::monitor::handle(self, id, m)?),
            Q::Heartbeat(report) => {
                host_only("heartbeat")?;
                let site = id.site.clone().unwrap_or_default();
                let revived = self.hosts.live_loc(&id.name).is_none();
                self.hosts.heartbeat(&id.name, &site, &report)?;
                if revived {
                    // A host came (back): replicas it holds count again.
                    self.replication.nudge();
                }
                let delete = self.ns.take_gc(&id.name, &report.deleted, self.config.gc_grace_ms)?;
                let names = std::cell::OnceCell::new();
                let voids = self.ns.voids.since(report.voids_seen, |uid| {
                    names.get_or_init(|| self.users.names().unwrap_or_default()).get(&uid).cloned()
                });
                A::HeartbeatAck { delete, now_ms: Timestamp::now().as_millis(), namespace_id: self.ns.id(), voids }
            }
            Q::RegisterReplica { cap, size, hash } => {
                host_only("registering replicas")?;
                let cap = self.own_verifier.check_signature(&cap)?;
                match cap.access {
                    Access::Write => {}
                    Access::Replicate => crate::replication::orders::check_copy(&cap, &id.name, size, hash)?,
                    _ => return Err(RemoteError::new(ErrorCode::BadCapability, "not a write capability")),
                }
                let attr = self.ns.register_replica(cap.ino, cap.gen, &id.name, size, hash)?;
                if cap.access == Access::Write {
                    // A new generation: its copy count may need new copies.
                    self.replication.nudge_files([cap.ino]);
                }
                A::Attr(attr)
            }
            Q::ReportBadReplica { ino, gen, reason } => {
                host_only("reporting bad replicas")?;
                tracing::warn!(host = %id.name, ino, gen, %reason, "replica reported bad");
                self.ns.mark_bad(ino, gen, &id.name)?;
                self.replication.nudge_files([ino]);
                A::Done
            }
            Q::Inventory { replicas, done } => {
                host_only("inventory")?;
                let unknown = self.ns.unknown_replicas(&id.name, &replicas)?;
                let mut inv = self.inventories.lock().unwrap_or_else(|p| p.into_inner());
                let entry =
                    inv.entry(id.name.clone()).or_insert_with(|| (Timestamp::now().as_millis(), HashSet::new()));
                entry.1.extend(replicas.iter().copied());
                if done {
                    if let Some((started, present)) = inv.remove(&id.name) {
                        let dropped = self.ns.drop_missing(&id.name, &present, started)?;
                        if dropped > 0 {
                            tracing::warn!(host = %id.name, dropped, "registered replicas missing from the spool were dropped");
                        }
                    }
                }
                A::Unknown(unknown)
            }
            Q::Subscribe => {
                // The node serves subscriptions on their own stream; one
                // reaching dispatch was nested in a batch.
                return Err(RemoteError::new(ErrorCode::InvalidArgument, "subscribe cannot be batched"));
            }
            Q::PlanReplication(query) => {
                A::ReplicationPlan(crate::replication::orders::plan_replication(self, c, query)?)
            }
            Q::PlanCheck { inos } => A::CheckPlan(crate::replication::orders::plan_check(self, id, c, &inos)?),
            Q::ReplicationStatus => A::ReplicationStatus(self.replication.status()),
            Q::LeaseDir(_) | Q::ReleaseDirs { .. } => {
                // The node serves these with the caller's session; one
                // reaching dispatch was nested in a batch.
                return Err(RemoteError::new(ErrorCode::InvalidArgument, "directory leases cannot be batched"));
            }
            Q::CommitBundle(b) => A::Bundle(crate::bundle::commit(self, id, b)?),
            Q::Lock(_) | Q::TestLock(_) => {
                // The node serves these with the caller's session; one
                // reaching dispatch was nested in a batch.
                return Err(RemoteError::new(ErrorCode::InvalidArgument, "locks cannot be batched"));
            }
            Q::GetQuota { user, all } => A::Quota(self.get_quota(c, admin, user, all)?),
            Q::SetQuota { user, limits } => {
                // Admins only: checked in `handle`.
                let rec = self
                    .users
                    .get(&user)?
                    .ok_or_else(|| RemoteError::new(ErrorCode::NotFound, format!("user {user:?} is not registered")))?;
                self.ns.set_quota(rec.uid, limits)?;
                tracing::info!(by = %id.name, %user, ?limits, "quota set");
                A::Quota(vec![self.ns.quota_report(rec.uid, user)?])
            }
            Q::DropReplica { ino, host } => {
                let usable = |h: &str| self.hosts.live_loc(h).is_some();
                self.ns.drop_one_replica(c, ino, &host, &usable)?;
                tracing::info!(by = %id.name, ino, %host, "replica dropped");
                return self.dispatch(id, c, admin, Q::Where { ino });
            }
            Q::Admin(a) => crate::admin::handle(self, id, a)?,
            Q::Batch(reqs) => {
                if reqs.len() > fs_proto::meta::MAX_BATCH {
                    return Err(RemoteError::new(
                        ErrorCode::InvalidArgument,
                        format!("a batch holds at most {} requests, not {}", fs_proto::meta::MAX_BATCH, reqs.len()),
                    ));
                }
                let mut out = Vec::with_capacity(reqs.len());
                for r in reqs {
                    if matches!(r, Q::Batch(_)) {
                        out.push(Err(RemoteError::new(ErrorCode::InvalidArgument, "nested batch")));
                        continue;
                    }
                    out.push(self.dispatch(id, c, admin, r));
                }
                A::Batch(out)
            }
        })
    }

    /// `GetQuota`: a user sees their own; an admin anyone's, or everyone's.
    fn get_quota(&self, c: &Caller, admin: bool, user: Option<String>, all: bool) -> R<Vec<QuotaReport>> {
        let someone_else = all || user.as_deref().is_some_and(|u| u != c.name);
        if someone_else && !admin {
            return Err(RemoteError::new(ErrorCode::NotPermitted, "only an admin may see other users' quotas"));
        }
        let names = self.users.names()?;
        let name_of = |uid: u32| names.get(&uid).cloned().unwrap_or_default();
        if all {
            return self.ns.quota_uids()?.into_iter().map(|uid| self.ns.quota_report(uid, name_of(uid))).collect();
        }
        let (uid, name) = match user {
            Some(u) => {
                let rec = self
                    .users
                    .get(&u)?
                    .ok_or_else(|| RemoteError::new(ErrorCode::NotFound, format!("user {u:?} is not registered")))?;
                (rec.uid, u)
            }
            None => (c.uid, c.name.clone()),
        };
        Ok(vec![self.ns.quota_report(uid, name)?])
    }

    fn open_read(&self, id: &Identity, c: &Caller, ino: Ino) -> R<ReadGrant> {
        // Stamped before the check (see crate::voids).
        let issued = self.ns.voids.stamp();
        let (inode, reps) = self.ns.open_read(c, ino)?;
        let attr = inode.attr(ino);
        if inode.size == 0 || inode.gen == 0 {
            return Ok(ReadGrant { attr, replicas: Vec::new(), cap: None });
        }
        let hash = inode.hash.ok_or_else(|| RemoteError::new(ErrorCode::Internal, "file has a size but no hash"))?;
        let mut replicas = Vec::new();
        let mut down = Vec::new();
        for (host, r) in &reps {
            if r.gen != inode.gen || r.bad {
                continue;
            }
            match self.hosts.live_loc(host) {
                Some(loc) => replicas.push(loc),
                None => down.push(host.clone()),
            }
        }
        if replicas.is_empty() {
            return Err(RemoteError::new(
                ErrorCode::NoServer,
                if down.is_empty() {
                    format!("inode {ino} has no good replica")
                } else {
                    format!("every replica of inode {ino} is on a server that is down ({})", down.join(", "))
                },
            ));
        }
        let cap = self.signer.sign(&Capability {
            ino,
            gen: inode.gen,
            access: Access::Read,
            principal: Principal::of(id),
            expires_ms: self.expiry(),
            issued,
            base_gen: None,
            expect: Some((inode.size, hash)),
            inos: Vec::new(),
            room: None,
        });
        Ok(ReadGrant { attr, replicas, cap: Some(cap) })
    }

    fn open_write(&self, id: &Identity, c: &Caller, ino: Ino, site: &str) -> R<WriteGrant> {
        // Stamped before the check (see crate::voids).
        let issued = self.ns.voids.stamp();
        let target = self.hosts.choose_write_target(site)?;
        // The owner's quota: a new generation replaces every replica of the
        // current one, so it may be as large as they are plus what is left.
        let owner = self.ns.getattr(ino)?.uid;
        let room = match self.ns.quota_room(owner)?.1 {
            Some(0) => {
                return Err(RemoteError::new(
                    ErrorCode::QuotaExceeded,
                    format!("uid {owner} has no bytes left in its quota (see `renkei quota`)"),
                ))
            }
            r => r,
        };
        let (before, gen, reps) = self.ns.begin_write(c, ino)?;
        let room = room.map(|r| r.saturating_add(reps.iter().map(|(_, r)| r.size).sum::<u64>()));
        let base = match (before.gen, before.size, before.hash) {
            (g, size, Some(hash)) if g > 0 && size > 0 => {
                let replicas: Vec<ServerLoc> = reps
                    .iter()
                    .filter(|(_, r)| r.gen == g && !r.bad)
                    .filter_map(|(h, _)| self.hosts.live_loc(h))
                    .collect();
                let cap = self.signer.sign(&Capability {
                    ino,
                    gen: g,
                    access: Access::Read,
                    principal: Principal::host(target.host.clone()),
                    expires_ms: self.expiry(),
                    issued,
                    base_gen: None,
                    expect: Some((size, hash)),
                    inos: Vec::new(),
                    room: None,
                });
                Some(BaseGrant { gen: g, cap, replicas })
            }
            _ => None,
        };
        let cap = self.signer.sign(&Capability {
            ino,
            gen,
            access: Access::Write,
            principal: Principal::of(id),
            expires_ms: self.expiry(),
            issued,
            base_gen: base.as_ref().map(|b| b.gen),
            expect: None,
            inos: Vec::new(),
            room,
        });
        Ok(WriteGrant { attr: before.attr(ino), gen, target, cap, base })
    }

    /// File system totals. The inode count scans every inode: for users it
    /// is counted at most once per [`COUNTS_FRESH`] (anyone may ask, so
    /// asking must not stall the meta server); an admin's question counts
    /// now (`renkei df` right after a change, fsck-like checks).
    fn statfs(&self, admin: bool) -> StatFs {
        let counts = HashMap::new();
        let hosts = self.hosts.list(&counts);
        let live: Vec<_> = hosts.iter().filter(|h| h.alive).collect();
        let files = {
            let mut cache = self.inode_count.lock().unwrap_or_else(|p| p.into_inner());
            match *cache {
                Some((at, n)) if !admin && at.elapsed() < COUNTS_FRESH => n,
                _ => {
                    let n = self.ns.count_inodes();
                    *cache = Some((Instant::now(), n));
                    n
                }
            }
        };
        StatFs {
            capacity: live.iter().map(|h| h.capacity).sum(),
            free: live.iter().map(|h| h.free).sum(),
            files,
            servers: live.len() as u32,
        }
    }

    /// Replicas per host, counted at most once per [`COUNTS_FRESH`]: the
    /// count scans every replica, and `ListHosts` is open to every user.
    pub(crate) fn replica_counts(&self) -> R<HashMap<String, u64>> {
        let mut cache = self.replica_count.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, counts)) = &*cache {
            if at.elapsed() < COUNTS_FRESH {
                return Ok(counts.clone());
            }
        }
        let mut counts = HashMap::new();
        for (host, _, _) in self.ns.all_replicas()? {
            *counts.entry(host).or_insert(0) += 1;
        }
        *cache = Some((Instant::now(), counts.clone()));
        Ok(counts)
    }
}
