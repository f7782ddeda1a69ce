//! The namespace side of bundles (see [`fs_proto::bundle`]): leasing
//! ranges of inode numbers, and committing a bundle of new entries (with
//! the replicas their file server stored) as one atomic transaction.

use super::{check_name, entry, err, load, load_dir, new_inode, Namespace, MAX_LINKS, MAX_TARGET, R};
use crate::keys;
use crate::perm::{Caller, W, X};
use crate::record::{DentryRecord, InoLeaseRecord, InodeRecord, ReplicaRecord};
use crate::txn::{Txn, TxnError};
use fs_proto::bundle::{BundleEntry, BundleOp, EntryResult, InoRange, StoredOp};
use fs_proto::{Attr, ErrorCode, FileKind, Hash, Ino, Timestamp};
use std::collections::HashSet;

/// The generation a bundled file's first replica has.
pub const FIRST_GEN: u64 = 1;

impl Namespace {
    /// Lease `count` fresh inode numbers to `principal`: the allocator moves
    /// past them, so nobody else is ever given one.
    pub fn lease_inodes(&self, principal: &str, count: u64) -> R<InoRange> {
        if count == 0 {
            return Err(err(ErrorCode::InvalidArgument, "no inode numbers asked for"));
        }
        self.write(|t| {
            let first = t
                .get_raw(keys::NEXT_INO)?
                .and_then(|v| v.try_into().ok().map(u64::from_be_bytes))
                .ok_or_else(|| err(ErrorCode::Internal, "inode counter missing"))?;
            t.put_raw(keys::NEXT_INO.to_vec(), (first + count).to_be_bytes().to_vec());
            let rec =
                InoLeaseRecord { count, principal: principal.to_string(), granted_ms: Timestamp::now().as_millis() };
            t.put(keys::ino_lease(first), &rec);
            Ok(InoRange { first, count })
        })
    }

    /// Whether every number of `r` was leased to `principal` (by one grant).
    pub fn range_leased_to(&self, r: InoRange, principal: &str) -> R<bool> {
        if r.count == 0 {
            return Ok(false);
        }
        let Some(kv) = self.tree.range(keys::ino_lease(0)..=keys::ino_lease(r.first)).next_back() else {
            return Ok(false);
        };
        let (k, v) = kv.map_err(TxnError::from)?;
        let Some(first) = keys::ino_lease_first(&k) else { return Ok(false) };
        let rec: InoLeaseRecord = crate::record::decode(&v).map_err(TxnError::from)?;
        let end = first.saturating_add(rec.count);
        Ok(rec.principal == principal && r.first.saturating_add(r.count) <= end)
    }

    /// Whether `ino` was leased to `principal`.
    fn leased_to(&self, ino: Ino, principal: &str) -> R<bool> {
        let Some(kv) = self.tree.range(keys::ino_lease(0)..=keys::ino_lease(ino)).next_back() else {
            return Ok(false);
        };
        let (k, v) = kv.map_err(TxnError::from)?;
        let Some(first) = keys::ino_lease_first(&k) else { return Ok(false) };
        let rec: InoLeaseRecord = crate::record::decode(&v).map_err(TxnError::from)?;
        Ok(ino - first < rec.count && rec.principal == principal)
    }

    /// Apply every operation of a bundle, in order, in one transaction, as
    /// `c` (the bundle's principal), each with the checks of the request it
    /// stands for; new regular files with bytes get their replica on `host`
    /// registered as generation [`FIRST_GEN`]. Each operation succeeds or
    /// fails alone (a failed one changes nothing; later ones that needed it
    /// fail in turn, e.g. entries of a directory whose creation failed). An
    /// operation naming an inode of `denied` (existing ones the caller
    /// cannot reach by path) fails with `PermissionDenied`.
    pub fn commit_bundle(
        &self,
        c: &Caller,
        host: &str,
        ops: &[StoredOp],
        denied: &HashSet<Ino>,
    ) -> R<Vec<EntryResult>> {
        let mut owned = Vec::with_capacity(ops.len());
        for o in ops {
            owned.push(match o.op.created() {
                Some(ino) => self.leased_to(ino, &c.name)?,
                None => true,
            });
        }
        // Counted, never refused for quota: a writing-back mount acknowledged
        // these already (see crate::quota).
        self.write_counting(crate::quota::Mode::Count, |t| {
            let now = Timestamp::now();
            let mut out = Vec::with_capacity(ops.len());
            let mut tally = crate::quota::Tally::default();
            for (o, owned) in ops.iter().zip(owned) {
                let sp = t.savepoint();
                let r = apply_op(t, c, host, o, owned, denied, now, &mut tally);
                if r.is_err() {
                    t.rollback_to(sp);
                }
                out.push(r);
            }
            Ok(out)
        })
    }
}

/// Fail with `Stale` unless `parent/name` names `ino`: the holder of the
/// directory's lease saw it so, and under the lease nobody else changed it.
fn expect_names(t: &Txn<'_>, parent: Ino, name: &str, ino: Ino) -> R<()> {
    match entry(t, parent, name)? {
        Some(d) if d.ino == ino => Ok(()),
        Some(d) => Err(err(ErrorCode::Stale, format!("{name} names inode {} now, not {ino}", d.ino))),
        None => Err(err(ErrorCode::NotFound, name.to_string())),
    }
}

#[allow(clippy::too_many_arguments)]
fn apply_op(
    t: &mut Txn<'_>,
    c: &Caller,
    host: &str,
    o: &StoredOp,
    owned: bool,
    denied: &HashSet<Ino>,
    now: Timestamp,
    tally: &mut crate::quota::Tally,
) -> EntryResult {
    if o.op.as_request().named_inos().iter().any(|i| denied.contains(i)) {
        return Err(err(ErrorCode::PermissionDenied, "no search permission above the directory"));
    }
    match &o.op {
        BundleOp::Create(e) => insert_entry(t, c, host, e, o.hash, owned, now, tally),
        BundleOp::Link { ino, parent, name } => super::link_in(t, c, *ino, *parent, name),
        BundleOp::Unlink { parent, name, ino } => {
            expect_names(t, *parent, name, *ino)?;
            super::unlink_in(t, c, *parent, name)?;
            Ok(load(t, *parent)?.attr(*parent))
        }
        BundleOp::Rmdir { parent, name, ino } => {
            expect_names(t, *parent, name, *ino)?;
            super::rmdir_in(t, c, *parent, name)?;
            Ok(load(t, *parent)?.attr(*parent))
        }
        BundleOp::Rename { parent, name, new_parent, new_name, flags, ino } => {
            expect_names(t, *parent, name, *ino)?;
            super::rename_in(t, c, *parent, name, *new_parent, new_name, *flags)?;
            Ok(load(t, *ino)?.attr(*ino))
        }
        BundleOp::SetAttr { ino, set } => {
            if set.size.is_some() {
                return Err(err(ErrorCode::InvalidArgument, "a size travels as a new generation, not in a bundle"));
            }
            super::setattr_in(t, c, *ino, set)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn insert_entry(
    t: &mut Txn<'_>,
    c: &Caller,
    host: &str,
    e: &BundleEntry,
    stored: Option<Hash>,
    owned: bool,
    now: Timestamp,
    tally: &mut crate::quota::Tally,
) -> EntryResult {
    check_name(&e.name)?;
    match e.kind {
        FileKind::Regular => {}
        FileKind::Directory if e.size == 0 => {}
        FileKind::Symlink if e.size == 0 => {
            let len = e.target.as_ref().map_or(0, String::len);
            if len == 0 || len > MAX_TARGET {
                return Err(err(ErrorCode::NameTooLong, "symlink target length"));
            }
        }
        _ => return Err(err(ErrorCode::InvalidArgument, "bundles carry regular files, directories and symlinks")),
    }
    if !owned {
        return Err(err(ErrorCode::BadCapability, format!("inode {} was not leased to {}", e.ino, c.name)));
    }
    if let Some(existing) = t.get::<InodeRecord>(&keys::inode(e.ino))? {
        return recommitted(t, c, host, e, stored, existing, now);
    }
    let mut dir = load_dir(t, e.parent)?;
    c.check(&dir, W | X, "write permission on the directory")?;
    if entry(t, e.parent, &e.name)?.is_some() {
        return Err(err(ErrorCode::Exists, e.name.clone()));
    }
    if e.kind == FileKind::Directory && dir.nlink >= MAX_LINKS {
        return Err(err(ErrorCode::TooManyLinks, "parent has too many subdirectories"));
    }
    let hash = match (e.kind, e.size, stored) {
        (FileKind::Regular, 0, _) => None,
        (FileKind::Regular, _, Some(h)) => Some(h),
        (FileKind::Regular, _, None) => return Err(err(ErrorCode::Internal, "file bytes were not stored")),
        _ => None,
    };
    let (uid, gid) = check_owner(c, e, fs_proto::mode::new_gid(c, dir.perm, dir.gid))?;
    let bytes = if e.kind == FileKind::Regular { e.size } else { 0 };
    tally.admit(t, uid, 1, bytes, now.as_millis())?;
    let perm = fs_proto::mode::new_mode(c, e.kind, e.perm, dir.perm, gid);
    let mut i = new_inode(e.kind, perm, uid, gid, e.ctime, e.parent);
    i.atime = e.atime;
    i.mtime = e.mtime;
    i.ncopy = dir.ncopy;
    match e.kind {
        FileKind::Directory => {
            i.nlink = 2;
            dir.nlink += 1;
        }
        FileKind::Symlink => {
            i.target = e.target.clone();
            i.size = i.target.as_ref().map_or(0, |s| s.len() as u64);
        }
        _ => {
            if let Some(h) = hash {
                i.gen = super::bundle::FIRST_GEN;
                i.next_gen = i.gen;
                i.size = e.size;
                i.hash = Some(h);
            }
        }
    }
    dir.mtime = now;
    dir.ctime = now;
    if let Some(h) = hash {
        let rec = ReplicaRecord { gen: i.gen, size: e.size, hash: h, bad: false, registered_ms: now.as_millis() };
        t.put(keys::replica(e.ino, host), &rec);
    }
    t.put(keys::inode(e.ino), &i);
    super::put_name(t, e.parent, &e.name, DentryRecord { ino: e.ino, kind: e.kind });
    t.put(keys::inode(e.parent), &dir);
    let attr: Attr = i.attr(e.ino);
    Ok(attr)
}

/// The owner and group a bundled entry asks for, under chown's rules:
/// another owner is root's to give; another group must be one of the
/// creator's (or root's). The entry's mode is final as sent (the mount
/// applied chown's clearing of set-id bits in the order things happened).
fn check_owner(c: &Caller, e: &BundleEntry, default_gid: u32) -> R<(u32, u32)> {
    let uid = e.uid.unwrap_or(c.uid);
    let gid = e.gid.unwrap_or(default_gid);
    if uid != c.uid && !c.is_root() {
        return Err(err(ErrorCode::NotPermitted, "only root may change the owner"));
    }
    if gid != default_gid && !c.is_root() && !c.in_group(gid) {
        return Err(err(ErrorCode::NotPermitted, "may only change the group to one of your own groups"));
    }
    Ok((uid, gid))
}

/// A bundle retried after its answer was lost (its file server or the meta
/// server restarted in between) names an inode that exists already. If that
/// inode is this very entry, committed before (same name, kind, owner and,
/// for a file, the same first generation), the retry succeeds again,
/// registering `host`'s replica if that is new; anything else is refused.
fn recommitted(
    t: &mut Txn<'_>,
    c: &Caller,
    host: &str,
    e: &BundleEntry,
    stored: Option<Hash>,
    existing: InodeRecord,
    now: Timestamp,
) -> EntryResult {
    let named = entry(t, e.parent, &e.name)?.is_some_and(|d| d.ino == e.ino);
    let same_file = match e.kind {
        FileKind::Regular if e.size == 0 => existing.gen == 0 || existing.hash.is_none(),
        FileKind::Regular => existing.gen == FIRST_GEN && existing.hash == stored && existing.size == e.size,
        _ => true,
    };
    if !(named && existing.kind == e.kind && existing.uid == e.uid.unwrap_or(c.uid) && same_file) {
        return Err(err(ErrorCode::InvalidArgument, format!("inode {} is in use", e.ino)));
    }
    if let (FileKind::Regular, Some(h)) = (e.kind, stored.filter(|_| e.size > 0)) {
        if t.get::<ReplicaRecord>(&keys::replica(e.ino, host))?.is_none() {
            let rec =
                ReplicaRecord { gen: FIRST_GEN, size: e.size, hash: h, bad: false, registered_ms: now.as_millis() };
            t.put(keys::replica(e.ino, host), &rec);
        }
    }
    Ok(existing.attr(e.ino))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fs_proto::bundle::BundleEntry;
    use fs_proto::meta::SetAttr;
    use fs_proto::ROOT_INO;

    fn ns() -> (tempfile::TempDir, Namespace) {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::store::Store::open(&Default::default(), &dir.path().join("db")).unwrap();
        let ns = Namespace::open(db.open_tree(keys::TREE_NAMESPACE).unwrap(), 0o1777).unwrap();
        (dir, ns)
    }

    fn alice() -> Caller {
        Caller { name: "alice".into(), uid: 1000, gid: 1000, groups: vec![] }
    }

    fn entry(parent: Ino, name: &str, ino: Ino, kind: FileKind, size: u64) -> StoredOp {
        let t = Timestamp { secs: 1_000, nanos: 5 };
        StoredOp {
            op: BundleOp::Create(BundleEntry {
                parent,
                name: name.into(),
                ino,
                kind,
                perm: if kind == FileKind::Directory { 0o755 } else { 0o644 },
                atime: t,
                mtime: t,
                ctime: t,
                size,
                target: (kind == FileKind::Symlink).then(|| "target".to_string()),
                uid: None,
                gid: None,
            }),
            hash: (size > 0).then_some([7; 32]),
        }
    }

    fn op(op: BundleOp) -> StoredOp {
        StoredOp { op, hash: None }
    }

    #[test]
    fn operations_apply_in_order_each_alone() {
        let (_d, ns) = ns();
        let r = ns.lease_inodes("alice", 10).unwrap();
        let f = r.first;
        let none = HashSet::new();
        let old = ns.create(&alice(), ROOT_INO, "old", FileKind::Regular, 0o644, 0, true).unwrap().0;
        let ops = vec![
            entry(ROOT_INO, "d", f, FileKind::Directory, 0),
            entry(f, "tmp.x", f + 1, FileKind::Regular, 10),
            // rsync: attributes on the temporary name, then the rename.
            op(BundleOp::SetAttr { ino: f + 1, set: SetAttr { perm: Some(0o600), ..Default::default() } }),
            op(BundleOp::Rename {
                parent: f,
                name: "tmp.x".into(),
                new_parent: f,
                new_name: "x".into(),
                flags: Default::default(),
                ino: f + 1,
            }),
            // A stale view of a name fails alone and changes nothing.
            op(BundleOp::Unlink { parent: ROOT_INO, name: "old".into(), ino: 424_242 }),
            op(BundleOp::Link { ino: f + 1, parent: ROOT_INO, name: "x2".into() }),
            op(BundleOp::Unlink { parent: ROOT_INO, name: "old".into(), ino: old.ino }),
            // chown is root's: refused, rolled back alone.
            op(BundleOp::SetAttr { ino: f + 1, set: SetAttr { uid: Some(0), ..Default::default() } }),
            op(BundleOp::SetAttr { ino: f + 1, set: SetAttr { size: Some(3), ..Default::default() } }),
        ];
        let res = ns.commit_bundle(&alice(), "pop1", &ops, &none).unwrap();
        let codes: Vec<Option<ErrorCode>> = res.iter().map(|r| r.as_ref().err().map(|e| e.code)).collect();
        assert_eq!(
            codes,
            vec![
                None,
                None,
                None,
                None,
                Some(ErrorCode::Stale),
                None,
                None,
                Some(ErrorCode::NotPermitted),
                Some(ErrorCode::InvalidArgument)
            ]
        );
        let x = ns.lookup(&alice(), f, "x").unwrap();
        assert_eq!((x.ino, x.perm, x.nlink, x.uid), (f + 1, 0o600, 2, 1000));
        assert!(ns.lookup(&alice(), f, "tmp.x").is_err());
        assert!(ns.lookup(&alice(), ROOT_INO, "old").is_err());
        assert!(ns.getattr(old.ino).is_err(), "its last name gone, the inode is gone");
        // Removing the tree: children first, then the directory.
        let ops = vec![
            op(BundleOp::Unlink { parent: f, name: "x".into(), ino: f + 1 }),
            op(BundleOp::Unlink { parent: ROOT_INO, name: "x2".into(), ino: f + 1 }),
            op(BundleOp::Rmdir { parent: ROOT_INO, name: "d".into(), ino: f }),
        ];
        let res = ns.commit_bundle(&alice(), "pop1", &ops, &none).unwrap();
        assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
        assert!(ns.getattr(f).is_err() && ns.getattr(f + 1).is_err());
        assert_eq!(ns.getattr(ROOT_INO).unwrap().nlink, 2);
    }

    #[test]
    fn noreplace_fails_on_another_name_of_the_source() {
        // Linux: renameat2(RENAME_NOREPLACE) with an existing target is
        // EEXIST even when both names are links of one inode (checked
        // before plain rename's "do nothing" rule); the race test of two
        // mounts saw a mount answer Ok where a local file system says EEXIST.
        let (_d, ns) = ns();
        let none = HashSet::new();
        let a = ns.create(&alice(), ROOT_INO, "a", FileKind::Regular, 0o644, 0, true).unwrap().0;
        ns.link(&alice(), a.ino, ROOT_INO, "b").unwrap();
        let noreplace = fs_proto::meta::RenameFlags { noreplace: true, exchange: false };
        let e = ns.rename(&alice(), ROOT_INO, "a", ROOT_INO, "b", noreplace).unwrap_err();
        assert_eq!(e.code, ErrorCode::Exists);
        let res = ns
            .commit_bundle(
                &alice(),
                "pop1",
                &[op(BundleOp::Rename {
                    parent: ROOT_INO,
                    name: "a".into(),
                    new_parent: ROOT_INO,
                    new_name: "b".into(),
                    flags: noreplace,
                    ino: a.ino,
                })],
                &none,
            )
            .unwrap();
        assert_eq!(res[0].as_ref().unwrap_err().code, ErrorCode::Exists);
        // Without the flag: nothing happens, both names stay.
        ns.rename(&alice(), ROOT_INO, "a", ROOT_INO, "b", Default::default()).unwrap();
        assert_eq!(ns.lookup(&alice(), ROOT_INO, "a").unwrap().ino, a.ino);
        assert_eq!(ns.lookup(&alice(), ROOT_INO, "b").unwrap().nlink, 2);
    }

    #[test]
    fn leased_inodes_are_never_allocated_again() {
        let (_d, ns) = ns();
        let r = ns.lease_inodes("alice", 100).unwrap();
        let a = ns.create(&alice(), ROOT_INO, "plain", FileKind::Regular, 0o644, 0, true).unwrap().0;
        assert!(!r.contains(a.ino), "the allocator skips the leased range");
        assert!(ns.leased_to(r.first + 99, "alice").unwrap());
        assert!(!ns.leased_to(r.first + 99, "bob").unwrap());
        assert!(!ns.leased_to(r.first + 100, "alice").unwrap());
    }

    #[test]
    fn a_bundle_commits_every_entry_it_can_in_order() {
        let (_d, ns) = ns();
        let r = ns.lease_inodes("alice", 10).unwrap();
        let f = r.first;
        ns.create(&alice(), ROOT_INO, "taken", FileKind::Regular, 0o644, 0, true).unwrap();
        let entries = vec![
            entry(ROOT_INO, "d", f, FileKind::Directory, 0),
            entry(f, "a", f + 1, FileKind::Regular, 10),
            entry(f, "empty", f + 2, FileKind::Regular, 0),
            entry(ROOT_INO, "taken", f + 3, FileKind::Regular, 5),
            entry(f, "l", f + 4, FileKind::Symlink, 0),
            entry(f, "again", f + 1, FileKind::Regular, 0),
            entry(ROOT_INO, "stolen", 99_999, FileKind::Regular, 0),
        ];
        let res = ns.commit_bundle(&alice(), "pop1", &entries, &HashSet::new()).unwrap();
        assert_eq!(res.len(), 7);
        let dir = res[0].as_ref().unwrap();
        assert_eq!((dir.kind, dir.nlink, dir.uid), (FileKind::Directory, 2, 1000));
        let a = res[1].as_ref().unwrap();
        assert_eq!((a.size, a.gen, a.hash), (10, FIRST_GEN, Some([7; 32])));
        assert_eq!(a.mtime, Timestamp { secs: 1_000, nanos: 5 });
        assert_eq!(res[2].as_ref().unwrap().gen, 0, "an empty file has no replica");
        assert_eq!(res[3].as_ref().unwrap_err().code, ErrorCode::Exists);
        assert_eq!(res[4].as_ref().unwrap().size, 6);
        assert_eq!(res[5].as_ref().unwrap_err().code, ErrorCode::InvalidArgument, "an inode is used once");
        assert_eq!(res[6].as_ref().unwrap_err().code, ErrorCode::BadCapability);
        // What committed is there, with its replica; what failed is not.
        assert_eq!(ns.lookup(&alice(), f, "a").unwrap().ino, f + 1);
        let reps = ns.replicas(f + 1).unwrap();
        assert_eq!(reps.len(), 1);
        assert_eq!((reps[0].0.as_str(), reps[0].1.gen), ("pop1", FIRST_GEN));
        assert!(ns.replicas(f + 2).unwrap().is_empty());
        assert_eq!(ns.lookup(&alice(), ROOT_INO, "taken").unwrap().size, 0, "the old file is untouched");
        assert!(ns.getattr(f + 3).is_err());
        assert_eq!(ns.getattr(ROOT_INO).unwrap().nlink, 3);
    }

    #[test]
    fn a_retried_bundle_finds_its_own_commit() {
        let (_d, ns) = ns();
        let r = ns.lease_inodes("alice", 10).unwrap();
        let f = r.first;
        let entries = vec![
            entry(ROOT_INO, "d", f, FileKind::Directory, 0),
            entry(f, "a", f + 1, FileKind::Regular, 10),
            entry(f, "l", f + 2, FileKind::Symlink, 0),
        ];
        let none = HashSet::new();
        let first = ns.commit_bundle(&alice(), "pop1", &entries, &none).unwrap();
        let again = ns.commit_bundle(&alice(), "pop1", &entries, &none).unwrap();
        assert!(again.iter().all(|r| r.is_ok()), "{again:?}");
        assert_eq!(first.iter().map(|r| r.as_ref().unwrap().ino).collect::<Vec<_>>(), vec![f, f + 1, f + 2]);
        assert_eq!(ns.replicas(f + 1).unwrap().len(), 1, "the same replica, registered once");
        assert_eq!(ns.getattr(ROOT_INO).unwrap().nlink, 3, "the directory counted once");
        // A retry whose bytes differ is not the same commit.
        let mut other = entries[1].clone();
        other.hash = Some([9; 32]);
        let res = ns.commit_bundle(&alice(), "pop1", &[other], &none).unwrap();
        assert_eq!(res[0].as_ref().unwrap_err().code, ErrorCode::InvalidArgument);
        assert_eq!(ns.getattr(f + 1).unwrap().hash, Some([7; 32]));
    }

    #[test]
    fn entries_need_write_permission_on_their_directory() {
        let (_d, ns) = ns();
        let bob = Caller { name: "bob".into(), uid: 2000, gid: 2000, groups: vec![] };
        let private = ns.mkdir(&alice(), ROOT_INO, "private", 0o755).unwrap();
        let r = ns.lease_inodes("bob", 2).unwrap();
        let res = ns
            .commit_bundle(&bob, "pop1", &[entry(private.ino, "x", r.first, FileKind::Regular, 1)], &HashSet::new())
            .unwrap();
        assert_eq!(res[0].as_ref().unwrap_err().code, ErrorCode::PermissionDenied);
        let res = ns
            .commit_bundle(&bob, "pop1", &[entry(77_777, "x", r.first, FileKind::Regular, 1)], &HashSet::new())
            .unwrap();
        assert_eq!(res[0].as_ref().unwrap_err().code, ErrorCode::NotFound);
    }
}
