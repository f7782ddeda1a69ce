//! File contents through the mount: open (close-to-open: every open asks
//! the meta server for the current generation), streamed reads, writes into
//! the dirty state, commits on flush/fsync/close, truncation, and attribute
//! changes that must follow the data they describe.

use super::cache::Cache;
use super::commit;
use super::dirty::{Dirty, Piece};
use super::files::{FileState, OpenFile};
use super::fs::{errno, io_errno, unexpected, Inner, Op};
use super::prefetch::{self, Prefetch};
use super::remote::Remote;
use super::upload::Upload;
use crate::counters::Counters;
use crate::error::to_errno;
use fs_proto::meta::{MetaRequest, MetaResponse, ReadGrant, SetAttr, TimeSet};
use fs_proto::mode;
use fs_proto::{Attr, Cred, FileKind, Ino, Timestamp};
use fuser::{Errno, TimeOrNow};
use std::sync::Arc;
use std::time::Duration;

/// Changes a `setattr` asks for (FUSE ids, already local).
#[derive(Debug, Default, Clone)]
pub struct AttrChange {
    /// New mode bits.
    pub mode: Option<u32>,
    /// New local uid.
    pub uid: Option<u32>,
    /// New local gid.
    pub gid: Option<u32>,
    /// New size.
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<TimeOrNow>,
    /// New modification time.
    pub mtime: Option<TimeOrNow>,
    /// Asked by someone without CAP_FSETID (not root): a truncation clears
    /// set-user-id and set-group-id bits (see `Inner::kill_priv`).
    pub kill_priv: bool,
}

fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(s) => TimeSet::At(Timestamp::from_system(s)),
    }
}

impl Inner {
    /// Open `ino`: fetch its current attributes (and a read grant when
    /// reading) and register a handle. Returns (fh, keep kernel pages).
    pub async fn open(&self, cred: Option<&Cred>, ino: Ino, read: bool, write: bool) -> Op<(u64, bool)> {
        if let Some(r) = self.local_open(ino, write).await {
            return r;
        }
        let (attr, grant) = if read {
            let g = self.open_read(cred, ino, write).await?;
            (g.attr.clone(), Some(g))
        } else {
            match self.call(cred, MetaRequest::GetAttr { ino }).await? {
                (MetaResponse::Attr(a), t) => {
                    self.cache.put_attr(t, &a);
                    (a, None)
                }
                (other, _) => return Err(unexpected(other)),
            }
        };
        if attr.kind == FileKind::Directory {
            return Err(Errno::EISDIR);
        }
        let (fh, file) = self.files.open(ino, write);
        let mut st = file.state.lock().await;
        if st.dirty.is_none() {
            st.grant = grant;
            st.attr = Some(attr.clone());
        }
        let keep = st.dirty.is_some() || self.keep_pages(ino, attr.gen);
        Ok((fh, keep))
    }

    /// `OpenRead` of `ino`. For a small file of a listed directory opened
    /// only for reading, the grants of the next small files come in the same
    /// round trip (a `Batch`) and their bytes are fetched in one bundle
    /// (see [`super::prefetch`]).
    async fn open_read(&self, cred: Option<&Cred>, ino: Ino, write: bool) -> Op<ReadGrant> {
        let extra = if write || !self.opts.prefetch { Vec::new() } else { self.prefetch.candidates(ino) };
        if self.opts.open_lease && !write && cred.is_none() {
            // The lease on the attributes says nothing changed since the
            // body's grant was issued (see `MountOptions::open_lease`).
            let held = self.cache.attr(ino).and_then(|(a, _)| self.prefetch.grant(ino, a.gen, a.hash));
            if let Some(g) = held {
                if !extra.is_empty() {
                    let n = extra.len() as u64;
                    self.counters.add("data.prefetch_asked", n);
                    let counters = self.counters.clone();
                    let ahead = read_ahead(
                        self.remote.clone(),
                        self.cache.clone(),
                        self.prefetch.clone(),
                        self.counters.clone(),
                        extra,
                    );
                    self.spawn(async move {
                        ahead.await;
                        counters.add("data.prefetch_settled", n);
                    });
                }
                return Ok(g);
            }
        }
        if extra.is_empty() {
            return match self.call(cred, MetaRequest::OpenRead { ino }).await? {
                (MetaResponse::Read(g), t) => {
                    self.cache.put_attr(t, &g.attr);
                    Ok(g)
                }
                (other, _) => Err(unexpected(other)),
            };
        }
        let reqs = std::iter::once(ino).chain(extra).map(|ino| MetaRequest::OpenRead { ino }).collect();
        let (replies, t) = match self.call(cred, MetaRequest::Batch(reqs)).await? {
            (MetaResponse::Batch(r), t) => (r, t),
            (other, _) => return Err(unexpected(other)),
        };
        let mut grants = Vec::with_capacity(replies.len());
        for (i, r) in replies.into_iter().enumerate() {
            match r {
                Ok(MetaResponse::Read(g)) => {
                    self.cache.put_attr(t, &g.attr);
                    grants.push(g);
                }
                Ok(other) if i == 0 => return Err(unexpected(other)),
                Err(e) if i == 0 => return Err(Errno::from_i32(to_errno(e.code))),
                // Another file of the bundle: it is read the usual way.
                _ => {}
            }
        }
        let Some(own) = grants.first().cloned() else { return Err(Errno::EIO) };
        self.fetch_ahead(grants);
        Ok(own)
    }

    /// Start fetching the bodies of `grants` not held yet.
    fn fetch_ahead(&self, grants: Vec<ReadGrant>) {
        let wanted = self.prefetch.claim(grants);
        if !wanted.is_empty() {
            // Files asked for and settled (kept or failed): equal counts
            // mean no read-ahead is in flight (tests wait for that).
            let n = wanted.len() as u64;
            self.counters.add("data.prefetch_asked", n);
            let counters = self.counters.clone();
            let fetch =
                prefetch::fetch(self.prefetch.clone(), self.remote.dialer().clone(), self.counters.clone(), wanted);
            self.spawn(async move {
                fetch.await;
                counters.add("data.prefetch_settled", n);
            });
        }
    }

    /// Read through handle `fh`.
    pub async fn read(&self, cred: Option<&Cred>, fh: u64, offset: u64, len: u64) -> Op<Vec<u8>> {
        let h = self.files.handle(fh).ok_or(Errno::EBADF)?;
        let mut st = h.file.state.lock().await;
        if st.dirty.is_some() {
            return self.read_dirty(cred, &h.file, &mut st, &h.reader, offset, len).await;
        }
        if let Some(r) = self.local_read(h.file.ino, offset, len) {
            return r;
        }
        let grant = self.grant(cred, &h.file, &mut st).await?;
        drop(st);
        if let Some(body) = self.prefetch.body(&grant).await {
            let end = offset.saturating_add(len).min(body.len() as u64);
            return Ok(body.get(offset.min(end) as usize..end as usize).unwrap_or_default().to_vec());
        }
        let mut reader = h.reader.lock().await;
        match reader.read(self.remote.dialer(), &self.counters, &grant, offset, len).await {
            Ok(b) => Ok(b),
            Err(e) => {
                // The servers may have moved or the capability expired: ask
                // the meta server again once.
                tracing::debug!(ino = h.file.ino, "read failed, refreshing the grant: {e}");
                let mut st = h.file.state.lock().await;
                st.grant = None;
                let grant = self.grant(cred, &h.file, &mut st).await?;
                drop(st);
                *reader = Default::default();
                reader.read(self.remote.dialer(), &self.counters, &grant, offset, len).await.map_err(|e| errno(&e))
            }
        }
    }

    /// The read grant of the current generation (fetched if needed).
    async fn grant(&self, cred: Option<&Cred>, f: &OpenFile, st: &mut FileState) -> Op<fs_proto::meta::ReadGrant> {
        if let Some(g) = &st.grant {
            return Ok(g.clone());
        }
        match self.call(cred, MetaRequest::OpenRead { ino: f.ino }).await? {
            (MetaResponse::Read(g), _) => {
                st.grant = Some(g.clone());
                if st.dirty.is_none() {
                    st.attr = Some(g.attr.clone());
                }
                Ok(g)
            }
            (other, _) => Err(unexpected(other)),
        }
    }

    async fn read_dirty(
        &self,
        cred: Option<&Cred>,
        f: &OpenFile,
        st: &mut FileState,
        reader: &super::reader::SharedReader,
        offset: u64,
        len: u64,
    ) -> Op<Vec<u8>> {
        let plan = st.dirty.as_ref().map(|d| d.plan(offset, len)).unwrap_or_default();
        let mut out = Vec::with_capacity(len as usize);
        for piece in plan {
            match piece {
                Piece::Spill(a, b) => {
                    let d = st.dirty.as_ref().ok_or(Errno::EIO)?;
                    out.extend(d.read_spill(a, b - a).map_err(|e| io_errno(&e))?);
                }
                Piece::Zero(a, b) => out.resize(out.len() + (b - a) as usize, 0),
                Piece::Base(a, b) => {
                    let grant = self.grant(cred, f, st).await?;
                    let mut r = reader.lock().await;
                    let mut bytes =
                        r.read(self.remote.dialer(), &self.counters, &grant, a, b - a).await.map_err(|e| errno(&e))?;
                    // The base may have shrunk under us: the rest reads as zeros.
                    bytes.resize((b - a) as usize, 0);
                    out.extend(bytes);
                }
            }
        }
        Ok(out)
    }

    /// Dirty state of a file, created over its current size if needed.
    async fn dirty<'a>(&self, cred: Option<&Cred>, f: &OpenFile, st: &'a mut FileState) -> Op<&'a mut Dirty> {
        if st.dirty.is_none() {
            let size = match &st.attr {
                Some(a) => a.size,
                None => self.attr(cred, f.ino).await?.0.size,
            };
            st.dirty = Some(Dirty::new(&self.opts.spill_dir, size).map_err(|e| io_errno(&e))?);
        }
        st.dirty.as_mut().ok_or(Errno::EIO)
    }

    /// Write through handle `fh`; `kill_priv` when the writer is not root
    /// (see [`Self::kill_priv`]).
    pub async fn write(&self, cred: Option<&Cred>, fh: u64, offset: u64, data: &[u8], kill_priv: bool) -> Op<u32> {
        let h = self.files.handle(fh).ok_or(Errno::EBADF)?;
        if !h.write {
            return Err(Errno::EBADF);
        }
        let mut st = h.file.state.lock().await;
        if kill_priv && !st.privs_killed {
            self.kill_priv(h.file.ino, &mut st).await?;
        }
        self.dirty(cred, &h.file, &mut st).await?.write(offset, data).map_err(|e| io_errno(&e))?;
        let FileState { dirty: Some(d), upload, .. } = &mut *st else { return Err(Errno::EIO) };
        match upload.take() {
            Some(mut up) => match up.append(&self.counters, offset, data, d).await {
                Ok(()) => *upload = Some(up),
                Err(why) => {
                    self.counters.bump(why);
                    up.abort();
                }
            },
            None if Upload::wanted(d)
                && d.size == offset + data.len() as u64
                && self.bundler.stage(h.file.ino).is_none() =>
            {
                let cred = self.file_cred();
                match Upload::start(&self.remote, &self.counters, cred.as_ref(), &self.site, h.file.ino, d).await {
                    Ok(up) => *upload = Some(up),
                    Err(e) => {
                        self.counters.bump(super::upload::dropped::START);
                        tracing::debug!(ino = h.file.ino, "no write-behind: {e}");
                    }
                }
            }
            None => {}
        }
        Ok(data.len() as u32)
    }

    /// Commit the dirty data of `f`, if any.
    pub async fn commit_locked(&self, f: &OpenFile, st: &mut FileState) -> Op<()> {
        if let Some(r) = self.local_commit(f, st).await {
            return r;
        }
        let upload = st.upload.take();
        let Some(d) = st.dirty.as_ref() else {
            if let Some(up) = upload {
                up.abort();
            }
            return Ok(());
        };
        let cred = self.file_cred();
        // The server writes and hashes the whole new generation, holes and
        // kept base bytes included: bound by the size, not the dirty bytes.
        let bound = commit::bound(&self.remote, d.bytes().max(d.size));
        let work = async {
            if let Some(up) = upload {
                match up.finish(&self.counters, f.ino, d).await {
                    Some(Ok(c)) => return Ok(c),
                    Some(Err(e)) => {
                        self.counters.bump(super::upload::dropped::BROKE);
                        tracing::debug!(ino = f.ino, "write-behind failed, committing again: {e}");
                    }
                    None => self.counters.bump(super::upload::dropped::UNFINISHED),
                }
            }
            commit::commit(&self.remote, &self.counters, cred.as_ref(), &self.site, f.ino, d).await
        };
        let c = match tokio::time::timeout(bound, work).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::warn!(ino = f.ino, "commit failed: {e}");
                return Err(errno(&e));
            }
            Err(_) => {
                tracing::warn!(ino = f.ino, "commit did not finish within {bound:?}");
                return Err(Errno::EIO);
            }
        };
        let written = st.dirty.take().map(|d| fs_proto::Timestamp::from_system(d.mtime));
        st.grant = None;
        if let Some(a) = st.attr.as_mut() {
            a.size = c.size;
            a.gen = c.gen;
            a.hash = c.hash;
            if let Some(m) = written {
                a.mtime = a.mtime.max(m);
                a.ctime = a.ctime.max(m);
            }
        }
        self.cache.forget_attr(f.ino);
        self.keep_pages(f.ino, c.gen);
        if let Some((atime, mtime)) = st.pending_times.take() {
            let set = SetAttr { atime, mtime, ..Default::default() };
            let (a, t) = self.call_attr(cred.as_ref(), MetaRequest::SetAttr { ino: f.ino, set }).await?;
            self.cache.put_attr(t, &a);
            st.attr = Some(a);
        }
        Ok(())
    }

    /// Commit what was written through `fh` (flush, fsync).
    pub async fn flush(&self, fh: u64) -> Op<()> {
        let ino = self.files.handle(fh).map(|h| h.file.ino);
        if let Some(r) = self.local_flush(fh).await {
            return r.and(ino.map_or(Ok(()), |i| self.refused(i)));
        }
        let Some(h) = self.files.handle(fh) else { return Ok(()) };
        let mut st = h.file.state.lock().await;
        self.commit_locked(&h.file, &mut st).await.and(self.refused(h.file.ino))
    }

    /// Close `fh`; the last close of an inode commits what is left and
    /// removes it if it was unlinked while open.
    pub async fn release(&self, fh: u64) -> Op<()> {
        self.forget_handle(fh);
        if let Some(f) = self.files.close(fh) {
            let mut st = f.state.lock().await;
            let hidden = st.hidden.take();
            let mut r = if hidden.is_some() {
                st.dirty = None;
                if let Some(up) = st.upload.take() {
                    up.abort();
                }
                Ok(())
            } else {
                self.commit_locked(&f, &mut st).await
            };
            if let Some(perm) = st.final_perm.take() {
                let set = SetAttr { perm: Some(perm), ..Default::default() };
                let done = self.call(self.file_cred().as_ref(), MetaRequest::SetAttr { ino: f.ino, set }).await;
                self.cache.forget_attr(f.ino);
                r = r.and(done.map(|_| ()));
            }
            if let Some((parent, name)) = hidden {
                let cred = self.file_cred();
                let req = MetaRequest::Unlink { parent, name: name.clone() };
                if let Err(e) = self.call(cred.as_ref(), req).await {
                    tracing::warn!(ino = f.ino, "could not remove {name} (unlinked while open): {e:?}");
                }
                self.cache.forget_entry(parent, &name);
                self.cache.forget_attr(parent);
            }
            return r;
        }
        Ok(())
    }

    /// Commit every open file (at unmount).
    pub async fn commit_all(&self) {
        self.bundle_unmount().await;
        for f in self.files.all() {
            let mut st = f.state.lock().await;
            if let Err(e) = self.commit_locked(&f, &mut st).await {
                tracing::error!(ino = f.ino, "dirty data lost at unmount: {e:?}");
            }
        }
    }

    /// POSIX: a write or truncation by someone without CAP_FSETID clears
    /// the file's set-user-id bit, and its set-group-id bit when it is
    /// group executable. The kernel leaves this to the file system
    /// (`FUSE_HANDLE_KILLPRIV`): if the mode has such bits, they are cleared
    /// now (on a local entry, in its mode; else at the meta server), once
    /// per open file until its mode changes again.
    async fn kill_priv(&self, ino: Ino, st: &mut FileState) -> Op<()> {
        st.privs_killed = true;
        if self.bundler.with(|l| l.nodes.get_mut(&ino).map(|n| n.attr.perm = mode::kill_priv(n.attr.perm))).is_some() {
            return Ok(());
        }
        // (Not `self.attr`: its overlay takes the state lock we hold.)
        let perm = match (&st.attr, self.cache.attr(ino)) {
            (_, Some((a, _))) => a.perm,
            (Some(a), None) => a.perm,
            (None, None) => self.call_attr(self.file_cred().as_ref(), MetaRequest::GetAttr { ino }).await?.0.perm,
        };
        if mode::kill_priv(perm) == perm {
            return Ok(());
        }
        let set = SetAttr { kill_priv: true, ..Default::default() };
        let (a, t) = self.call_attr(self.file_cred().as_ref(), MetaRequest::SetAttr { ino, set }).await?;
        self.cache.put_attr(t, &a);
        if let Some(x) = st.attr.as_mut() {
            x.perm = a.perm;
        }
        Ok(())
    }

    /// Change the size of `ino`: of an open file, in its dirty state
    /// (committed with its other changes at close or fsync, close-to-open
    /// as any write); of a file not open here, now (a new generation, or
    /// empty).
    async fn truncate(&self, cred: Option<&Cred>, ino: Ino, size: u64) -> Op<()> {
        match self.files.file(ino) {
            Some(f) => {
                let mut st = f.state.lock().await;
                self.dirty(cred, &f, &mut st).await?.truncate(size).map_err(|e| io_errno(&e))?;
                if let Some(up) = st.upload.take() {
                    // Write-behind streams a file written in order; a
                    // truncation ends that.
                    self.counters.bump(super::upload::dropped::TRUNCATED);
                    up.abort();
                }
                // Its last handle may have been closed while we waited for
                // the state (truncate(2) of a file just closed, its release
                // in flight): then nobody else commits this.
                let still_open = self.files.file(ino).is_some_and(|g| Arc::ptr_eq(&g, &f));
                if !still_open {
                    return self.commit_locked(&f, &mut st).await;
                }
                Ok(())
            }
            None => {
                let current = self.attr(cred, ino).await?.0;
                if current.size == size && size != 0 {
                    return Ok(());
                }
                let f = OpenFile { ino, state: Default::default() };
                let mut st = FileState { attr: Some(current), ..Default::default() };
                self.dirty(cred, &f, &mut st).await?.truncate(size).map_err(|e| io_errno(&e))?;
                self.commit_locked(&f, &mut st).await
            }
        }
    }

    /// `setattr`: size first (with the data written before it), then the
    /// rest at the meta server.
    pub async fn setattr(&self, cred: Option<&Cred>, ino: Ino, ch: AttrChange) -> Op<(Attr, Duration)> {
        if let Some(r) = self.local_setattr(ino, &ch).await {
            return r;
        }
        if let Some(r) = self.wb_setattr(cred, ino, &ch).await {
            return r;
        }
        if let Some(size) = ch.size {
            if ch.kill_priv {
                match self.files.file(ino) {
                    Some(f) => {
                        let mut st = f.state.lock().await;
                        self.kill_priv(ino, &mut st).await?;
                    }
                    None => self.kill_priv(ino, &mut FileState::default()).await?,
                }
            }
            self.truncate(cred, ino, size).await?;
        } else if ch.atime.is_some() || ch.mtime.is_some() {
            // Times set while data is pending must not be overwritten by
            // the commit that follows. Times alone (what the kernel's
            // write-back cache sends while a file is being written) wait
            // for that commit, so a stream being written is not cut into
            // several generations; with other changes, commit first.
            if let Some(f) = self.files.file(ino) {
                let mut st = f.state.lock().await;
                let times_only = ch.mode.is_none() && ch.uid.is_none() && ch.gid.is_none();
                if times_only && st.dirty.is_some() {
                    let (atime, mtime) = st.pending_times.take().unwrap_or_default();
                    let atime = ch.atime.map(time_set).or(atime);
                    let mtime = ch.mtime.map(time_set).or(mtime);
                    if let (Some(d), Some(m)) = (st.dirty.as_mut(), ch.mtime) {
                        d.mtime = match m {
                            TimeOrNow::Now => std::time::SystemTime::now(),
                            TimeOrNow::SpecificTime(t) => t,
                        };
                    }
                    st.pending_times = Some((atime, mtime));
                    drop(st);
                    let a = self.attr(cred, ino).await?;
                    return Ok((self.overlay(a.0).await, a.1));
                }
                self.commit_locked(&f, &mut st).await?;
            }
        }
        let set = SetAttr {
            perm: ch.mode.map(|m| m & 0o7777),
            uid: ch.uid.map(|u| self.idmap.uid_to_fed(u)),
            gid: ch.gid.map(|g| self.idmap.gid_to_fed(g)),
            size: None,
            atime: ch.atime.map(time_set),
            mtime: ch.mtime.map(time_set),
            kill_priv: false,
        };
        self.cache.forget_attr(ino);
        if set.perm.is_some() {
            // An explicit chmod replaces a mode deferred at create, and may
            // set privilege bits a later write must clear again.
            if let Some(f) = self.files.file(ino) {
                let mut st = f.state.lock().await;
                st.final_perm = None;
                st.privs_killed = false;
            }
        }
        if set == SetAttr::default() {
            return self.attr(cred, ino).await;
        }
        let (a, t) = self.call_attr(cred, MetaRequest::SetAttr { ino, set }).await?;
        self.cache.put_attr(t, &a);
        // What this mount shows of it under a lease follows the meta server.
        self.bundler.with(|l| l.answered(&a));
        if let Some(f) = self.files.file(ino) {
            let mut st = f.state.lock().await;
            if st.dirty.is_none() {
                st.attr = Some(a.clone());
            }
        }
        Ok((self.overlay(a).await, self.ttl_of(t)))
    }
}

/// The read-ahead of an open that sent no request itself (a leased open):
/// ask grants for `inos` in one batch and fetch their bodies.
async fn read_ahead(remote: Remote, cache: Arc<Cache>, pf: Arc<Prefetch>, counters: Arc<Counters>, inos: Vec<Ino>) {
    let reqs = inos.into_iter().map(|ino| MetaRequest::OpenRead { ino }).collect();
    let (replies, t) = match remote.call(None, MetaRequest::Batch(reqs)).await {
        Ok((MetaResponse::Batch(r), t)) => (r, t),
        Ok(_) | Err(_) => return,
    };
    let mut grants = Vec::with_capacity(replies.len());
    for r in replies {
        if let Ok(MetaResponse::Read(g)) = r {
            cache.put_attr(t, &g.attr);
            grants.push(g);
        }
    }
    let wanted = pf.claim(grants);
    if !wanted.is_empty() {
        let dialer = remote.dialer().clone();
        prefetch::fetch(pf, dialer, counters, wanted).await;
    }
}
