//! Write-back of the namespace operations other than creates: under the
//! write lease of the directories they change, unlink, rmdir, rename, link
//! and attribute changes (chmod, chown, utimens) are checked and answered
//! here, recorded as operations in the bundle pipeline after what they
//! depend on ([`crate::bundle::plan`]), and committed at the meta server in
//! the order they were made, each bundle atomically. Each hook returns
//! `None` when it cannot answer locally (no lease, a case the meta server
//! must decide: sticky directories, files open here, directories moved
//! between directories, sizes), and the ordinary path runs.
//!
//! Failure semantics: what the meta server refuses later (it should not,
//! the same checks ran here under the lease) is logged and reported at the
//! next fsync or close of what it concerns ([`super::state::LocalState::refused`]),
//! as CephFS does for its asynchronous unlinks; a mount killed before its
//! bundles committed leaves each directory as a prefix of what was done in
//! it.

use crate::bundle::plan::{Claim, Object};
use crate::mount::entries::HIDDEN_PREFIX;
use crate::mount::fs::{Inner, Op};
use crate::mount::io::AttrChange;
use fs_proto::bundle::BundleOp;
use fs_proto::meta::{MetaRequest, MetaResponse, RenameFlags, SetAttr, TimeSet};
use fs_proto::mode;
use fs_proto::{Attr, Cred, FileKind, Ino, Timestamp};
use fuser::{Errno, TimeOrNow};
use std::time::{Duration, Instant, SystemTime};

const S_ISVTX: u32 = 0o1000;

impl Inner {
    /// Whether operations are written back (bundling on, not `-o
    /// nowriteback`).
    fn writeback(&self, cred: Option<&Cred>) -> bool {
        self.bundler.enabled() && self.opts.writeback && cred.is_none()
    }

    /// What `name` in leased `dir` names: (inode, kind); None when `dir`
    /// is not leased here.
    fn named(&self, dir: Ino, name: &str) -> Option<Option<(Ino, FileKind)>> {
        self.bundler.with(|l| {
            let d = l.leased(dir)?;
            Some(d.names.get(name).copied())
        })
    }

    /// The attributes of `ino` as this mount knows them (its own changes
    /// first), fetched if it knows nothing.
    async fn known_attr(&self, ino: Ino) -> Option<Attr> {
        if let Some(a) = self.bundler.with(|l| l.attr_of(ino)) {
            return Some(a);
        }
        if let Some((a, _)) = self.cache.attr(ino) {
            return Some(a);
        }
        match self.call(None, MetaRequest::GetAttr { ino }).await {
            Ok((MetaResponse::Attr(a), t)) => {
                self.cache.put_attr(t, &a);
                Some(a)
            }
            _ => None,
        }
    }

    /// unlink(2) / rmdir(2) in a leased directory.
    pub async fn wb_remove(&self, cred: Option<&Cred>, parent: Ino, name: &str, dir: bool) -> Option<Op<()>> {
        if !self.writeback(cred) || name.starts_with(HIDDEN_PREFIX) || !self.ensure_lease_walking(parent).await {
            return None;
        }
        let (ino, kind) = match self.named(parent, name)? {
            None => return Some(Err(Errno::ENOENT)),
            Some(x) => x,
        };
        match (dir, kind == FileKind::Directory) {
            (true, false) => return Some(Err(Errno::ENOTDIR)),
            (false, true) => return Some(Err(Errno::EISDIR)),
            _ => {}
        }
        // A file open here lives on under a hidden name (the ordinary path);
        // a sticky directory's rule needs the owners (the meta server's).
        if !dir && self.files.file(ino).is_some() {
            return None;
        }
        let pattr = self.known_attr(parent).await?;
        if pattr.perm & S_ISVTX != 0 {
            return None;
        }
        if dir {
            if !self.ensure_lease(ino).await {
                return None;
            }
            match self.bundler.with(|l| l.leased(ino).map(|d| d.names.is_empty())) {
                Some(true) => {}
                Some(false) => return Some(Err(Errno::ENOTEMPTY)),
                None => return None,
            }
        }
        let base = if dir { None } else { self.cache.attr(ino).map(|(a, _)| a) };
        let now = Timestamp::now();
        let recorded = self.bundler.with(|l| {
            // Still as seen (nothing changed while leases were taken).
            if l.leased(parent).and_then(|d| d.names.get(name)).map(|x| x.0) != Some(ino) {
                return false;
            }
            if l.forget(ino) {
                // Never sent: it never happened.
                if dir {
                    l.touch_dir(parent, now, -1);
                }
                return true;
            }
            l.freeze(ino);
            l.remove_name(parent, name);
            let mut claims = vec![Claim::exclusive(Object::Names(parent)), Claim::exclusive(Object::Ino(ino))];
            let op = if dir {
                claims.push(Claim::exclusive(Object::Names(ino)));
                l.dirs.remove(&ino);
                l.attrs.remove(&ino);
                BundleOp::Rmdir { parent, name: name.to_string(), ino }
            } else {
                let left = l.update_attr(ino, base.clone(), |a| {
                    a.nlink = a.nlink.saturating_sub(1);
                    a.ctime = now;
                });
                if left.is_some_and(|a| a.nlink == 0) {
                    l.attrs.remove(&ino);
                }
                BundleOp::Unlink { parent, name: name.to_string(), ino }
            };
            l.record(op, claims, Instant::now());
            l.touch_dir(parent, now, if dir { -1 } else { 0 });
            true
        });
        if !recorded {
            return None;
        }
        self.cache.forget_entry(parent, name);
        self.cache.forget_attr(ino);
        self.bundler.kick();
        Some(Ok(()))
    }

    /// rename(2) between leased directories.
    pub async fn wb_rename(
        &self,
        cred: Option<&Cred>,
        from: (Ino, &str),
        to: (Ino, &str),
        flags: RenameFlags,
    ) -> Option<Op<()>> {
        let ((p, n), (q, m)) = (from, to);
        if !self.writeback(cred) || flags.exchange || n.starts_with(HIDDEN_PREFIX) || m.starts_with(HIDDEN_PREFIX) {
            return None;
        }
        // Both leases or neither: one taken only to be given back at once
        // (the rename then goes through the meta server) starts its cooldown
        // again, and two directories recalled together would take turns for
        // ever, never both held (a mover between them never written back).
        if p != q && !(self.may_lease(p) && self.may_lease(q)) {
            return None;
        }
        if !self.ensure_lease(p).await || !self.ensure_lease(q).await {
            return None;
        }
        let (src, skind) = match self.named(p, n)? {
            None => return Some(Err(Errno::ENOENT)),
            Some(x) => x,
        };
        // A directory moving to another directory: the meta server checks
        // it does not go under itself.
        if skind == FileKind::Directory && p != q {
            return None;
        }
        let dst = self.named(q, m)?;
        if let Some((d, dkind)) = dst {
            // Before the same-inode rule, as Linux (and the meta server) do.
            if flags.noreplace {
                return Some(Err(Errno::EEXIST));
            }
            if d == src {
                return Some(Ok(()));
            }
            match (skind == FileKind::Directory, dkind == FileKind::Directory) {
                (true, false) => return Some(Err(Errno::ENOTDIR)),
                (false, true) => return Some(Err(Errno::EISDIR)),
                (true, true) => {
                    if !self.ensure_lease(d).await {
                        return None;
                    }
                    if self.bundler.with(|l| l.leased(d).map(|x| x.names.is_empty())) != Some(true) {
                        return Some(Err(Errno::ENOTEMPTY));
                    }
                }
                (false, false) if self.files.file(d).is_some() => return None,
                (false, false) => {}
            }
        }
        for dir in [p, q] {
            if self.known_attr(dir).await?.perm & S_ISVTX != 0 {
                return None;
            }
        }
        let dbase = dst.and_then(|(d, _)| self.cache.attr(d).map(|(a, _)| a));
        let now = Timestamp::now();
        let recorded = self.bundler.with(|l| {
            // Still as seen (nothing changed while leases were taken).
            if l.leased(p).and_then(|d| d.names.get(n)).map(|x| x.0) != Some(src)
                || l.leased(q).and_then(|d| d.names.get(m)).map(|x| x.0) != dst.map(|x| x.0)
            {
                return false;
            }
            let links = if skind == FileKind::Directory && p != q { 1 } else { 0 };
            // Folded into its creation, the rename would take effect where
            // the creation stands: not if the new name was used since.
            let fold = dst.is_none() && l.foldable(src) && !l.planner.claimed_after(src, Object::Names(q));
            if !fold && (l.is_open_node(src) || dst.is_some_and(|(d, _)| l.is_open_node(d))) {
                // Its creation is not even queued: the ordinary path commits
                // it first.
                return false;
            }
            if fold {
                // Not sent yet: it is created under its new name.
                l.remove_name(p, n);
                l.insert_name(q, m, src, skind);
                l.planner.claim_more(src, &crate::bundle::plan::create_claims(q, src));
            } else {
                l.freeze(src);
                let mut claims = vec![
                    Claim::exclusive(Object::Names(p)),
                    Claim::exclusive(Object::Names(q)),
                    Claim::exclusive(Object::Ino(src)),
                ];
                if let Some((d, dkind)) = dst {
                    claims.push(Claim::exclusive(Object::Ino(d)));
                    l.remove_name(q, m);
                    if dkind == FileKind::Directory {
                        l.dirs.remove(&d);
                        l.attrs.remove(&d);
                    } else if !l.forget(d) {
                        let left = l.update_attr(d, dbase.clone(), |a| {
                            a.nlink = a.nlink.saturating_sub(1);
                            a.ctime = now;
                        });
                        if left.is_some_and(|a| a.nlink == 0) {
                            l.attrs.remove(&d);
                        }
                    }
                }
                l.remove_name(p, n);
                l.insert_name(q, m, src, skind);
                let op = BundleOp::Rename {
                    parent: p,
                    name: n.to_string(),
                    new_parent: q,
                    new_name: m.to_string(),
                    flags,
                    ino: src,
                };
                l.record(op, claims, Instant::now());
            }
            l.touch_dir(p, now, -links);
            if q != p {
                l.touch_dir(q, now, links);
            }
            true
        });
        if !recorded {
            return None;
        }
        for (d, x) in [(p, n), (q, m)] {
            self.cache.forget_entry(d, x);
        }
        if let Some((d, _)) = dst {
            self.cache.forget_attr(d);
        }
        self.bundler.kick();
        Some(Ok(()))
    }

    /// link(2) into a leased directory.
    pub async fn wb_link(
        &self,
        cred: Option<&Cred>,
        ino: Ino,
        parent: Ino,
        name: &str,
    ) -> Option<Op<(Attr, Duration)>> {
        if !self.writeback(cred) || name.starts_with(HIDDEN_PREFIX) || !self.ensure_lease(parent).await {
            return None;
        }
        if self.named(parent, name)?.is_some() {
            return Some(Err(Errno::EEXIST));
        }
        let a = self.known_attr(ino).await?;
        // Hard links of someone else's file, and directories, are the meta
        // server's to refuse.
        if a.kind == FileKind::Directory || !self.bundler.user().owns(a.uid) {
            return None;
        }
        let now = Timestamp::now();
        let attr = self.bundler.with(|l| {
            if l.leased(parent)?.names.contains_key(name) || l.is_open_node(ino) {
                return None;
            }
            l.freeze(ino);
            l.insert_name(parent, name, ino, a.kind);
            let attr = l.update_attr(ino, Some(a.clone()), |x| {
                x.nlink += 1;
                x.ctime = now;
            })?;
            let claims = vec![Claim::exclusive(Object::Names(parent)), Claim::exclusive(Object::Ino(ino))];
            l.record(BundleOp::Link { ino, parent, name: name.to_string() }, claims, Instant::now());
            l.touch_dir(parent, now, 0);
            Some(attr)
        })?;
        self.cache.forget_entry(parent, name);
        self.cache.forget_attr(ino);
        self.bundler.kick();
        Some(Ok((self.overlay(attr).await, self.wb_ttl())))
    }

    fn wb_ttl(&self) -> Duration {
        if self.cache.is_live() {
            self.opts.kernel_ttl
        } else {
            Duration::ZERO
        }
    }

    /// chmod, chown and utimens of an inode a leased directory holds (or a
    /// leased directory itself), checked here as the meta server would.
    pub async fn wb_setattr(&self, cred: Option<&Cred>, ino: Ino, ch: &AttrChange) -> Option<Op<(Attr, Duration)>> {
        if !self.writeback(cred) || ch.size.is_some() {
            return None;
        }
        let hint = self.cache.parent_hint(ino);
        if self.bundler.with(|l| l.covering_hinted(ino, hint)).is_none() {
            // Not in a directory leased here yet (`chmod -R` on a fresh
            // mount): lease the directory it was listed in, as unlink does.
            let parent = hint?;
            if parent == ino || !self.ensure_lease_walking(parent).await {
                return None;
            }
            self.bundler.with(|l| l.covering_hinted(ino, hint))?;
        }
        let a = self.known_attr(ino).await?;
        let user = self.bundler.user().clone();
        let uid = ch.uid.map(|u| self.idmap.uid_to_fed(u));
        let gid = ch.gid.map(|g| self.idmap.gid_to_fed(g));
        // The meta server's rules (fs-meta perm and setattr), or its answer.
        let owner = user.owns(a.uid);
        if ch.mode.is_some() && !owner {
            return None;
        }
        if uid.is_some_and(|u| u != a.uid) && !user.admin {
            return None;
        }
        if gid.is_some_and(|g| g != a.gid && !(user.admin || (user.uid == a.uid && user.in_group(g)))) {
            return None;
        }
        if (uid.is_some() || gid.is_some()) && !owner {
            return None;
        }
        let explicit = |t: Option<TimeOrNow>| matches!(t, Some(TimeOrNow::SpecificTime(_)));
        if (explicit(ch.atime) || explicit(ch.mtime) || ch.atime.is_some() || ch.mtime.is_some()) && !owner {
            return None;
        }
        let now = SystemTime::now();
        let ts = |t: TimeOrNow| match t {
            TimeOrNow::Now => Timestamp::from_system(now),
            TimeOrNow::SpecificTime(s) => Timestamp::from_system(s),
        };
        let set = SetAttr {
            perm: ch.mode.map(|m| m & 0o7777),
            uid,
            gid,
            size: None,
            atime: ch.atime.map(|t| TimeSet::At(ts(t))),
            mtime: ch.mtime.map(|t| TimeSet::At(ts(t))),
            kill_priv: false,
        };
        if set == SetAttr::default() {
            return None;
        }
        let stamp = Timestamp::from_system(now);
        let attr = self.bundler.with(|l| {
            l.covering_hinted(ino, hint)?;
            if l.is_open_node(ino) {
                return None;
            }
            l.freeze(ino);
            let attr = l.update_attr(ino, Some(a.clone()), |x| {
                if let Some(p) = set.perm {
                    x.perm = mode::chmod(&user, x.kind, p, x.gid);
                }
                if set.uid.is_some() || set.gid.is_some() {
                    x.perm = mode::after_chown(x.kind, x.perm);
                    x.uid = set.uid.unwrap_or(x.uid);
                    x.gid = set.gid.unwrap_or(x.gid);
                }
                if let Some(TimeSet::At(t)) = set.atime {
                    x.atime = t;
                }
                if let Some(TimeSet::At(t)) = set.mtime {
                    x.mtime = t;
                }
                x.ctime = stamp;
            })?;
            l.record(
                BundleOp::SetAttr { ino, set: set.clone() },
                vec![Claim::exclusive(Object::Ino(ino))],
                Instant::now(),
            );
            Some(attr)
        })?;
        self.cache.forget_attr(ino);
        self.bundler.kick();
        Some(Ok((self.overlay(attr).await, self.wb_ttl())))
    }
}
