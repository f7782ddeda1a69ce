//! Quotas: what each uid holds (files, and bytes of every replica) and the
//! limits an admin set for it.
//!
//! Usage is kept in the namespace tree by one function, [`account`], that
//! every namespace transaction runs before it commits: it compares each
//! inode the transaction touched (its record or one of its replicas) before
//! and after, so no operation can change what a user holds without it being
//! counted. A file counts once as a file; each of its replicas counts its
//! size in bytes (two replicas, twice the bytes: Gfarm's physical quota).
//!
//! Enforcement: a transaction that adds files or bytes to a uid is refused
//! with [`ErrorCode::QuotaExceeded`] if the uid would then be above its hard
//! limit, or above its soft limit for longer than the grace period. Bundle
//! commits are counted ([`Mode::Count`]) and admit their new entries one by
//! one with a [`Tally`]: an entry is refused once its owner is at a limit,
//! so each entry succeeds or fails alone. A writing-back mount avoids that
//! refusal (of something it acknowledged) by acknowledging locally only
//! within the room a lease grant tells it ([`room`]), counting its own
//! uncommitted entries against it; the meta server leases it no more inode
//! numbers than files are left. A write session's capability carries the
//! largest size the owner's quota leaves, which the file server enforces.

use crate::keys;
use crate::record::{InodeRecord, ReplicaRecord, UsageRecord};
use crate::txn::{Txn, TxnError};
use fs_proto::meta::{QuotaLimits, QuotaReport};
use fs_proto::{ErrorCode, Ino, RemoteError};
use std::collections::{BTreeMap, BTreeSet};

type R<T> = Result<T, RemoteError>;

/// Whether a transaction's additions are checked against the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Refuse the transaction if it takes a uid past a limit.
    Enforce,
    /// Count only (bundle commits: see the module docs).
    Count,
}

/// (owner, bytes of its replicas) of `ino`, None if it does not exist.
fn holding(inode: Option<InodeRecord>, replicas: impl Iterator<Item = ReplicaRecord>) -> Option<(u32, u64)> {
    let i = inode?;
    Some((i.uid, replicas.map(|r| r.size).fold(0u64, u64::saturating_add)))
}

fn before(t: &Txn<'_>, ino: Ino) -> Result<Option<(u32, u64)>, TxnError> {
    let inode = t.get_committed::<InodeRecord>(&keys::inode(ino))?;
    if inode.is_none() {
        return Ok(None);
    }
    let mut reps = Vec::new();
    for (_, v) in t.committed_with_prefix(&keys::replica_prefix(ino))? {
        reps.push(crate::record::decode::<ReplicaRecord>(&v)?);
    }
    Ok(holding(inode, reps.into_iter()))
}

fn after(t: &Txn<'_>, ino: Ino) -> Result<Option<(u32, u64)>, TxnError> {
    let inode = t.get::<InodeRecord>(&keys::inode(ino))?;
    if inode.is_none() {
        return Ok(None);
    }
    let mut reps = Vec::new();
    for k in t.keys_with_prefix(&keys::replica_prefix(ino))? {
        if let Some(r) = t.get::<ReplicaRecord>(&k)? {
            reps.push(r);
        }
    }
    Ok(holding(inode, reps.into_iter()))
}

/// A uid's usage as the transaction sees it.
pub fn usage(t: &Txn<'_>, uid: u32) -> R<UsageRecord> {
    Ok(t.get::<UsageRecord>(&keys::usage(uid))?.unwrap_or_default())
}

/// A uid's limits as the transaction sees it (all zero: none).
pub fn limits(t: &Txn<'_>, uid: u32) -> R<QuotaLimits> {
    Ok(t.get::<QuotaLimits>(&keys::limits(uid))?.unwrap_or_default())
}

/// Count what the transaction changed, and (in [`Mode::Enforce`]) refuse
/// it if it takes a uid past a limit. Run by every namespace transaction
/// just before it commits.
pub fn account(t: &mut Txn<'_>, mode: Mode, now_ms: u64) -> R<()> {
    let touched: BTreeSet<Ino> = t.written_keys().filter_map(keys::usage_ino).collect();
    if touched.is_empty() {
        return Ok(());
    }
    // uid -> (files, bytes) change.
    let mut delta: BTreeMap<u32, (i64, i128)> = BTreeMap::new();
    for ino in touched {
        let (b, a) = (before(t, ino)?, after(t, ino)?);
        if b == a {
            continue;
        }
        if let Some((uid, bytes)) = b {
            let d = delta.entry(uid).or_default();
            d.0 -= 1;
            d.1 -= bytes as i128;
        }
        if let Some((uid, bytes)) = a {
            let d = delta.entry(uid).or_default();
            d.0 += 1;
            d.1 += bytes as i128;
        }
    }
    for (uid, (files, bytes)) in delta {
        if files == 0 && bytes == 0 {
            continue;
        }
        let mut u = usage(t, uid)?;
        u.files = apply(u.files, files as i128);
        u.bytes = apply(u.bytes, bytes);
        let l = limits(t, uid)?;
        u.files_over_since_ms = over_since(u.files, l.files_soft, u.files_over_since_ms, now_ms);
        u.bytes_over_since_ms = over_since(u.bytes, l.bytes_soft, u.bytes_over_since_ms, now_ms);
        if mode == Mode::Enforce {
            if files > 0 {
                check(uid, "files", u.files, l.files_soft, l.files_hard, u.files_over_since_ms, l.grace(), now_ms)?;
            }
            if bytes > 0 {
                check(uid, "bytes", u.bytes, l.bytes_soft, l.bytes_hard, u.bytes_over_since_ms, l.grace(), now_ms)?;
            }
        }
        t.put(keys::usage(uid), &u);
    }
    Ok(())
}

fn apply(v: u64, d: i128) -> u64 {
    (v as i128 + d).clamp(0, u64::MAX as i128) as u64
}

fn over_since(used: u64, soft: u64, since: Option<u64>, now_ms: u64) -> Option<u64> {
    (soft > 0 && used > soft).then(|| since.unwrap_or(now_ms))
}

#[allow(clippy::too_many_arguments)]
fn check(uid: u32, what: &str, used: u64, soft: u64, hard: u64, since: Option<u64>, grace_s: u64, now: u64) -> R<()> {
    if hard > 0 && used > hard {
        return Err(RemoteError::new(
            ErrorCode::QuotaExceeded,
            format!("uid {uid} would hold {used} {what}, above its hard limit of {hard} (see `renkei quota`)"),
        ));
    }
    if let Some(since) = since.filter(|s| now >= s.saturating_add(grace_s.saturating_mul(1000))) {
        return Err(RemoteError::new(
            ErrorCode::QuotaExceeded,
            format!(
                "uid {uid} holds {used} {what}, above its soft limit of {soft} for {} s, longer than the grace of {grace_s} s (see `renkei quota`)",
                now.saturating_sub(since) / 1000
            ),
        ));
    }
    Ok(())
}

/// Admission of a bundle's new entries: an entry that adds to a uid is
/// refused once the uid is at or over a limit (as counted so far in this
/// bundle), so a bundle passes a hard limit by at most its one entry that
/// crosses it, even from a client that ignores its capability's room.
#[derive(Default)]
pub struct Tally {
    seen: BTreeMap<u32, (UsageRecord, QuotaLimits)>,
}

impl Tally {
    /// Admit an entry adding `files` and `bytes` to `uid`, or refuse it.
    pub fn admit(&mut self, t: &Txn<'_>, uid: u32, files: u64, bytes: u64, now_ms: u64) -> R<()> {
        let (u, l) = match self.seen.entry(uid) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert((usage(t, uid)?, limits(t, uid)?)),
        };
        let grace_over = |since: Option<u64>| since.is_some_and(|s| now_ms >= s.saturating_add(l.grace() * 1000));
        let full = |used: u64, soft: u64, hard: u64, since: Option<u64>| {
            (hard > 0 && used >= hard) || grace_over(since.or((soft > 0 && used > soft).then_some(now_ms)))
        };
        if files > 0 && full(u.files, l.files_soft, l.files_hard, u.files_over_since_ms) {
            return Err(RemoteError::new(
                ErrorCode::QuotaExceeded,
                format!("uid {uid} holds {} files, its limit (see `renkei quota`)", u.files),
            ));
        }
        if bytes > 0 && full(u.bytes, l.bytes_soft, l.bytes_hard, u.bytes_over_since_ms) {
            return Err(RemoteError::new(
                ErrorCode::QuotaExceeded,
                format!("uid {uid} holds {} bytes, its limit (see `renkei quota`)", u.bytes),
            ));
        }
        u.files = u.files.saturating_add(files);
        u.bytes = u.bytes.saturating_add(bytes);
        Ok(())
    }
}

/// What `uid` may still add before a request that adds is refused: (files,
/// bytes), None where there is no limit; 0 when a limit is reached or a
/// soft limit's grace is over.
pub fn room(t: &Txn<'_>, uid: u32, now_ms: u64) -> R<(Option<u64>, Option<u64>)> {
    let l = limits(t, uid)?;
    if !l.is_set() {
        return Ok((None, None));
    }
    let u = usage(t, uid)?;
    let grace_over = |since: Option<u64>| since.is_some_and(|s| now_ms >= s.saturating_add(l.grace() * 1000));
    let one = |used: u64, hard: u64, since: Option<u64>| {
        if grace_over(since) {
            Some(0)
        } else if hard > 0 {
            Some(hard.saturating_sub(used))
        } else {
            None
        }
    };
    Ok((one(u.files, l.files_hard, u.files_over_since_ms), one(u.bytes, l.bytes_hard, u.bytes_over_since_ms)))
}

/// The report of one uid.
pub fn report(t: &Txn<'_>, uid: u32, user: String) -> R<QuotaReport> {
    let u = usage(t, uid)?;
    Ok(QuotaReport {
        user,
        uid,
        files: u.files,
        bytes: u.bytes,
        limits: limits(t, uid)?,
        files_over_since_ms: u.files_over_since_ms,
        bytes_over_since_ms: u.bytes_over_since_ms,
    })
}

/// Every uid with a usage or limits record.
pub fn uids(t: &Txn<'_>) -> R<Vec<u32>> {
    let mut v: BTreeSet<u32> = BTreeSet::new();
    for p in [keys::all_usage(), keys::all_limits()] {
        v.extend(t.keys_with_prefix(&p)?.iter().filter_map(|k| keys::quota_uid(k)));
    }
    Ok(v.into_iter().collect())
}

/// Set `uid`'s limits; the soft-limit clocks restart from what it holds now.
pub fn set_limits(t: &mut Txn<'_>, uid: u32, l: QuotaLimits, now_ms: u64) -> R<()> {
    if (l.files_hard > 0 && l.files_soft > l.files_hard) || (l.bytes_hard > 0 && l.bytes_soft > l.bytes_hard) {
        return Err(RemoteError::new(ErrorCode::InvalidArgument, "a soft limit above its hard limit"));
    }
    let mut u = usage(t, uid)?;
    u.files_over_since_ms = over_since(u.files, l.files_soft, u.files_over_since_ms, now_ms);
    u.bytes_over_since_ms = over_since(u.bytes, l.bytes_soft, u.bytes_over_since_ms, now_ms);
    t.put(keys::usage(uid), &u);
    if l.is_set() {
        t.put(keys::limits(uid), &l);
    } else {
        t.del(keys::limits(uid));
    }
    Ok(())
}

/// Count every uid's usage from scratch (a database made before quotas
/// existed); written with the marker in one batch.
pub fn count_all(tree: &crate::store::Tree) -> Result<usize, TxnError> {
    let mut owner: BTreeMap<Ino, u32> = BTreeMap::new();
    let mut usage: BTreeMap<u32, UsageRecord> = BTreeMap::new();
    for kv in tree.scan_prefix(keys::inode(0).get(..1).unwrap_or_default()) {
        let (k, v) = kv?;
        let Some(ino) = keys::usage_ino(&k) else { continue };
        let i: InodeRecord = crate::record::decode(&v)?;
        owner.insert(ino, i.uid);
        usage.entry(i.uid).or_default().files += 1;
    }
    for kv in tree.scan_prefix(keys::all_replicas()) {
        let (k, v) = kv?;
        let Some(ino) = keys::usage_ino(&k) else { continue };
        let Some(uid) = owner.get(&ino) else { continue };
        let r: ReplicaRecord = crate::record::decode(&v)?;
        let u = usage.entry(*uid).or_default();
        u.bytes = u.bytes.saturating_add(r.size);
    }
    let mut batch = crate::store::Batch::default();
    for (uid, u) in &usage {
        batch.insert(keys::usage(*uid), crate::record::encode(u));
    }
    batch.insert(keys::USAGE_DONE, Vec::<u8>::new());
    tree.apply_batch(batch)?;
    Ok(usage.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::Namespace;
    use crate::perm::Caller;
    use fs_proto::meta::SetAttr;
    use fs_proto::{FileKind, ROOT_INO};

    fn user(uid: u32) -> Caller {
        Caller { name: format!("u{uid}"), uid, gid: uid, groups: Vec::new() }
    }

    fn used(ns: &Namespace, uid: u32) -> (u64, u64) {
        let r = ns.quota_report(uid, String::new()).unwrap();
        (r.files, r.bytes)
    }

    /// Every mutation keeps the counted usage equal to a count from scratch
    /// (what a database without usage records gets when opened).
    #[test]
    fn usage_follows_every_mutation_and_equals_a_recount() {
        let db = crate::store::Store::temporary().unwrap();
        let tree = db.open_tree("ns").unwrap();
        let ns = Namespace::open(tree.clone(), 0o777).unwrap();
        let (a, b) = (user(1000), user(1001));
        let d = ns.mkdir(&a, ROOT_INO, "d", 0o777).unwrap().ino;
        let f = ns.create(&a, d, "f", FileKind::Regular, 0o644, 0, true).unwrap().0.ino;
        let h = [3u8; 32];
        let gen = ns.begin_write(&a, f).unwrap().1;
        ns.register_replica(f, gen, "pop1", 1000, h).unwrap();
        ns.register_replica(f, gen, "pop2", 1000, h).unwrap();
        assert_eq!(used(&ns, 1000), (2, 2000), "two replicas count twice");
        ns.link(&a, f, d, "g").unwrap();
        assert_eq!(used(&ns, 1000), (2, 2000), "a second name is not a second file");
        ns.symlink(&b, d, "s", "f").unwrap();
        assert_eq!(used(&ns, 1001), (1, 0));
        // chown moves the file and its bytes.
        ns.setattr(
            &Caller { name: "root".into(), uid: 0, gid: 0, groups: vec![] },
            f,
            &SetAttr { uid: Some(1001), ..Default::default() },
        )
        .unwrap();
        assert_eq!((used(&ns, 1000), used(&ns, 1001)), ((1, 0), (2, 2000)));
        // A new generation replaces every replica.
        let gen = ns.begin_write(&b, f).unwrap().1;
        ns.register_replica(f, gen, "pop1", 10, h).unwrap();
        assert_eq!(used(&ns, 1001), (2, 10));
        ns.unlink(&a, d, "g").unwrap();
        ns.unlink(&a, d, "f").unwrap();
        assert_eq!(used(&ns, 1001), (1, 0));
        // A recount from scratch agrees.
        let counted: Vec<_> = [0, 1000, 1001].iter().map(|u| used(&ns, *u)).collect();
        for uid in [0u32, 1000, 1001] {
            tree.remove(keys::usage(uid)).unwrap();
        }
        count_all(&tree).unwrap();
        let recounted: Vec<_> = [0, 1000, 1001].iter().map(|u| used(&ns, *u)).collect();
        assert_eq!(counted, recounted);
    }

    #[test]
    fn hard_and_soft_limits_refuse_additions_but_never_removals() {
        let db = crate::store::Store::temporary().unwrap();
        let ns = Namespace::open(db.open_tree("ns").unwrap(), 0o777).unwrap();
        let a = user(1000);
        ns.set_quota(1000, QuotaLimits { files_hard: 2, ..Default::default() }).unwrap();
        ns.mkdir(&a, ROOT_INO, "d1", 0o755).unwrap();
        ns.mkdir(&a, ROOT_INO, "d2", 0o755).unwrap();
        let e = ns.mkdir(&a, ROOT_INO, "d3", 0o755).unwrap_err();
        assert_eq!(e.code, ErrorCode::QuotaExceeded, "{e}");
        assert_eq!(used(&ns, 1000).0, 2, "the refused mkdir changed nothing");
        assert_eq!(ns.quota_room(1000).unwrap(), (Some(0), None));
        // A soft limit whose grace is over refuses too; removing works.
        ns.set_quota(1000, QuotaLimits { files_soft: 1, grace_s: 1, ..Default::default() }).unwrap();
        let tree = db.open_tree("ns").unwrap();
        let mut u = usage(&Txn::new(&tree), 1000).unwrap();
        u.files_over_since_ms = Some(1);
        tree.insert(keys::usage(1000), crate::record::encode(&u)).unwrap();
        let e = ns.mkdir(&a, ROOT_INO, "d3", 0o755).unwrap_err();
        assert!(e.message.contains("soft limit"), "{e}");
        ns.rmdir(&a, ROOT_INO, "d2").unwrap();
        ns.rmdir(&a, ROOT_INO, "d1").unwrap();
        ns.mkdir(&a, ROOT_INO, "d3", 0o755).unwrap();
    }
}
