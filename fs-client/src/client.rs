//! [`Client`]: the federation as a user sees it, by path: stat, list,
//! mkdir, put, get (recursive too), remove, rename, chmod, links,
//! xattrs, where, dropping a replica, df, hosts.

use crate::config::ClientConfig;
use crate::counters::Counters;
use crate::data::{DataPlane, OnBytes};
use crate::error::ClientError;
use crate::meta_client::MetaClient;
use crate::path;
use fs_proto::endpoint::{client_endpoint, TlsIdentity};
use fs_proto::meta::{MetaRequest, MetaResponse, RenameFlags, SetAttr, StatFs, XattrFlags};
use fs_proto::rpc::Dialer;
use fs_proto::{Attr, DirEntry, ErrorCode, FileKind, HostInfo, Identity, ReplicaInfo, ROOT_INO};
use futures::stream::{self, StreamExt, TryStreamExt};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

type Result<T> = std::result::Result<T, ClientError>;

/// A connected client.
#[derive(Clone)]
pub struct Client {
    config: Arc<ClientConfig>,
    meta: MetaClient,
    data: DataPlane,
    counters: Arc<Counters>,
    identity: Identity,
}

/// One file of a recursive transfer.
#[derive(Debug, Clone)]
struct FileJob {
    local: PathBuf,
    remote: String,
    size: u64,
}

impl Client {
    /// Connect with a configuration (the connection to the meta server is
    /// made on first use).
    pub async fn connect(config: ClientConfig) -> Result<Self> {
        let tls = TlsIdentity::load(&config.tls)?;
        let bind: SocketAddr = if config.meta.first().addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
            .parse()
            .map_err(|e| ClientError::Config(format!("{e}")))?;
        let endpoint = client_endpoint(bind, &tls, &config.transport)?;
        Ok(Self::with_endpoint(config, tls.identity, endpoint))
    }

    /// Build on an existing endpoint (whose client config carries our identity).
    pub fn with_endpoint(config: ClientConfig, identity: Identity, endpoint: quinn::Endpoint) -> Self {
        let counters = Arc::new(Counters::default());
        let dialer = Dialer::new(endpoint, Duration::from_secs(10));
        let meta = MetaClient::new(
            dialer.clone(),
            &config.meta,
            Duration::from_millis(config.meta_timeout_ms),
            counters.clone(),
        );
        let data = DataPlane::new(dialer, config.site.clone(), counters.clone());
        Client { config: Arc::new(config), meta, data, counters, identity }
    }

    /// Load the default config file and connect.
    pub async fn from_default_config() -> Result<Self> {
        Self::connect(ClientConfig::load(&ClientConfig::default_path())?).await
    }

    /// The configuration.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Who we are (from our certificate).
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Request counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// The metadata client.
    pub fn meta(&self) -> &MetaClient {
        &self.meta
    }

    /// The data plane.
    pub fn data(&self) -> &DataPlane {
        &self.data
    }

    /// Attributes of a path.
    pub async fn stat(&self, p: &str) -> Result<Attr> {
        self.meta.resolve(&path::normalize(p)).await
    }

    /// Entries of a directory with attributes; a file lists as itself.
    pub async fn list(&self, p: &str) -> Result<Vec<DirEntry>> {
        let attr = self.stat(p).await?;
        if attr.kind != FileKind::Directory {
            let name = path::split(p).map(|(_, n)| n).unwrap_or_else(|_| "/".into());
            return Ok(vec![DirEntry { name, ino: attr.ino, kind: attr.kind, attr: Some(attr), xattrs: None }]);
        }
        self.meta.readdir_all(attr.ino, true).await
    }

    /// Make a directory (and its parents with `parents`).
    pub async fn mkdir(&self, p: &str, parents: bool, perm: u32) -> Result<Attr> {
        let norm = path::normalize(p);
        if !parents {
            let (parent, name) = path::split(&norm)?;
            let pa = self.stat(&parent).await?;
            return self.meta.mkdir(pa.ino, &name, perm).await.map_err(|e| at(&norm, e));
        }
        let mut cur = self.meta.getattr(ROOT_INO).await?;
        let mut so_far = String::new();
        for comp in norm.split('/').filter(|c| !c.is_empty()) {
            so_far = path::join(if so_far.is_empty() { "/" } else { &so_far }, comp);
            cur = match self.meta.lookup(cur.ino, comp).await {
                Ok(a) if a.kind == FileKind::Directory => a,
                Ok(_) => return Err(remote(&so_far, ErrorCode::NotADirectory, "exists and is not a directory")),
                Err(e) if e.code() == Some(ErrorCode::NotFound) => match self.meta.mkdir(cur.ino, comp, perm).await {
                    Ok(a) => a,
                    Err(e) if e.code() == Some(ErrorCode::Exists) => self.meta.lookup(cur.ino, comp).await?,
                    Err(e) => return Err(at(&so_far, e)),
                },
                Err(e) => return Err(at(&so_far, e)),
            };
        }
        Ok(cur)
    }

    /// Create or replace the remote file `remote` with bytes from `src`.
    pub async fn put_reader<Rd: tokio::io::AsyncRead + Unpin>(
        &self,
        src: &mut Rd,
        remote: &str,
        perm: u32,
        on_bytes: OnBytes<'_>,
    ) -> Result<Attr> {
        let norm = path::normalize(remote);
        let (parent, name) = path::split(&norm)?;
        let pa = self.stat(&parent).await?;
        self.put_into(pa.ino, &name, &norm, src, perm, on_bytes).await
    }

    async fn put_into<Rd: tokio::io::AsyncRead + Unpin>(
        &self,
        parent: u64,
        name: &str,
        shown: &str,
        src: &mut Rd,
        perm: u32,
        on_bytes: OnBytes<'_>,
    ) -> Result<Attr> {
        let attr = self.meta.create(parent, name, FileKind::Regular, perm, false).await.map_err(|e| at(shown, e))?;
        if attr.kind != FileKind::Regular {
            return Err(remote(shown, ErrorCode::InvalidArgument, "not a regular file"));
        }
        let grant = self.meta.open_write(attr.ino, &self.config.site).await.map_err(|e| at(shown, e))?;
        let (size, hash) = self.data.write_from(&grant, src, on_bytes).await.map_err(|e| at(shown, e))?;
        Ok(Attr { size, hash: Some(hash), gen: grant.gen, ..attr })
    }

    /// Upload bytes (tests and small tools).
    pub async fn put_bytes(&self, data: &[u8], remote: &str) -> Result<Attr> {
        let mut src = data;
        self.put_reader(&mut src, remote, 0o644, &|_| {}).await
    }

    /// Upload a local file.
    pub async fn put_file(&self, local: &Path, remote: &str, on_bytes: OnBytes<'_>) -> Result<Attr> {
        let mut f = tokio::fs::File::open(local).await.map_err(|e| local_err(local, e))?;
        let perm = f
            .metadata()
            .await
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap_or(0o644);
        self.put_reader(&mut f, remote, perm, on_bytes).await
    }

    /// Download a file's bytes (verified).
    pub async fn get_bytes(&self, remote: &str) -> Result<Vec<u8>> {
        let norm = path::normalize(remote);
        let attr = self.stat(&norm).await?;
        let grant = self.meta.open_read(attr.ino).await.map_err(|e| at(&norm, e))?;
        self.data.read_to_vec(&grant).await.map_err(|e| at(&norm, e))
    }

    /// Download a file to a local path. The bytes land in a temporary file
    /// next to it that is renamed into place only once verified, so a failed
    /// download never clobbers an existing file.
    pub async fn get_file(&self, remote: &str, local: &Path, on_bytes: OnBytes<'_>) -> Result<u64> {
        let norm = path::normalize(remote);
        let attr = self.stat(&norm).await?;
        if attr.kind == FileKind::Directory {
            return Err(remote_err(&norm, ErrorCode::IsADirectory, "use -r for directories"));
        }
        self.get_ino(attr.ino, attr.perm, &norm, local, on_bytes).await
    }

    async fn get_ino(&self, ino: u64, perm: u32, shown: &str, local: &Path, on_bytes: OnBytes<'_>) -> Result<u64> {
        let grant = self.meta.open_read(ino).await.map_err(|e| at(shown, e))?;
        let dir = local.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let fname = local.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "download".into());
        let tmp = dir.join(format!(".{fname}.renkei-{}", std::process::id()));
        let mut out = tokio::fs::File::create(&tmp).await.map_err(|e| local_err(&tmp, e))?;
        let res = self.data.read_into(&grant, &mut out, on_bytes).await;
        match res {
            Ok(n) => {
                out.sync_all().await.map_err(|e| local_err(&tmp, e))?;
                drop(out);
                let _ = std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(perm & 0o777));
                tokio::fs::rename(&tmp, local).await.map_err(|e| local_err(local, e))?;
                Ok(n)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(at(shown, e))
            }
        }
    }

    /// Upload a local tree into `remote` (created if missing), `parallel`
    /// files at a time. A plain file is uploaded as `remote`. Returns
    /// (files, bytes).
    pub async fn put_tree(&self, local: &Path, remote: &str, on_bytes: OnBytes<'_>) -> Result<(u64, u64)> {
        let root = path::normalize(remote);
        if !std::fs::metadata(local).map_err(|e| local_err(local, e))?.is_dir() {
            let a = self.put_file(local, &root, on_bytes).await?;
            return Ok((1, a.size));
        }
        if self.config.bundle {
            return crate::bundle::tree::put_tree(self, local, &root, on_bytes).await;
        }
        let mut jobs = Vec::new();
        let mut dirs = vec![root.clone()];
        walk_local(local, &root, &mut dirs, &mut jobs)?;
        // Directories first, parents before children (the walk emits them so).
        let mut dir_inos = std::collections::HashMap::new();
        for d in &dirs {
            let a = self.mkdir(d, true, 0o755).await?;
            dir_inos.insert(d.clone(), a.ino);
        }
        let total_bytes: u64 = jobs.iter().map(|j| j.size).sum();
        let n = jobs.len() as u64;
        let dir_inos = &dir_inos;
        stream::iter(jobs)
            .map(|job| async move {
                let (parent, name) = path::split(&job.remote)?;
                let pino =
                    *dir_inos.get(&parent).ok_or_else(|| ClientError::Unexpected(format!("no inode for {parent}")))?;
                let mut f = tokio::fs::File::open(&job.local).await.map_err(|e| local_err(&job.local, e))?;
                let perm = f
                    .metadata()
                    .await
                    .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
                    .unwrap_or(0o644);
                self.put_into(pino, &name, &job.remote, &mut f, perm, on_bytes).await
            })
            .buffer_unordered(self.config.parallel.max(1))
            .try_for_each(|_| async { Ok(()) })
            .await?;
        Ok((n, total_bytes))
    }

    /// Download a remote tree into `local` (created if missing). Returns
    /// (files, bytes).
    pub async fn get_tree(&self, remote: &str, local: &Path, on_bytes: OnBytes<'_>) -> Result<(u64, u64)> {
        let root = path::normalize(remote);
        let attr = self.stat(&root).await?;
        if attr.kind != FileKind::Directory {
            let n = self.get_ino(attr.ino, attr.perm, &root, local, on_bytes).await?;
            return Ok((1, n));
        }
        let mut files: Vec<(u64, u32, String, PathBuf)> = Vec::new();
        let mut stack = vec![(attr.ino, root.clone(), local.to_path_buf())];
        while let Some((ino, rpath, lpath)) = stack.pop() {
            std::fs::create_dir_all(&lpath).map_err(|e| local_err(&lpath, e))?;
            for e in self.meta.readdir_all(ino, true).await.map_err(|e| at(&rpath, e))? {
                if !safe_local_name(&e.name) {
                    return Err(remote_err(
                        &rpath,
                        ErrorCode::InvalidArgument,
                        &format!("unsafe entry name {:?}", e.name),
                    ));
                }
                let rp = path::join(&rpath, &e.name);
                let lp = lpath.join(&e.name);
                match e.kind {
                    FileKind::Directory => stack.push((e.ino, rp, lp)),
                    FileKind::Regular => files.push((e.ino, e.attr.map(|a| a.perm).unwrap_or(0o644), rp, lp)),
                    FileKind::Symlink => {
                        let target =
                            match self.meta.call_at(&rp, fs_proto::meta::MetaRequest::ReadLink { ino: e.ino }).await? {
                                fs_proto::meta::MetaResponse::Target(t) => t,
                                other => return Err(ClientError::Unexpected(format!("{other:?}"))),
                            };
                        let _ = std::fs::remove_file(&lp);
                        std::os::unix::fs::symlink(&target, &lp).map_err(|er| local_err(&lp, er))?;
                    }
                    _ => {}
                }
            }
        }
        let n = files.len() as u64;
        let bytes: u64 = stream::iter(files)
            .map(|(ino, perm, rp, lp)| async move { self.get_ino(ino, perm, &rp, &lp, on_bytes).await })
            .buffer_unordered(self.config.parallel.max(1))
            .try_fold(0u64, |acc, b| async move { Ok(acc + b) })
            .await?;
        Ok((n, bytes))
    }

    /// Remove a file, or a directory (empty, or anything with `recursive`).
    pub async fn remove(&self, p: &str, recursive: bool) -> Result<()> {
        let norm = path::normalize(p);
        let (parent, name) = path::split(&norm)?;
        let pa = self.stat(&parent).await?;
        let attr = self.meta.lookup(pa.ino, &name).await.map_err(|e| at(&norm, e))?;
        if attr.kind == FileKind::Directory {
            if recursive {
                self.empty_dir(attr.ino, &norm).await?;
            }
            self.meta.rmdir(pa.ino, &name).await.map_err(|e| at(&norm, e))
        } else {
            self.meta.unlink(pa.ino, &name).await.map_err(|e| at(&norm, e))
        }
    }

    async fn empty_dir(&self, ino: u64, shown: &str) -> Result<()> {
        for e in self.meta.readdir_all(ino, false).await.map_err(|e| at(shown, e))? {
            let child = path::join(shown, &e.name);
            if e.kind == FileKind::Directory {
                Box::pin(self.empty_dir(e.ino, &child)).await?;
                self.meta.rmdir(ino, &e.name).await.map_err(|er| at(&child, er))?;
            } else {
                self.meta.unlink(ino, &e.name).await.map_err(|er| at(&child, er))?;
            }
        }
        Ok(())
    }

    /// Rename; into `to` if it is an existing directory (like `mv`).
    pub async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let from = path::normalize(from);
        let mut to = path::normalize(to);
        let (sp, sn) = path::split(&from)?;
        if let Ok(a) = self.stat(&to).await {
            if a.kind == FileKind::Directory {
                to = path::join(&to, &sn);
            }
        }
        let (tp, tn) = path::split(&to)?;
        let spa = self.stat(&sp).await?;
        let tpa = self.stat(&tp).await?;
        self.meta.rename(spa.ino, &sn, tpa.ino, &tn, RenameFlags::default()).await.map_err(|e| at(&from, e))
    }

    /// Change permission bits.
    pub async fn chmod(&self, p: &str, perm: u32) -> Result<Attr> {
        let norm = path::normalize(p);
        let a = self.stat(&norm).await?;
        self.meta.setattr(a.ino, SetAttr { perm: Some(perm), ..Default::default() }).await.map_err(|e| at(&norm, e))
    }

    /// A directory and a name in it for a new entry at `p`.
    async fn new_entry(&self, p: &str) -> Result<(String, Attr, String)> {
        let norm = path::normalize(p);
        let (parent, name) = path::split(&norm)?;
        let pa = self.stat(&parent).await?;
        Ok((norm, pa, name))
    }

    /// A hard link `new` to the existing file `existing`.
    pub async fn link(&self, existing: &str, new: &str) -> Result<Attr> {
        let target = self.stat(existing).await?;
        let (norm, pa, name) = self.new_entry(new).await?;
        let req = MetaRequest::Link { ino: target.ino, new_parent: pa.ino, new_name: name };
        match self.meta.call_at(&norm, req).await? {
            MetaResponse::Attr(a) => Ok(a),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// A symbolic link `new` whose target is `target` (stored verbatim).
    pub async fn symlink(&self, target: &str, new: &str) -> Result<Attr> {
        let (norm, pa, name) = self.new_entry(new).await?;
        let req = MetaRequest::Symlink { parent: pa.ino, name, target: target.to_string() };
        match self.meta.call_at(&norm, req).await? {
            MetaResponse::Attr(a) => Ok(a),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// One xattr request on the inode at `p`.
    async fn xattr_call(&self, p: &str, req: impl FnOnce(u64) -> MetaRequest) -> Result<MetaResponse> {
        let norm = path::normalize(p);
        let a = self.stat(&norm).await?;
        self.meta.call_at(&norm, req(a.ino)).await
    }

    /// An extended attribute's value.
    pub async fn getxattr(&self, p: &str, name: &str) -> Result<Vec<u8>> {
        match self.xattr_call(p, |ino| MetaRequest::GetXattr { ino, name: name.to_string() }).await? {
            MetaResponse::Xattr(v) => Ok(v),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Set an extended attribute.
    pub async fn setxattr(&self, p: &str, name: &str, value: &[u8]) -> Result<()> {
        let req = |ino| MetaRequest::SetXattr {
            ino,
            name: name.to_string(),
            value: value.to_vec(),
            flags: XattrFlags::default(),
        };
        match self.xattr_call(p, req).await? {
            MetaResponse::Done => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The names of a path's extended attributes.
    pub async fn listxattr(&self, p: &str) -> Result<Vec<String>> {
        match self.xattr_call(p, |ino| MetaRequest::ListXattr { ino }).await? {
            MetaResponse::XattrNames(v) => Ok(v),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Remove an extended attribute.
    pub async fn removexattr(&self, p: &str, name: &str) -> Result<()> {
        match self.xattr_call(p, |ino| MetaRequest::RemoveXattr { ino, name: name.to_string() }).await? {
            MetaResponse::Done => Ok(()),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Drop `host`'s replica of a file (never the last good one); the
    /// replicas left.
    pub async fn drop_replica(&self, p: &str, host: &str) -> Result<(Attr, Vec<ReplicaInfo>)> {
        let norm = path::normalize(p);
        let a = self.stat(&norm).await?;
        match self.meta.call_at(&norm, MetaRequest::DropReplica { ino: a.ino, host: host.to_string() }).await? {
            MetaResponse::Replicas { attr, replicas } => Ok((attr, replicas)),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Replicas of a file.
    pub async fn where_is(&self, p: &str) -> Result<(Attr, Vec<ReplicaInfo>)> {
        let norm = path::normalize(p);
        let a = self.stat(&norm).await?;
        self.meta.replicas(a.ino).await.map_err(|e| at(&norm, e))
    }

    /// Capacity totals.
    pub async fn df(&self) -> Result<StatFs> {
        self.meta.statfs().await
    }

    /// The host registry.
    pub async fn hosts(&self) -> Result<Vec<HostInfo>> {
        self.meta.hosts().await
    }
}

fn at(p: &str, e: ClientError) -> ClientError {
    match e {
        ClientError::Remote { path, error } if path.is_empty() || !path.starts_with('/') => {
            ClientError::Remote { path: p.to_string(), error }
        }
        other => other,
    }
}

fn remote(p: &str, code: ErrorCode, msg: &str) -> ClientError {
    remote_err(p, code, msg)
}

fn remote_err(p: &str, code: ErrorCode, msg: &str) -> ClientError {
    ClientError::Remote { path: p.to_string(), error: fs_proto::RemoteError::new(code, msg) }
}

fn local_err(p: &Path, e: std::io::Error) -> ClientError {
    ClientError::Local { path: p.to_path_buf(), source: e }
}

/// A name from the remote side that is safe to create locally.
fn safe_local_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

fn walk_local(dir: &Path, remote: &str, dirs: &mut Vec<String>, jobs: &mut Vec<FileJob>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| local_err(dir, e))?
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| local_err(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let lp = e.path();
        let rp = path::join(remote, &name);
        let ft = e.file_type().map_err(|er| local_err(&lp, er))?;
        if ft.is_dir() {
            dirs.push(rp.clone());
            walk_local(&lp, &rp, dirs, jobs)?;
        } else if ft.is_file() {
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            jobs.push(FileJob { local: lp, remote: rp, size });
        }
    }
    Ok(())
}
