//! Namespace operations of the mount: lookup, attributes, directories,
//! links, removal and rename, answered from the cache when it holds them.
//!
//! After a change it made itself, the mount forgets what the change touched
//! (the meta server does not call a session back for its own requests).

use super::fs::{errno, unexpected, Inner, Op};
use fs_proto::meta::{MetaRequest, MetaResponse, RenameFlags};
use fs_proto::{Attr, Cred, DirEntry, ErrorCode, FileKind, Ino};
use fuser::Errno;
use std::sync::Arc;
use std::time::Duration;

/// Names under which files removed while open live until their last close
/// (never listed or looked up through the mount).
pub const HIDDEN_PREFIX: &str = ".renkei-unlinked.";

/// Attributes fetched per batch when refreshing a cached listing.
const ATTR_BATCH: usize = 4096;

impl Inner {
    /// Look up `name` in `parent`.
    pub async fn lookup(&self, cred: Option<&Cred>, parent: Ino, name: &str) -> Op<(Attr, Duration)> {
        if name.starts_with(HIDDEN_PREFIX) {
            return Err(Errno::ENOENT);
        }
        if let Some(r) = self.local_lookup(cred, parent, name).await {
            return r;
        }
        if let Some((known, left)) = self.cache.name(parent, name) {
            match known {
                None => return Err(Errno::ENOENT),
                Some(ino) => {
                    if let Some((a, left2)) = self.cache.attr(ino) {
                        return Ok((self.overlay(a).await, self.ttl(Some(left.min(left2)))));
                    }
                }
            }
        }
        // With the xattr names: the probes that follow a lookup are local.
        let req = MetaRequest::LookupPlus { parent, name: name.to_string() };
        match self.remote.call_t(cred, req).await {
            (Ok(MetaResponse::Entry(DirEntry { attr: Some(a), xattrs, .. })), t) => {
                self.cache.put_name(t, parent, name, Some(a.ino));
                self.cache.put_attr(t, &a);
                if let Some(names) = xattrs {
                    self.cache.put_xattr_list(t, a.ino, &names);
                }
                Ok((self.overlay(a).await, self.ttl_of(t)))
            }
            (Ok(other), _) => Err(unexpected(other)),
            (Err(e), t) => {
                if e.code() == Some(ErrorCode::NotFound) {
                    self.cache.put_name(t, parent, name, None);
                }
                Err(errno(&e))
            }
        }
    }

    /// Forget what creating `name` in `parent` changed.
    fn created(&self, parent: Ino, name: &str, a: &Attr, t: Option<super::cache::Ticket>) {
        self.cache.forget_attr(parent);
        self.cache.put_created(t, parent, name, a);
    }

    /// Create a non-directory node.
    #[allow(clippy::too_many_arguments)]
    pub async fn mknod(
        &self,
        cred: Option<&Cred>,
        parent: Ino,
        name: &str,
        mode: u32,
        rdev: u32,
        exclusive: bool,
    ) -> Op<(Attr, Duration)> {
        let kind = match mode & libc::S_IFMT {
            libc::S_IFREG | 0 => FileKind::Regular,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            _ => return Err(Errno::EINVAL),
        };
        let req = MetaRequest::Create { parent, name: name.to_string(), kind, perm: mode & 0o7777, rdev, exclusive };
        let (a, t) = self.call_attr(cred, req).await?;
        self.created(parent, name, &a, t);
        Ok((a, self.ttl_of(t)))
    }

    /// Create a directory.
    pub async fn mkdir(&self, cred: Option<&Cred>, parent: Ino, name: &str, mode: u32) -> Op<(Attr, Duration)> {
        if let Some(r) = self.local_mkdir(cred, parent, name, mode).await {
            return r;
        }
        let req = MetaRequest::Mkdir { parent, name: name.to_string(), perm: mode & 0o7777 };
        let (a, t) = self.call_attr(cred, req).await?;
        self.created(parent, name, &a, t);
        Ok((a, self.ttl_of(t)))
    }

    /// Create a symlink.
    pub async fn symlink(&self, cred: Option<&Cred>, parent: Ino, name: &str, target: &str) -> Op<(Attr, Duration)> {
        if let Some(r) = self.local_symlink(cred, parent, name, target).await {
            return r;
        }
        let req = MetaRequest::Symlink { parent, name: name.to_string(), target: target.to_string() };
        let (a, t) = self.call_attr(cred, req).await?;
        self.created(parent, name, &a, t);
        self.cache.put_link(t, a.ino, target);
        Ok((a, self.ttl_of(t)))
    }

    /// Create a hard link.
    pub async fn link(&self, cred: Option<&Cred>, ino: Ino, parent: Ino, name: &str) -> Op<(Attr, Duration)> {
        if let Some(r) = self.wb_link(cred, ino, parent, name).await {
            return r;
        }
        let req = MetaRequest::Link { ino, new_parent: parent, new_name: name.to_string() };
        let (a, t) = self.call_attr(cred, req).await?;
        self.cache.forget_attr(ino);
        self.created(parent, name, &a, t);
        Ok((self.overlay(a).await, self.ttl_of(t)))
    }

    /// What a removed or replaced name pointed to is changed too.
    fn forget_target(&self, parent: Ino, name: &str) {
        match self.cache.name(parent, name) {
            Some((Some(ino), _)) => self.cache.forget_attr(ino),
            Some((None, _)) => {}
            None => self.cache.forget_multilinked(),
        }
        self.cache.forget_entry(parent, name);
    }

    /// A file open on this mount whose last name is removed lives on under
    /// a hidden name until its last close (as NFS clients do), so the open
    /// descriptors keep reading and writing it; it shows a link count of 0.
    async fn hide_if_open(&self, cred: Option<&Cred>, parent: Ino, name: &str) -> Op<bool> {
        let Ok((a, _)) = self.lookup(cred, parent, name).await else { return Ok(false) };
        let Some(f) = self.files.file(a.ino) else { return Ok(false) };
        if a.kind != FileKind::Regular || a.nlink > 1 {
            return Ok(false);
        }
        let hidden = format!("{HIDDEN_PREFIX}{:x}.{:x}", a.ino, std::process::id());
        let flags = RenameFlags { noreplace: true, exchange: false };
        self.rename(cred, (parent, name), (parent, &hidden), flags).await?;
        f.state.lock().await.hidden = Some((parent, hidden));
        self.cache.forget_attr(a.ino);
        Ok(true)
    }

    /// Remove a name (`dir`: a directory).
    pub async fn remove(&self, cred: Option<&Cred>, parent: Ino, name: &str, dir: bool) -> Op<()> {
        if let Some(r) = self.local_remove(parent, name, dir).await {
            return r;
        }
        if let Some(r) = self.wb_remove(cred, parent, name, dir).await {
            return r;
        }
        if !dir && self.hide_if_open(cred, parent, name).await? {
            return Ok(());
        }
        let req = if dir {
            MetaRequest::Rmdir { parent, name: name.to_string() }
        } else {
            MetaRequest::Unlink { parent, name: name.to_string() }
        };
        let r = self.call(cred, req).await;
        self.forget_target(parent, name);
        self.cache.forget_attr(parent);
        match r? {
            (MetaResponse::Done, _) => Ok(()),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Rename.
    pub async fn rename(&self, cred: Option<&Cred>, from: (Ino, &str), to: (Ino, &str), flags: RenameFlags) -> Op<()> {
        if let Some(r) = self.wb_rename(cred, from, to, flags).await {
            return r;
        }
        let req = MetaRequest::Rename {
            parent: from.0,
            name: from.1.to_string(),
            new_parent: to.0,
            new_name: to.1.to_string(),
            flags,
        };
        let r = self.call(cred, req).await;
        self.forget_target(from.0, from.1);
        self.forget_target(to.0, to.1);
        self.cache.forget_attr(from.0);
        self.cache.forget_attr(to.0);
        match r? {
            (MetaResponse::Done, _) => Ok(()),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Target of a symlink.
    pub async fn readlink(&self, cred: Option<&Cred>, ino: Ino) -> Op<String> {
        if let Some((t, _)) = self.cache.link(ino) {
            return Ok(t);
        }
        match self.call(cred, MetaRequest::ReadLink { ino }).await? {
            (MetaResponse::Target(s), t) => {
                self.cache.put_link(t, ino, &s);
                Ok(s)
            }
            (other, _) => Err(unexpected(other)),
        }
    }

    /// The whole listing of a directory, with every entry's attributes.
    pub async fn listing(&self, cred: Option<&Cred>, dir: Ino) -> Op<Arc<Vec<DirEntry>>> {
        if let Some(r) = self.local_listing(cred, dir).await {
            return r;
        }
        if let Some((entries, _)) = self.cache.listing(dir) {
            if let Some(full) = self.with_attrs(cred, &entries).await? {
                self.prefetch.listed(dir, &full);
                return Ok(Arc::new(full));
            }
        }
        let (out, ticket) = self.remote.list_dir(cred, dir).await.map_err(|e| errno(&e))?;
        self.cache.put_listing(ticket, dir, &out);
        self.prefetch.listed(dir, &out);
        Ok(Arc::new(out))
    }

    /// Fill in attributes of a cached listing from the cache, fetching the
    /// missing ones in one batch. None if the batch failed partly.
    async fn with_attrs(&self, cred: Option<&Cred>, entries: &[DirEntry]) -> Op<Option<Vec<DirEntry>>> {
        let mut out = Vec::with_capacity(entries.len());
        let mut missing = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let attr = self.cache.attr(e.ino).map(|(a, _)| a);
            if attr.is_none() {
                missing.push(i);
            }
            out.push(DirEntry { attr, ..e.clone() });
        }
        for chunk in missing.chunks(ATTR_BATCH) {
            let reqs = chunk.iter().map(|&i| MetaRequest::GetAttr { ino: out[i].ino }).collect();
            let (replies, t) = match self.call(cred, MetaRequest::Batch(reqs)).await? {
                (MetaResponse::Batch(r), t) => (r, t),
                (other, _) => return Err(unexpected(other)),
            };
            for (&i, r) in chunk.iter().zip(replies) {
                match r {
                    Ok(MetaResponse::Attr(a)) => {
                        self.cache.put_attr(t, &a);
                        out[i].attr = Some(a);
                    }
                    _ => return Ok(None),
                }
            }
        }
        Ok(Some(out))
    }
}
