//! Turning plans into orders: the `PlanReplication` and `PlanCheck`
//! requests, and the capabilities a destination needs to copy a replica
//! (read it from peers, register its copy) or a checker needs to verify one.

use super::plan::{plan_file, Outcome, Policy, Selector, Want};
use super::view::{file_view, HostTable};
use crate::perm::Caller;
use crate::service::MetaService;
use fs_proto::replication::{
    CheckItem, CheckOrder, CheckPlan, CopyGoal, CopyItem, CopyOrder, ReplicaNote, ReplicationPlan, ReplicationQuery,
    SkipReason, Skipped,
};
use fs_proto::{Access, Capability, ErrorCode, Gen, Hash, Identity, Ino, Principal, RemoteError, SignedCapability};
use std::collections::{BTreeMap, BTreeSet};

type R<T> = Result<T, RemoteError>;

/// Most files one plan request may name (bounds the work and the answer).
pub const MAX_PLAN_FILES: usize = 4096;

/// Check a `Replicate` capability presented with a registration: it must
/// have been issued to the registering host, for exactly these bytes.
pub fn check_copy(cap: &Capability, registrant: &str, size: u64, hash: Hash) -> R<()> {
    if cap.principal != Principal::host(registrant) {
        return Err(RemoteError::new(
            ErrorCode::BadCapability,
            format!("copy capability was issued to {}, registered by host {registrant}", cap.principal),
        ));
    }
    if cap.expect != Some((size, hash)) {
        return Err(RemoteError::new(ErrorCode::Corrupt, "copied replica differs from the generation it copies"));
    }
    Ok(())
}

/// The capability that lets `dst` copy `(ino, gen)` and register the copy.
pub fn sign_copy(svc: &MetaService, ino: Ino, gen: Gen, dst: &str, size: u64, hash: Hash) -> SignedCapability {
    svc.signer.sign(&Capability {
        ino,
        gen,
        access: Access::Replicate,
        principal: Principal::host(dst),
        expires_ms: svc.expiry(),
        issued: svc.ns.voids.stamp(),
        base_gen: None,
        expect: Some((size, hash)),
        inos: Vec::new(),
        room: None,
    })
}

fn resolve(place: &Option<String>, table: &HostTable) -> R<Option<Selector>> {
    match place {
        None => Ok(None),
        Some(p) => Selector::resolve(p, &table.views)
            .map(Some)
            .ok_or_else(|| RemoteError::new(ErrorCode::NotFound, format!("no host or site named {p:?}"))),
    }
}

fn check_size(n: usize) -> R<()> {
    if n > MAX_PLAN_FILES {
        return Err(RemoteError::new(
            ErrorCode::TooLarge,
            format!("{n} files in one plan request; at most {MAX_PLAN_FILES}"),
        ));
    }
    Ok(())
}

fn not_a_file(e: &RemoteError) -> bool {
    matches!(e.code, ErrorCode::IsADirectory | ErrorCode::InvalidArgument)
}

/// Answer `PlanReplication` for caller `c` (who needs read permission on
/// every file).
pub fn plan_replication(svc: &MetaService, c: &Caller, q: ReplicationQuery) -> R<ReplicationPlan> {
    check_size(q.inos.len())?;
    let table = HostTable::now(svc);
    let default = svc.config.default_ncopy.max(1);
    let policy = Policy {
        want: match q.goal {
            CopyGoal::Copies(n) => Want::Copies(n),
            CopyGoal::Repair => Want::Repair { default },
        },
        from: resolve(&q.from, &table)?,
        to: resolve(&q.to, &table)?,
        remove_surplus: false,
        down_grace_ms: 0,
    };
    let mut plan =
        ReplicationPlan { orders: Vec::new(), satisfied: Vec::new(), skipped: Vec::new(), refused: Vec::new() };
    let mut by_dst: BTreeMap<String, Vec<CopyItem>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for ino in q.inos {
        if !seen.insert(ino) {
            continue;
        }
        let (inode, reps) = match svc.ns.open_read(c, ino) {
            Ok(v) => v,
            Err(e) if not_a_file(&e) => {
                plan.skipped.push(Skipped { ino, reason: SkipReason::NotAFile, missing: 0 });
                continue;
            }
            Err(e) => {
                plan.refused.push((ino, e));
                continue;
            }
        };
        let hash = match inode.hash {
            Some(h) if inode.size > 0 && inode.gen > 0 => h,
            _ => {
                plan.skipped.push(Skipped { ino, reason: SkipReason::Empty, missing: 0 });
                continue;
            }
        };
        let fp = plan_file(&file_view(ino, &inode, &reps, Vec::new()), &table.views, &policy);
        match fp.outcome {
            Outcome::Satisfied => plan.satisfied.push(ino),
            Outcome::Planned => {}
            Outcome::Short { reason, missing } => plan.skipped.push(Skipped { ino, reason, missing }),
        }
        for copy in fp.copies {
            let cap = if q.dry_run {
                SignedCapability { body: Vec::new(), sig: Vec::new() }
            } else {
                sign_copy(svc, ino, inode.gen, &copy.dst, inode.size, hash)
            };
            let item =
                CopyItem { ino, gen: inode.gen, size: inode.size, hash, cap, sources: table.locs_of(&copy.sources) };
            by_dst.entry(copy.dst).or_default().push(item);
        }
    }
    for (dst, items) in by_dst {
        if let Some(target) = table.locs.get(&dst) {
            plan.orders.push(CopyOrder { target: target.clone(), items });
        }
    }
    Ok(plan)
}

/// Answer `PlanCheck` for caller `c`: read capabilities (for the caller)
/// for every live replica, grouped by host.
pub fn plan_check(svc: &MetaService, id: &Identity, c: &Caller, inos: &[Ino]) -> R<CheckPlan> {
    check_size(inos.len())?;
    let table = HostTable::now(svc);
    let mut plan = CheckPlan {
        orders: Vec::new(),
        known_bad: Vec::new(),
        unreachable: Vec::new(),
        lost: Vec::new(),
        refused: Vec::new(),
    };
    let mut by_host: BTreeMap<String, Vec<CheckItem>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for &ino in inos {
        if !seen.insert(ino) {
            continue;
        }
        let (inode, reps) = match svc.ns.open_read(c, ino) {
            Ok(v) => v,
            Err(e) if not_a_file(&e) => continue,
            Err(e) => {
                plan.refused.push((ino, e));
                continue;
            }
        };
        let Some(hash) = inode.hash.filter(|_| inode.size > 0 && inode.gen > 0) else { continue };
        let current: Vec<_> = reps.iter().filter(|(_, r)| r.gen == inode.gen).collect();
        if current.is_empty() {
            plan.lost.push(ino);
            continue;
        }
        for (host, r) in current {
            let site = table.locs.get(host).map(|l| l.site.clone()).unwrap_or_default();
            let note = ReplicaNote { ino, host: host.clone(), site };
            let alive = table.views.iter().any(|h| h.host == *host && h.alive());
            if r.bad {
                plan.known_bad.push(note);
            } else if !alive {
                plan.unreachable.push(note);
            } else {
                let cap = svc.signer.sign(&Capability {
                    ino,
                    gen: inode.gen,
                    access: Access::Read,
                    principal: Principal::of(id),
                    expires_ms: svc.expiry(),
                    issued: svc.ns.voids.stamp(),
                    base_gen: None,
                    expect: Some((inode.size, hash)),
                    inos: Vec::new(),
                    room: None,
                });
                by_host.entry(host.clone()).or_default().push(CheckItem { ino, gen: inode.gen, cap });
            }
        }
    }
    for (host, items) in by_host {
        if let Some(target) = table.locs.get(&host) {
            plan.orders.push(CheckOrder { target: target.clone(), items });
        }
    }
    Ok(plan)
}
