//! The mounted file system's shared state ([`Inner`]) and the helpers every
//! operation uses: credentials, attribute conversion with the id map, cache
//! lookups with their kernel time-to-live, errno conversion and bounds.

use super::cache::{Cache, Ticket};
use super::files::Files;
use super::idmap::IdMap;
use super::inodes::Inodes;
use super::notify::KernelNotes;
use super::options::MountOptions;
use super::remote::Remote;
use crate::counters::Counters;
use crate::error::{to_errno, ClientError};
use fs_proto::meta::{MetaRequest, MetaResponse};
use fs_proto::{Attr, Cred, FileKind, Gen, Ino};
use fuser::{Errno, FileAttr, FileType, INodeNo};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Result of one operation.
pub type Op<T> = Result<T, Errno>;

/// Everything the operations share.
pub struct Inner {
    /// Metadata calls.
    pub remote: Remote,
    /// The lease-backed metadata cache.
    pub cache: Arc<Cache>,
    /// Open files.
    pub files: Files,
    /// Open directories: their listing snapshot.
    pub dirs: Mutex<HashMap<u64, Arc<Vec<super::dirs::DirItem>>>>,
    /// FUSE <-> meta inode numbers.
    pub inodes: Inodes,
    /// Id mapping and credentials.
    pub idmap: IdMap,
    /// Options.
    pub opts: MountOptions,
    /// Our site (writes go to a file server there).
    pub site: String,
    /// Requests sent, per kind.
    pub counters: Arc<Counters>,
    /// Invalidations for the kernel.
    pub notes: KernelNotes,
    /// Generation whose pages the kernel may keep cached, per inode.
    pub page_gens: Mutex<HashMap<Ino, Gen>>,
    /// The runtime operations run on.
    pub rt: tokio::runtime::Handle,
    /// Small-file bundling under directory write leases.
    pub bundler: Arc<super::bundler::Bundler>,
    /// Small files fetched in bundles on read.
    pub prefetch: Arc<super::prefetch::Prefetch>,
    /// Which lock owners hold locks through this mount, by file.
    pub locks: super::locks::Held,
}

/// The errno of a client error: remote codes through [`to_errno`], local
/// I/O as it is, anything else (unreachable, timed out, garbled) EIO.
pub fn errno(e: &ClientError) -> Errno {
    match (e.code(), e) {
        (Some(code), _) => Errno::from_i32(to_errno(code)),
        (None, ClientError::Local { source, .. }) => Errno::from_i32(source.raw_os_error().unwrap_or(libc::EIO)),
        _ => Errno::EIO,
    }
}

/// The errno of a local I/O error.
pub fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

/// The reply did not have the expected shape.
pub fn unexpected(r: MetaResponse) -> Errno {
    tracing::warn!("unexpected meta reply: {r:?}");
    Errno::EIO
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::Regular => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
    }
}

impl Inner {
    /// Run an operation: first on the FUSE thread that received it, until
    /// it would wait; only then on the runtime. Most operations under a
    /// lease never wait (they are answered from local state), and answering
    /// them here saves the two thread wake-ups of a hand-over (about half of
    /// a small request's time on loopback). An operation that waits is
    /// handed over as it stands: a future polled again with a new waker
    /// registers that one (the `Future` contract).
    pub fn spawn(&self, f: impl Future<Output = ()> + Send + 'static) {
        let _in_runtime = self.rt.enter();
        let mut f = Box::pin(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if f.as_mut().poll(&mut cx).is_pending() {
            self.rt.spawn(f);
        }
    }

    /// Bound an operation that talks to the network: a little more than
    /// the per-call retry bound, so the inner error wins when there is one.
    pub async fn bounded<T>(&self, f: impl Future<Output = Op<T>>) -> Op<T> {
        let bound = self.opts.timeout + self.opts.call_timeout;
        tokio::time::timeout(bound, f).await.unwrap_or(Err(Errno::EIO))
    }

    /// Like [`Self::bounded`], for work that must not stop half-way (it
    /// moved state into a commit that is still going): past the bound the
    /// caller gets EIO while the work goes on in the background, e.g. an
    /// fsync while the meta server is unreachable fails after the mount's
    /// timeout and what it covers is still committed once it is back.
    pub async fn bounded_detached<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl Future<Output = Op<T>> + Send + 'static,
    ) -> Op<T> {
        let bound = self.opts.timeout + self.opts.call_timeout;
        let mut work = self.rt.spawn(f);
        match tokio::time::timeout(bound, &mut work).await {
            Ok(done) => done.unwrap_or(Err(Errno::EIO)),
            Err(_) => {
                tracing::warn!("{what} still waiting after {bound:?}: EIO to the caller; the work goes on");
                Err(Errno::EIO)
            }
        }
    }

    /// Credentials for work on an open file (commits, truncation): the
    /// kernel checked permission when the file was opened (or, for
    /// truncate(2), before asking), and POSIX lets an open descriptor write
    /// whatever the file's mode says now; with `-o cred` the mount acts as
    /// root for it, otherwise as the certificate's user.
    pub fn file_cred(&self) -> Option<Cred> {
        self.opts.cred.then(|| Cred { uid: 0, gid: 0, groups: Vec::new() })
    }

    /// Credentials to assert for a FUSE request.
    pub fn cred(&self, req: &fuser::Request) -> Option<Cred> {
        self.idmap.cred_for(req.uid(), req.gid(), req.pid())
    }

    /// The kernel's time-to-live for something valid for `left`.
    pub fn ttl(&self, left: Option<Duration>) -> Duration {
        left.map(|l| l.min(self.opts.kernel_ttl)).unwrap_or(Duration::ZERO)
    }

    /// The TTL for something fetched under `t`.
    pub fn ttl_of(&self, t: Option<Ticket>) -> Duration {
        if t.is_some() && self.cache.is_live() {
            self.opts.kernel_ttl
        } else {
            Duration::ZERO
        }
    }

    /// FUSE attributes of `a`, as shown locally.
    pub fn file_attr(&self, a: &Attr) -> FileAttr {
        let t = |ts: fs_proto::Timestamp| ts.to_system();
        FileAttr {
            ino: INodeNo(self.inodes.to_fuse(a.ino)),
            size: a.size,
            blocks: a.size.div_ceil(512),
            atime: t(a.atime),
            mtime: t(a.mtime),
            ctime: t(a.ctime),
            crtime: t(a.crtime),
            kind: file_type(a.kind),
            perm: (a.perm & 0o7777) as u16,
            nlink: a.nlink,
            uid: self.idmap.uid_to_local(a.uid),
            gid: self.idmap.gid_to_local(a.gid),
            rdev: a.rdev,
            blksize: self.opts.max_io,
            flags: 0,
        }
    }

    /// Attributes with what this mount has written and not yet committed.
    /// A file being committed right now (its state is locked for the
    /// upload) is waited for: its size must never go back (an mmap reader
    /// past a size the kernel believed smaller gets SIGBUS). `a` may have
    /// been read before a commit this waited for: what the commit made (a
    /// newer generation in the open file's state) wins.
    pub async fn overlay(&self, mut a: Attr) -> Attr {
        if let Some(f) = self.files.file(a.ino) {
            let st = f.state.lock().await;
            if let Some(known) = st.attr.as_ref().filter(|k| k.gen > a.gen) {
                a.size = known.size;
                a.gen = known.gen;
                a.hash = known.hash;
                a.mtime = a.mtime.max(known.mtime);
                a.ctime = a.ctime.max(known.ctime);
            }
            if st.hidden.is_some() {
                a.nlink = a.nlink.saturating_sub(1);
            }
            if let Some(p) = st.final_perm {
                a.perm = p;
            }
            if let Some(d) = &st.dirty {
                a.size = d.size;
                let m = fs_proto::Timestamp::from_system(d.mtime);
                a.mtime = m;
                a.ctime = a.ctime.max(m);
            }
        }
        a
    }

    /// Attributes of `ino`: cached, else fetched; with their kernel TTL.
    pub async fn attr(&self, cred: Option<&Cred>, ino: Ino) -> Op<(Attr, Duration)> {
        // This mount may change the inode while a GetAttr is out (e.g.
        // commit a file): that answer may predate the change, and a size
        // that went back would make an mmap reader fault. Ask again, a few
        // times; an open file's own state corrects the last answer.
        for attempt in 0.. {
            if let Some(r) = self.local_attr(ino).await {
                return r;
            }
            if let Some((a, left)) = self.cache.attr(ino) {
                return Ok((self.overlay(a).await, self.ttl(Some(left))));
            }
            if self.remote.is_down() && !self.cache.is_live() {
                if let Some(a) = self.open_attr(ino).await {
                    return Ok((a, Duration::ZERO));
                }
            }
            let asked = std::time::Instant::now();
            let (r, t) = match self.remote.call(cred, MetaRequest::GetAttr { ino }).await {
                Ok(_) if attempt < 3 && self.cache.changed_since(ino, asked) => continue,
                Ok(r) => r,
                Err(e) if e.code().is_none() => {
                    // The meta server is unreachable: an open file still has
                    // the attributes it was opened (or last committed) with.
                    if let Some(a) = self.open_attr(ino).await {
                        return Ok((a, Duration::ZERO));
                    }
                    return Err(errno(&e));
                }
                Err(e) => return Err(errno(&e)),
            };
            return match r {
                MetaResponse::Attr(a) => {
                    self.cache.put_attr(t, &a);
                    Ok((self.overlay(a).await, self.ttl_of(t)))
                }
                other => Err(unexpected(other)),
            };
        }
        unreachable!("the loop returns")
    }

    /// The attributes an open file was opened (or last committed) with.
    async fn open_attr(&self, ino: Ino) -> Option<Attr> {
        let f = self.files.file(ino)?;
        let a = f.state.lock().await.attr.clone()?;
        Some(self.overlay(a).await)
    }

    /// Send a request, mapping errors to errno.
    pub async fn call(&self, cred: Option<&Cred>, req: MetaRequest) -> Op<(MetaResponse, Option<Ticket>)> {
        self.remote.call(cred, req).await.map_err(|e| errno(&e))
    }

    /// Send a request that answers with attributes.
    pub async fn call_attr(&self, cred: Option<&Cred>, req: MetaRequest) -> Op<(Attr, Option<Ticket>)> {
        match self.call(cred, req).await? {
            (MetaResponse::Attr(a), t) => Ok((a, t)),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// A name as a UTF-8 string (the namespace stores UTF-8 names).
    pub fn name(name: &std::ffi::OsStr) -> Op<String> {
        let s = name.to_str().ok_or(Errno::EINVAL)?;
        if s.len() > fs_proto::MAX_NAME {
            return Err(Errno::ENAMETOOLONG);
        }
        Ok(s.to_string())
    }

    /// A symlink target as a UTF-8 string: only a string, so its components
    /// may be of any length; the whole must be shorter than PATH_MAX.
    pub fn link_target(target: &std::ffi::OsStr) -> Op<String> {
        let s = target.to_str().ok_or(Errno::EINVAL)?;
        if s.len() > fs_proto::MAX_TARGET {
            return Err(Errno::ENAMETOOLONG);
        }
        Ok(s.to_string())
    }

    /// Whether the kernel may keep its cached pages of `ino` at `gen`.
    pub fn keep_pages(&self, ino: Ino, gen: Gen) -> bool {
        let mut m = self.page_gens.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(ino, gen) == Some(gen)
    }

    /// Now, for local time stamps.
    pub fn now() -> SystemTime {
        SystemTime::now()
    }
}
