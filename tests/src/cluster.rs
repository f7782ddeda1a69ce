//! An in-process federation: one meta server and file servers at several
//! sites, each on its own QUIC endpoint bound to `127.0.0.1:0`, with a fresh
//! CA in a temporary directory.

use fs_client::{Client, ClientConfig};
use fs_meta::{MetaConfig, MetaNode};
use fs_proto::endpoint::{server_endpoint, TlsFiles, TlsIdentity, Tuning};
use fs_proto::identity::{CaDir, IssueRequest, Role};
use fs_proto::rpc::PeerAddr;
use fs_server::ServerConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A node running in this process.
struct Node {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    addr: SocketAddr,
}

impl Node {
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
        self.task.abort();
    }
}

/// A file server of the cluster.
pub struct ServerHandle {
    /// Host name.
    pub name: String,
    /// Site.
    pub site: String,
    /// Spool directory.
    pub spool: PathBuf,
    config: ServerConfig,
    node: Option<Node>,
    /// The running server's shared state (to wait on what it learns).
    ctx: Option<std::sync::Arc<fs_server::node::Ctx>>,
}

/// Builder for [`Cluster`].
pub struct ClusterBuilder {
    sites: usize,
    servers_per_site: usize,
    meta_tweak: Box<dyn FnOnce(&mut MetaConfig) + Send>,
    server_tweak: Box<dyn Fn(&mut ServerConfig) + Send>,
}

/// An in-process federation.
pub struct Cluster {
    dir: tempfile::TempDir,
    ca: CaDir,
    meta: Option<Node>,
    meta_service: std::sync::Arc<fs_meta::service::MetaService>,
    /// File servers.
    pub servers: Vec<ServerHandle>,
    /// Sites, in order.
    pub sites: Vec<String>,
}

impl ClusterBuilder {
    /// Number of sites (one server each unless [`Self::servers_per_site`]).
    pub fn sites(mut self, n: usize) -> Self {
        self.sites = n;
        self
    }

    /// File servers per site.
    pub fn servers_per_site(mut self, n: usize) -> Self {
        self.servers_per_site = n;
        self
    }

    /// Adjust the meta server's configuration.
    pub fn meta_config(mut self, f: impl FnOnce(&mut MetaConfig) + Send + 'static) -> Self {
        self.meta_tweak = Box::new(f);
        self
    }

    /// Adjust every file server's configuration.
    pub fn server_config(mut self, f: impl Fn(&mut ServerConfig) + Send + 'static) -> Self {
        self.server_tweak = Box::new(f);
        self
    }

    /// Start everything and wait until every server is alive.
    pub async fn start(self) -> Cluster {
        crate::init_logs();
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = CaDir::new(dir.path().join("ca"));
        ca.init("test").expect("ca init");
        let sites: Vec<String> = (1..=self.sites).map(|i| format!("site{i}")).collect();

        let meta_files = issue(&ca, "meta", Role::Host, Some(&sites[0]));
        let mut meta_cfg = MetaConfig::new(dir.path().join("meta.db"), meta_files);
        meta_cfg.listen = "127.0.0.1:0".parse().expect("addr");
        meta_cfg.host_timeout_ms = 3_000;
        meta_cfg.gc_grace_ms = 0;
        if let Some(store) = crate::etcd::test_store() {
            meta_cfg.store = store;
        }
        (self.meta_tweak)(&mut meta_cfg);
        let tls = TlsIdentity::load(&meta_cfg.tls).expect("meta tls");
        let ep = server_endpoint(meta_cfg.listen, &tls, &meta_cfg.transport).expect("meta endpoint");
        let meta_addr = ep.local_addr().expect("addr");
        let node = MetaNode::open(meta_cfg, &tls).expect("meta open");
        let meta_service = node.service();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            if let Err(e) = node
                .serve(ep, async {
                    let _ = rx.await;
                })
                .await
            {
                tracing::error!("meta server: {e}");
            }
        });
        let meta = Node { stop: Some(tx), task, addr: meta_addr };

        let mut servers = Vec::new();
        for (i, site) in sites.iter().enumerate() {
            for j in 0..self.servers_per_site {
                let name = if self.servers_per_site == 1 {
                    format!("pop{}", i + 1)
                } else {
                    format!("pop{}-{}", i + 1, j + 1)
                };
                let files = issue(&ca, &name, Role::Host, Some(site));
                let spool = dir.path().join("spool").join(&name);
                let mut cfg =
                    ServerConfig::new(spool.clone(), PeerAddr { addr: meta_addr, name: "meta".into() }, files);
                cfg.listen = "127.0.0.1:0".parse().expect("addr");
                cfg.heartbeat_ms = 300;
                (self.server_tweak)(&mut cfg);
                let (node, ctx) = start_server(&cfg).await;
                let h = ServerHandle { name, site: site.clone(), spool, config: cfg, node: Some(node), ctx: Some(ctx) };
                servers.push(h);
            }
        }
        let cluster = Cluster { dir, ca, meta: Some(meta), meta_service, servers, sites };
        cluster.wait_alive(cluster.servers.len(), Duration::from_secs(20)).await;
        cluster
    }
}

async fn start_server(cfg: &ServerConfig) -> (Node, std::sync::Arc<fs_server::node::Ctx>) {
    let tls = TlsIdentity::load(&cfg.tls).expect("server tls");
    let ep = server_endpoint(cfg.listen, &tls, &cfg.transport).expect("server endpoint");
    let addr = ep.local_addr().expect("addr");
    let mut cfg = cfg.clone();
    cfg.listen = addr;
    let (tx, rx) = oneshot::channel();
    let ctx = fs_server::node::prepare(cfg, tls.identity.clone(), &ep).expect("file server state");
    let task = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            if let Err(e) = fs_server::node::run(ctx, ep, async {
                let _ = rx.await;
            })
            .await
            {
                tracing::error!("file server: {e}");
            }
        }
    });
    (Node { stop: Some(tx), task, addr }, ctx)
}

/// Issue a certificate in a CA directory.
pub fn issue(ca: &CaDir, name: &str, role: Role, site: Option<&str>) -> TlsFiles {
    let files = ca
        .issue(&IssueRequest {
            name: name.into(),
            role,
            site: site.map(str::to_string),
            not_before: None,
            valid_days: 30,
        })
        .expect("issue certificate");
    TlsFiles { ca: ca.cert_path(), cert: files.cert, key: files.key }
}

impl Cluster {
    /// Start building a cluster (defaults: 2 sites, 1 server each).
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder { sites: 2, servers_per_site: 1, meta_tweak: Box::new(|_| {}), server_tweak: Box::new(|_| {}) }
    }

    /// The temporary directory holding everything.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA.
    pub fn ca(&self) -> &CaDir {
        &self.ca
    }

    /// The meta server's address.
    pub fn meta_addr(&self) -> SocketAddr {
        self.meta.as_ref().map(|m| m.addr).expect("meta running")
    }

    /// The meta service (to inspect state directly).
    pub fn meta_service(&self) -> &fs_meta::service::MetaService {
        &self.meta_service
    }

    /// The meta server's certificate and key (its key signs capabilities):
    /// for tests that make a capability the meta server could have made.
    pub fn meta_tls(&self) -> TlsFiles {
        let f = self.ca.issued_paths(Role::Host, "meta");
        TlsFiles { ca: self.ca.cert_path(), cert: f.cert, key: f.key }
    }

    /// Client configuration for `user` at `site` (issuing the certificate).
    pub fn client_config(&self, user: &str, site: &str) -> ClientConfig {
        let files = if self.ca.issued_paths(Role::User, user).cert.exists() {
            let f = self.ca.issued_paths(Role::User, user);
            TlsFiles { ca: self.ca.cert_path(), cert: f.cert, key: f.key }
        } else {
            issue(&self.ca, user, Role::User, None)
        };
        let mut c = ClientConfig::new(PeerAddr { addr: self.meta_addr(), name: "meta".into() }, site.into(), files);
        c.transport = Tuning::default();
        c
    }

    /// A connected client for `user` at `site`.
    pub async fn client(&self, user: &str, site: &str) -> Client {
        Client::connect(self.client_config(user, site)).await.expect("client connect")
    }

    /// Wait until `n` servers are alive: looked at again on every heartbeat
    /// the meta server records, never on a timer.
    pub async fn wait_alive(&self, n: usize, bound: Duration) {
        self.wait_until(bound, "servers alive", || async {
            let alive = self.meta_service.hosts.list(&Default::default()).iter().filter(|h| h.alive).count();
            if alive >= n {
                Ok(())
            } else {
                Err(format!("{alive} of {n} alive"))
            }
        })
        .await
    }

    /// Wait (at most `bound`) until `check` returns Ok, looking again on
    /// every event of the meta server that can change what a test waits
    /// for: a heartbeat or change of the host registry, a change of the
    /// replication worker's status (a pass, a copy done). Never a timer; a
    /// slow machine only makes this wait longer. Panics naming `what`.
    pub async fn wait_until<T, F, Fut>(&self, bound: Duration, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let svc = &self.meta_service;
        // Subscribed before the first look, so a change between the look
        // and the wait still wakes it.
        let (mut hosts, mut worker) = (svc.hosts.changes(), svc.replication.changes());
        let until = tokio::time::Instant::now() + bound;
        loop {
            hosts.mark_unchanged();
            worker.mark_unchanged();
            let why = match check().await {
                Ok(v) => return v,
                Err(why) => why,
            };
            let woke = tokio::time::timeout_at(until, async {
                tokio::select! {
                    _ = hosts.changed() => {}
                    _ = worker.changed() => {}
                }
            })
            .await;
            if woke.is_err() {
                panic!("{what} not reached within {bound:?}: {why}");
            }
        }
    }

    /// Stop file server `i` (gracefully: its endpoint closes).
    pub async fn stop_server(&mut self, i: usize) {
        self.servers[i].ctx = None;
        if let Some(n) = self.servers[i].node.take() {
            n.stop().await;
        }
    }

    /// Start file server `i` again (on a new port; it re-registers).
    pub async fn restart_server(&mut self, i: usize) {
        self.stop_server(i).await;
        let (n, ctx) = start_server(&self.servers[i].config).await;
        self.servers[i].node = Some(n);
        self.servers[i].ctx = Some(ctx);
    }

    /// The shared state of running file server `i`, e.g. to wait on the
    /// voidings it learns ([`fs_server::voids::VoidList::wait_until`]).
    pub fn server_ctx(&self, i: usize) -> std::sync::Arc<fs_server::node::Ctx> {
        self.servers[i].ctx.clone().expect("server running")
    }

    /// Where replica `(ino, gen)` lives in server `i`'s spool.
    pub fn replica_path(&self, i: usize, ino: u64, gen: u64) -> PathBuf {
        self.servers[i].spool.join("data").join(format!("{:02x}", ino & 0xff)).join(format!("{ino:016x}.{gen:016x}"))
    }

    /// Index of the server named `host`.
    pub fn server_index(&self, host: &str) -> usize {
        self.servers.iter().position(|s| s.name == host).expect("known server")
    }

    /// Stop everything.
    pub async fn shutdown(mut self) {
        for i in 0..self.servers.len() {
            self.stop_server(i).await;
        }
        if let Some(m) = self.meta.take() {
            m.stop().await;
        }
    }
}
