//! The FUSE mount (`renkei mount`): the federation as a local directory.
//!
//! [`mount`] connects as the certificate's user, resolves the remote
//! directory, starts the callback subscription, mounts through fuser and
//! serves until unmounted. Read [`fs::Inner`] first, then
//! [`filesystem::RenkeiFs`] (dispatch of FUSE requests onto tokio).
//!
//! # Consistency
//! Metadata (attributes, names, listings, symlink targets, xattrs) is cached
//! under leases and kept coherent by invalidations the meta server pushes
//! ([`subscription`], [`cache`]); a warm `stat` or `ls -l` sends nothing.
//! The kernel is told of invalidations too ([`notify`]) and caches at most
//! `attr_timeout` (1 s) on its own. A directory's listing is one
//! `ListDir` stream of pages carrying every child's attributes and xattr
//! names, so a cold `ls -l` sends no request per entry. Contents are
//! close-to-open: every open asks the meta server for the current
//! generation, unless it holds the file read ahead under a live lease (see
//! [`prefetch`]); writes are
//! committed as a new generation on flush (close), fsync, truncate and
//! unmount. Files of a listed directory read one after another are read
//! ahead in bundles, one `ReadMany` stream each ([`prefetch`]).
//!
//! # Identity
//! See [`idmap`]: by default the certificate's user appears as the local
//! user; `-o cred` passes each caller's ids (admin certificates only).
//!
//! # Failure bounds
//! A metadata call waits at most `call_timeout` (5 s) per try and is retried
//! until `timeout` (10 s, `-o timeout=`) from the start of the operation,
//! then fails with EIO; a read from a dead file server fails over to another
//! replica or re-asks the meta server; a commit of N bytes is bounded by
//! `timeout` + N / 4 MiB/s. While the meta server is unreachable, cached
//! metadata is served until the connection is declared dead (QUIC idle
//! timeout, 10 s), then nothing is cached until it is back; files already
//! open keep reading from file servers.
//!
//! # Layout
//! - [`options`]: `-o` options.
//! - [`idmap`]: id mapping and asserted credentials.
//! - [`inodes`]: FUSE <-> meta inode numbers.
//! - [`cache`], [`subscription`], [`notify`]: the lease-backed cache.
//! - [`remote`]: bounded, retried, counted metadata calls.
//! - [`entries`], [`dirs`], [`xattr`]: namespace operations.
//! - [`files`], [`io`], [`reader`], [`dirty`], [`commit`], [`upload`]: file
//!   contents.
//! - [`prefetch`]: read-ahead through directories, in bundles.
//! - [`bundler`]: small-file bundling under directory write leases.

pub mod bundler;
pub mod cache;
pub mod commit;
pub mod dirs;
pub mod dirty;
pub mod entries;
pub mod files;
pub mod filesystem;
pub mod fs;
pub mod idmap;
pub mod inodes;
pub mod io;
pub mod locks;
pub mod notify;
pub mod options;
pub mod prefetch;
pub mod reader;
pub mod remote;
pub mod subscription;
pub mod upload;
pub mod xattr;

pub use options::{IdMapMode, MountOptions};

use crate::config::ClientConfig;
use crate::counters::Counters;
use crate::error::ClientError;
use fs_proto::endpoint::{client_endpoint, TlsIdentity};
use fs_proto::meta::{MetaRequest, MetaResponse};
use fs_proto::rpc::Dialer;
use fs_proto::FileKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long mounting waits for the callback subscription before resolving
/// the remote directory (so that its attributes are cached).
const LIVE_AT_MOUNT: Duration = Duration::from_secs(3);

/// A live mount.
pub struct Mounted {
    inner: Arc<fs::Inner>,
    session: Option<fuser::BackgroundSession>,
    subscription: tokio::task::JoinHandle<()>,
}

impl Mounted {
    /// Requests sent so far, per kind.
    pub fn counters(&self) -> Arc<Counters> {
        self.inner.counters.clone()
    }

    /// Serve until `shutdown` completes (then unmount) or someone unmounts
    /// the mount point (`renkei umount`, `fusermount3 -u`).
    pub async fn serve(mut self, shutdown: impl std::future::Future<Output = ()>) -> Result<(), ClientError> {
        let Some(session) = self.session.take() else { return Ok(()) };
        let mut done = tokio::task::spawn_blocking(move || session.join());
        tokio::select! {
            r = &mut done => {
                // Unmounted from outside (`renkei umount`, `umount`).
                self.subscription.abort();
                self.close_connections().await;
                tracing::info!(requests = ?self.inner.counters.snapshot(), "unmounted");
                return r.map_err(|e| ClientError::Config(format!("FUSE session: {e}")))?
                    .map_err(|e| local(&self.inner.opts.mountpoint, e));
            }
            _ = shutdown => {}
        }
        tracing::info!("unmounting {}", self.inner.opts.mountpoint.display());
        unmount(&self.inner.opts.mountpoint).map_err(|e| local(&self.inner.opts.mountpoint, e))?;
        let r = tokio::time::timeout(Duration::from_secs(30), done).await;
        self.subscription.abort();
        self.close_connections().await;
        tracing::info!(requests = ?self.inner.counters.snapshot(), "unmounted");
        match r {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(local(&self.inner.opts.mountpoint, e)),
            Ok(Err(e)) => Err(ClientError::Config(format!("FUSE session: {e}"))),
            Err(_) => Err(ClientError::Config("FUSE session did not end within 30 s of unmounting".into())),
        }
    }
}

impl Mounted {
    /// Close every connection now that everything is committed, so the
    /// meta server ends this mount's callback session (and the directory
    /// leases it held) at once rather than after the idle timeout.
    async fn close_connections(&self) {
        self.inner.remote.dialer().close_all(Duration::from_secs(1)).await;
    }
}

/// Unmount a FUSE mount point: `fusermount3 -u` (works for the mounting
/// user and root), else, as root, a lazy unmount.
pub fn unmount(mp: &std::path::Path) -> std::io::Result<()> {
    let out = std::process::Command::new("fusermount3").arg("-u").arg(mp).output();
    if let Ok(o) = &out {
        if o.status.success() {
            return Ok(());
        }
    }
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(mp.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let why = match out {
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
        Err(e) => format!("cannot run fusermount3: {e}"),
    };
    Err(std::io::Error::other(format!("unmounting {}: {why}", mp.display())))
}

fn local(p: &std::path::Path, e: std::io::Error) -> ClientError {
    ClientError::Local { path: p.to_path_buf(), source: e }
}

/// Connect, resolve the remote directory and mount it; the mount is live
/// when this returns.
pub async fn mount(config: ClientConfig, opts: MountOptions) -> Result<Mounted, ClientError> {
    let tls = TlsIdentity::load(&config.tls)?;
    let bind: SocketAddr = if config.meta.first().addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
        .parse()
        .map_err(|e| ClientError::Config(format!("{e}")))?;
    let endpoint = client_endpoint(bind, &tls, &config.transport)?;
    mount_on(config, opts, endpoint).await
}

/// [`mount`] over an endpoint made by the caller (e.g. one whose socket
/// lives in another network namespace, as the WAN test bed's sites do).
pub async fn mount_on(
    config: ClientConfig,
    opts: MountOptions,
    endpoint: quinn::Endpoint,
) -> Result<Mounted, ClientError> {
    let dialer = Dialer::new(endpoint, opts.call_timeout.min(Duration::from_secs(3)));
    let counters = Arc::new(Counters::default());
    let cache = Arc::new(cache::Cache::default());
    let remote = remote::Remote::new(dialer, &config.meta, config.site.clone(), counters.clone(), cache.clone(), &opts);

    let me = match remote.call(None, MetaRequest::WhoAmI).await?.0 {
        MetaResponse::WhoAmI(w) => w,
        other => return Err(ClientError::Unexpected(format!("{other:?}"))),
    };
    if opts.cred && !me.admin {
        return Err(ClientError::Config(format!(
            "-o cred needs an admin certificate; {:?} is not an admin user of this federation",
            me.name
        )));
    }
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let idmap = idmap::IdMap::new(opts.idmap, opts.cred, uid, gid, &me);
    let (notes, pending_notes) = notify::channel();
    let bundling = opts.bundle && !opts.cred && !opts.read_only;
    let prefetch = Arc::new(prefetch::Prefetch::default());
    let bundler = bundler::Bundler::new(
        bundling,
        bundler::User { uid: me.uid, gid: me.gid, groups: me.groups.clone(), admin: me.uid == 0 },
        config.site.clone(),
        remote.clone(),
        counters.clone(),
        cache.clone(),
        prefetch.clone(),
        notes.clone(),
    );
    remote.set_bundler(&bundler);
    bundler.start();
    let subscription = tokio::spawn(subscription::run(
        remote.clone(),
        cache.clone(),
        notes.clone(),
        counters.clone(),
        bundler.clone(),
        prefetch.clone(),
    ));
    // With the subscription live, the remote directory's attributes are
    // leased and cached, so the kernel's first look at the mount root
    // sends nothing (one round trip less for a first `ls` across a WAN).
    // A subscription that is slow to come only means nothing is cached yet.
    cache.wait_live(LIVE_AT_MOUNT).await;
    let dir = crate::path::normalize(&opts.remote_dir);
    let root = match remote.call(None, MetaRequest::Resolve { path: dir.clone() }).await {
        Ok((MetaResponse::Attr(a), t)) if a.kind == FileKind::Directory => {
            cache.put_attr(t, &a);
            a
        }
        Ok((MetaResponse::Attr(_), _)) => {
            subscription.abort();
            return Err(ClientError::Config(format!("{dir} is not a directory")));
        }
        Ok((other, _)) => {
            subscription.abort();
            return Err(ClientError::Unexpected(format!("{other:?}")));
        }
        Err(e) => {
            subscription.abort();
            return Err(e);
        }
    };
    let inodes = inodes::Inodes::new(root.ino);

    let inner = Arc::new(fs::Inner {
        remote,
        cache,
        files: Default::default(),
        dirs: Default::default(),
        inodes,
        idmap,
        site: config.site.clone(),
        counters,
        notes,
        page_gens: Default::default(),
        rt: tokio::runtime::Handle::current(),
        opts: opts.clone(),
        bundler,
        prefetch,
        locks: Default::default(),
    });
    let mut fcfg = fuser::Config::default();
    fcfg.mount_options = vec![
        fuser::MountOption::FSName(opts.fsname.clone()),
        fuser::MountOption::Subtype("renkei".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoDev,
        if opts.read_only { fuser::MountOption::RO } else { fuser::MountOption::RW },
    ];
    fcfg.acl = if opts.allow_other { fuser::SessionACL::All } else { fuser::SessionACL::Owner };
    let fsys = filesystem::RenkeiFs(inner.clone());
    let mp = opts.mountpoint.clone();
    let session = tokio::task::spawn_blocking(move || fuser::Session::new(fsys, &mp, &fcfg))
        .await
        .map_err(|e| ClientError::Config(format!("mount thread: {e}")))?;
    let session = match session {
        Ok(s) => s,
        Err(e) => {
            subscription.abort();
            return Err(local(&opts.mountpoint, e));
        }
    };
    pending_notes.start(session.notifier(), inodes).map_err(|e| local(&opts.mountpoint, e))?;
    let session = session.spawn().map_err(|e| local(&opts.mountpoint, e))?;
    tracing::info!(remote = %dir, mountpoint = %opts.mountpoint.display(), user = %me.name, "mounted");
    Ok(Mounted { inner, session: Some(session), subscription })
}
