//! Typed calls to the meta server, counted per kind.

use crate::counters::Counters;
use crate::error::ClientError;
use fs_proto::meta::{
    listing_page, MetaCall, MetaRequest, MetaResponse, QuotaLimits, QuotaReport, ReadGrant, RenameFlags, SetAttr,
    StatFs, WhoAmI, WriteGrant,
};
use fs_proto::rpc::{call_paged, CallError, Dialer, MetaAddrs, MetaPeers, PeerAddr};
use fs_proto::{Attr, Cred, DirEntry, FileKind, HostInfo, Ino, ReplicaInfo};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

type Result<T> = std::result::Result<T, ClientError>;

/// Calls to the meta server.
#[derive(Clone)]
pub struct MetaClient {
    dialer: Dialer,
    peers: MetaPeers,
    timeout: Duration,
    counters: Arc<Counters>,
    cred: Option<Cred>,
}

macro_rules! expect {
    ($resp:expr, $pat:pat => $out:expr) => {
        match $resp {
            $pat => Ok($out),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    };
}

impl MetaClient {
    /// A client of the meta servers `meta` (the one that leads) through `dialer`.
    pub fn new(dialer: Dialer, meta: &MetaAddrs, timeout: Duration, counters: Arc<Counters>) -> Self {
        MetaClient { dialer, peers: MetaPeers::new(meta), timeout, counters, cred: None }
    }

    /// The same client acting with asserted credentials (admin identities only).
    pub fn with_cred(&self, cred: Option<Cred>) -> Self {
        MetaClient { cred, ..self.clone() }
    }

    /// The address of the meta server in use now.
    pub fn peer(&self) -> PeerAddr {
        self.peers.current()
    }

    /// The meta servers (the one in use, and the others to try).
    pub fn peers(&self) -> &MetaPeers {
        &self.peers
    }

    /// Send one request; errors carry `path` for messages.
    pub async fn call_at(&self, path: &str, req: MetaRequest) -> Result<MetaResponse> {
        self.call(req).await.map_err(|e| ClientError::at(path, e))
    }

    /// Send one request, to the meta server in use, or the next listed when
    /// it cannot be reached. One that changes nothing is sent again, once,
    /// over a new connection when the connection dies under it (e.g. the
    /// meta server restarted: its stateless reset arrives within a round
    /// trip; or it was killed and a standby took over).
    pub async fn call(&self, req: MetaRequest) -> std::result::Result<MetaResponse, CallError> {
        let kind = req.kind();
        self.counters.bump(kind);
        if let MetaRequest::Batch(reqs) = &req {
            // The meta server would take a longer batch for an attack and
            // close the connection: say so here instead.
            if reqs.len() > fs_proto::meta::MAX_BATCH {
                return Err(CallError::Remote(fs_proto::RemoteError::new(
                    fs_proto::ErrorCode::InvalidArgument,
                    format!("a batch holds at most {} requests, not {}", fs_proto::meta::MAX_BATCH, reqs.len()),
                )));
            }
        }
        let safe = !req.is_mutation();
        let msg = MetaCall { cred: self.cred.clone(), req };
        let call = async {
            let peer = self.peers.current();
            match self.peers.call(&self.dialer, &msg, self.timeout).await {
                Err(e)
                    if safe
                        && (e.connection_lost()
                            || (self.peers.all().len() > 1 && matches!(e, CallError::Timeout { .. }))) =>
                {
                    tracing::debug!("connection lost under a request that changes nothing, sending it again: {e}");
                    self.dialer.forget(&peer).await;
                    self.peers.call(&self.dialer, &msg, self.timeout).await
                }
                other => other,
            }
        };
        call.instrument(tracing::debug_span!("meta_call", kind)).await
    }

    /// Who the meta server thinks we are.
    pub async fn whoami(&self) -> Result<WhoAmI> {
        expect!(self.call_at("", MetaRequest::WhoAmI).await?, MetaResponse::WhoAmI(w) => w)
    }

    /// Resolve an absolute path.
    pub async fn resolve(&self, path: &str) -> Result<Attr> {
        expect!(self.call_at(path, MetaRequest::Resolve { path: path.to_string() }).await?, MetaResponse::Attr(a) => a)
    }

    /// Look up one name.
    pub async fn lookup(&self, parent: Ino, name: &str) -> Result<Attr> {
        let req = MetaRequest::Lookup { parent, name: name.to_string() };
        expect!(self.call_at(name, req).await?, MetaResponse::Attr(a) => a)
    }

    /// Attributes of an inode.
    pub async fn getattr(&self, ino: Ino) -> Result<Attr> {
        expect!(self.call_at("", MetaRequest::GetAttr { ino }).await?, MetaResponse::Attr(a) => a)
    }

    /// A whole directory in one `ListDir` stream of pages (one round trip
    /// plus the bytes, however large the directory).
    pub async fn readdir_all(&self, ino: Ino, plus: bool) -> Result<Vec<DirEntry>> {
        let req = MetaRequest::ListDir { ino, plus };
        self.counters.bump(req.kind());
        let span = tracing::debug_span!("meta_call", kind = req.kind());
        let msg = MetaCall { cred: self.cred.clone(), req };
        // Each listed meta server may be tried once, plus one re-dial.
        let mut tries = self.peers.all().len() + 1;
        async move {
            loop {
                tries -= 1;
                let peer = self.peers.current();
                let conn = match self.dialer.connect(&peer).await {
                    Ok(c) => c,
                    Err(e) if tries > 0 && self.peers.failed(&peer) => {
                        tracing::debug!("{e}");
                        continue;
                    }
                    Err(e) => return Err(ClientError::at("", e)),
                };
                let mut out = Vec::new();
                match call_paged(&conn, &peer.name, &msg, self.timeout, |p| listing_page(p, &mut out)).await {
                    Ok(()) => return Ok(out),
                    // The connection died under a request that changes
                    // nothing: dial again (as `call` does).
                    Err(e)
                        if tries > 0
                            && (e.connection_lost()
                                || (self.peers.all().len() > 1 && matches!(e, CallError::Timeout { .. }))) =>
                    {
                        self.peers.failed(&peer);
                        self.dialer.forget(&peer).await;
                    }
                    Err(e) => return Err(ClientError::at("", e)),
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Create (or, non-exclusively, open) a node.
    pub async fn create(&self, parent: Ino, name: &str, kind: FileKind, perm: u32, exclusive: bool) -> Result<Attr> {
        let req = MetaRequest::Create { parent, name: name.to_string(), kind, perm, rdev: 0, exclusive };
        expect!(self.call_at(name, req).await?, MetaResponse::Attr(a) => a)
    }

    /// Create a directory.
    pub async fn mkdir(&self, parent: Ino, name: &str, perm: u32) -> Result<Attr> {
        let req = MetaRequest::Mkdir { parent, name: name.to_string(), perm };
        expect!(self.call_at(name, req).await?, MetaResponse::Attr(a) => a)
    }

    /// Remove a file name.
    pub async fn unlink(&self, parent: Ino, name: &str) -> Result<()> {
        let req = MetaRequest::Unlink { parent, name: name.to_string() };
        expect!(self.call_at(name, req).await?, MetaResponse::Done => ())
    }

    /// Remove an empty directory.
    pub async fn rmdir(&self, parent: Ino, name: &str) -> Result<()> {
        let req = MetaRequest::Rmdir { parent, name: name.to_string() };
        expect!(self.call_at(name, req).await?, MetaResponse::Done => ())
    }

    /// Rename.
    pub async fn rename(
        &self,
        parent: Ino,
        name: &str,
        new_parent: Ino,
        new_name: &str,
        flags: RenameFlags,
    ) -> Result<()> {
        let req =
            MetaRequest::Rename { parent, name: name.to_string(), new_parent, new_name: new_name.to_string(), flags };
        expect!(self.call_at(name, req).await?, MetaResponse::Done => ())
    }

    /// Change attributes.
    pub async fn setattr(&self, ino: Ino, set: SetAttr) -> Result<Attr> {
        expect!(self.call_at("", MetaRequest::SetAttr { ino, set }).await?, MetaResponse::Attr(a) => a)
    }

    /// Open for reading.
    pub async fn open_read(&self, ino: Ino) -> Result<ReadGrant> {
        expect!(self.call_at("", MetaRequest::OpenRead { ino }).await?, MetaResponse::Read(g) => g)
    }

    /// Open for writing a new generation at `site`.
    pub async fn open_write(&self, ino: Ino, site: &str) -> Result<WriteGrant> {
        let req = MetaRequest::OpenWrite { ino, site: site.to_string() };
        expect!(self.call_at("", req).await?, MetaResponse::Write(g) => g)
    }

    /// Replicas of a file.
    pub async fn replicas(&self, ino: Ino) -> Result<(Attr, Vec<ReplicaInfo>)> {
        expect!(self.call_at("", MetaRequest::Where { ino }).await?, MetaResponse::Replicas { attr, replicas } => (attr, replicas))
    }

    /// Quota reports: the caller's (None), a user's, or every user's.
    pub async fn quota(&self, user: Option<String>, all: bool) -> Result<Vec<QuotaReport>> {
        expect!(self.call_at("", MetaRequest::GetQuota { user, all }).await?, MetaResponse::Quota(q) => q)
    }

    /// Set a user's quota limits (admins only); the user's report.
    pub async fn set_quota(&self, user: &str, limits: QuotaLimits) -> Result<Vec<QuotaReport>> {
        let req = MetaRequest::SetQuota { user: user.to_string(), limits };
        expect!(self.call_at("", req).await?, MetaResponse::Quota(q) => q)
    }

    /// Capacity totals.
    pub async fn statfs(&self) -> Result<StatFs> {
        expect!(self.call_at("", MetaRequest::StatFs).await?, MetaResponse::StatFs(s) => s)
    }

    /// The host registry.
    pub async fn hosts(&self) -> Result<Vec<HostInfo>> {
        expect!(self.call_at("", MetaRequest::ListHosts).await?, MetaResponse::Hosts(h) => h)
    }

    /// A site administration request (see [`fs_proto::admin`]).
    pub async fn admin(&self, req: fs_proto::admin::AdminRequest) -> Result<MetaResponse> {
        self.call_at("", MetaRequest::Admin(req)).await
    }
}
