//! `vpe serve`: the VM manager.
//!
//! Users and PoP agents dial the manager over QUIC with their federation
//! certificates. A user's connection carries [`VpeRequest`]s, one per
//! stream, answered as that user (the certificate's name). An agent's
//! connection (a host certificate with a site) carries heartbeats, and the
//! manager opens streams on it to ask the agent to run, stop and save VMs.
//!
//! The manager keeps the VM registry (persisted in `<state_dir>/vms.json`),
//! checks users' limits, places VMs on a site's PoPs with the agents'
//! reported loads, and keeps image and template records in the namespace
//! (see [`crate::store`]).
//!
//! # Layout
//! - [`config`], `manager.toml`.
//! - [`registry`]: VMs, limits, names, addresses, placement (sans IO).
//! - [`agents`]: connected PoP agents and their reports.
//! - [`ns`]: namespace helpers.
//! - `images`, `vms`, `templates`: the request handlers.
//! - `report`: VMs per PoP reported to the meta server's status page.

pub mod agents;
pub mod config;
mod images;
pub mod ns;
pub mod registry;
mod report;
mod templates;
mod vms;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fs_client::{Client, ClientConfig};
use fs_proto::endpoint::{explain_connection_error, peer_identity, TlsIdentity};
use fs_proto::error::quic_codes;
use fs_proto::frame::{read_msg, write_msg};
use fs_proto::rpc::CallError;
use fs_proto::vpe::{AgentRequest, AgentResponse, PopRequest, PopResponse, VpeRequest, VpeResponse};
use fs_proto::{ErrorCode, Identity, RemoteError, Role};
use tracing::{debug, info, warn, Instrument};

use crate::error::ServiceError;
use crate::store::layout;
pub use config::{ManagerConfig, UserConfig};
use ns::Ns;
use registry::Registry;

/// How long a peer may take to send its request frame.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything the manager changes, under one lock (never held across I/O).
struct State {
    registry: Registry,
    agents: agents::Agents,
    /// The PoP chosen last at each site (round robin among equals).
    last_pick: BTreeMap<String, String>,
}

pub(crate) struct Manager {
    config: ManagerConfig,
    ns: Ns,
    state: Mutex<State>,
    /// Serialises changes to image and template records.
    records: tokio::sync::Mutex<()>,
    layout_ready: tokio::sync::OnceCell<()>,
}

type R<T> = Result<T, RemoteError>;

/// A failed call to a PoP: it answered with an error (and cleaned up after
/// itself), or it could not be reached or did not answer in time (so what
/// happened there is unknown).
#[derive(Debug)]
enum PopCallError {
    Refused(RemoteError),
    Unreachable(RemoteError),
}

impl PopCallError {
    fn into_remote(self) -> RemoteError {
        match self {
            PopCallError::Refused(e) | PopCallError::Unreachable(e) => e,
        }
    }
}

fn now_ms() -> u64 {
    fs_proto::Timestamp::now().as_millis()
}

impl Manager {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn registry_path(&self) -> PathBuf {
        self.config.state_dir.join("vms.json")
    }

    /// Persists the registry; a failure is logged (the in-memory registry stays authoritative).
    fn persist(&self, state: &State) {
        if let Err(e) = state.registry.store(&self.registry_path()) {
            warn!(error = %e, path = %self.registry_path().display(), "cannot write the VM registry");
        }
    }

    /// Makes `/vpe/images`, `/vpe/templates`, `/vpe/upload` and
    /// `/vpe/staging` (once), all root's whoever made them first: the
    /// sticky bit keeps one user's upload from another only while no user
    /// owns `/vpe/upload`.
    async fn ensure_layout(&self) -> R<()> {
        self.layout_ready
            .get_or_try_init(|| async {
                for (dir, perm) in [
                    (layout::ROOT, 0o755),
                    (layout::IMAGES, 0o755),
                    (layout::TEMPLATES, 0o755),
                    (layout::UPLOAD, 0o1777),
                    (layout::STAGING, 0o700),
                ] {
                    self.ns.mkdir_p(dir, perm).await?;
                    self.ns.own(dir, perm).await?;
                }
                info!("namespace layout ready under {}", layout::ROOT);
                Ok::<(), RemoteError>(())
            })
            .await
            .map(|_| ())
    }

    /// Sends `req` to PoP `pop` and waits at most `timeout` for its answer.
    async fn call_pop(&self, pop: &str, req: &PopRequest, timeout: Duration) -> Result<PopResponse, PopCallError> {
        let conn = self.lock().agents.conn(pop, self.config.agent_timeout(), Instant::now()).ok_or_else(|| {
            PopCallError::Unreachable(RemoteError::new(
                ErrorCode::Unavailable,
                format!("PoP {pop} is not connected to the manager"),
            ))
        })?;
        match fs_proto::rpc::call::<PopRequest, PopResponse>(&conn, pop, req, timeout).await {
            Ok(r) => Ok(r),
            Err(CallError::Remote(e)) => {
                Err(PopCallError::Refused(RemoteError::new(e.code, format!("PoP {pop}: {}", e.message))))
            }
            Err(e) => Err(PopCallError::Unreachable(RemoteError::new(
                ErrorCode::Unavailable,
                format!("PoP {pop} did not answer: {e}"),
            ))),
        }
    }

    async fn handle_user(&self, user: &str, req: VpeRequest) -> R<VpeResponse> {
        match req {
            VpeRequest::WhoAmI => self.whoami(user).await,
            VpeRequest::Pops => {
                let s = self.lock();
                Ok(VpeResponse::Pops(s.agents.infos(&s.registry, self.config.agent_timeout(), Instant::now())))
            }
            VpeRequest::ImageRegister(r) => self.image_register(user, r).await,
            VpeRequest::ImageList => self.image_list(user).await,
            VpeRequest::ImageShow { name } => self.image_show(user, &name).await,
            VpeRequest::ImageTag(t) => self.image_tag(user, t).await,
            VpeRequest::ImageRemove { image } => self.image_remove(user, &image).await,
            VpeRequest::Run(r) => self.run_vm(user, r).await,
            VpeRequest::List => {
                let s = self.lock();
                Ok(VpeResponse::Vms(s.registry.of_user(user).map(|v| v.to_info()).collect()))
            }
            VpeRequest::Show { vm } => Ok(VpeResponse::Vm(self.lock().registry.find(user, &vm)?.to_info())),
            VpeRequest::Console { vm, max_bytes } => self.console(user, &vm, max_bytes).await,
            VpeRequest::Save { vm, as_name } => self.save_vm(user, &vm, as_name).await,
            VpeRequest::Stop { vm } => self.stop_vm(user, &vm).await,
            VpeRequest::TemplateCreate(t) => self.template_create(user, t).await,
            VpeRequest::TemplateList => self.template_list(user).await,
            VpeRequest::TemplateRemove { name } => self.template_remove(user, &name).await,
        }
    }

    async fn whoami(&self, user: &str) -> R<VpeResponse> {
        self.ensure_layout().await?;
        let running = self.lock().registry.of_user(user).count() as u32;
        let cfg = self.config.user(user);
        Ok(VpeResponse::WhoAmI(fs_proto::vpe::UserInfo {
            name: user.to_string(),
            allowed_sites: cfg.and_then(|c| c.allowed_sites.as_ref().map(|s| s.iter().cloned().collect())),
            max_vms: cfg.map(|c| c.max_vms).unwrap_or(0),
            running,
            addresses: cfg
                .map(|c| c.addresses.iter().map(|(s, a)| (s.clone(), a.clone())).collect())
                .unwrap_or_default(),
            ssh_keys: cfg.map(|c| c.ssh_keys.clone()).unwrap_or_default(),
            upload_dir: layout::UPLOAD.to_string(),
        }))
    }

    fn heartbeat(&self, pop: &str, conn_id: usize, report: fs_proto::vpe::PopReport) {
        let mut s = self.lock();
        let reported: Vec<String> = report.vms.iter().map(|v| v.name.clone()).collect();
        s.agents.heartbeat(pop, conn_id, report, Instant::now());
        if vms::reconcile(&mut s.registry, pop, &reported) {
            self.persist(&s);
        }
    }
}

/// Serves users and agents on `endpoint` until `shutdown` completes.
pub async fn run(
    config: ManagerConfig,
    endpoint: quinn::Endpoint,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServiceError> {
    std::fs::create_dir_all(&config.state_dir).map_err(ServiceError::io(&config.state_dir))?;
    let tls = TlsIdentity::load(&config.tls)?;
    let client_config = ClientConfig::new(config.meta.clone(), config.site.clone(), config.tls.clone());
    let client = Client::with_endpoint(client_config, tls.identity.clone(), endpoint.clone());
    let path = config.state_dir.join("vms.json");
    let mut registry = Registry::load(&path).map_err(ServiceError::io(&path))?;
    let interrupted = registry.interrupted();
    if !interrupted.is_empty() {
        warn!(?interrupted, "operations of the previous manager were interrupted: lost until their PoPs report");
        registry.store(&path).map_err(ServiceError::io(&path))?;
    }
    info!(addr = ?endpoint.local_addr().ok(), vms = registry.vms.len(), "vpe manager serving");
    let manager = Arc::new(Manager {
        config,
        ns: Ns::new(client),
        state: Mutex::new(State { registry, agents: agents::Agents::default(), last_pick: BTreeMap::new() }),
        records: tokio::sync::Mutex::new(()),
        layout_ready: tokio::sync::OnceCell::new(),
    });
    {
        // The namespace may come up after us: make the layout in the background.
        let m = manager.clone();
        tokio::spawn(async move {
            for _ in 0..60 {
                match m.ensure_layout().await {
                    Ok(()) => return,
                    Err(e) => debug!(error = %e, "namespace layout not ready yet"),
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
    // VMs per PoP for the meta server's status page.
    let reporter = tokio::spawn(report::run(manager.clone()));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                tokio::spawn(connection(manager.clone(), incoming));
            }
        }
    }
    reporter.abort();
    info!("vpe manager shutting down");
    endpoint.close(quic_codes::SHUTDOWN, b"vpe manager shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    Ok(())
}

async fn connection(m: Arc<Manager>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            warn!(%remote, "refused connection: {}", explain_connection_error(&e));
            return;
        }
    };
    let id = match peer_identity(&conn) {
        Ok((id, _)) => id,
        Err(e) => {
            warn!(%remote, "refused connection: {e}");
            conn.close(quic_codes::FORBIDDEN, format!("refused: {e}").as_bytes());
            return;
        }
    };
    let span = tracing::info_span!("conn", peer = %id, %remote);
    match (&id.role, &id.site) {
        (Role::User, _) => serve_user(m, conn, id).instrument(span).await,
        (Role::Host, Some(site)) if m.config.agents.contains(&id.name) => {
            let site = site.clone();
            serve_agent(m, conn, id, site).instrument(span).await
        }
        (Role::Host, site) => {
            let why = if site.is_none() {
                format!("{id} is not a vpe agent: its certificate names no site")
            } else {
                format!("{id} is not a vpe agent: the manager's `agents` does not list it")
            };
            warn!(parent: &span, "refused host: {why}");
            conn.close(quic_codes::FORBIDDEN, why.as_bytes());
        }
    }
}

async fn serve_user(m: Arc<Manager>, conn: quinn::Connection, id: Identity) {
    loop {
        let (mut send, mut recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                debug!("connection ended: {e}");
                return;
            }
        };
        let m = m.clone();
        let (conn, user) = (conn.clone(), id.name.clone());
        tokio::spawn(
            async move {
                let Some(req) = read_request::<VpeRequest>(&conn, &mut send, &mut recv).await else { return };
                let kind = req.kind();
                let span = tracing::info_span!("request", user = %user, kind);
                let reply = m.handle_user(&user, req).instrument(span).await;
                match &reply {
                    Ok(_) => debug!(kind, "done"),
                    Err(e) => info!(kind, user = %user, "refused: {e}"),
                }
                let _ = write_msg(&mut send, &reply).await;
                let _ = send.finish();
            }
            .in_current_span(),
        );
    }
}

async fn serve_agent(m: Arc<Manager>, conn: quinn::Connection, id: Identity, site: String) {
    info!(pop = %id.name, %site, "PoP agent connected");
    m.lock().agents.connected(&id.name, &site, conn.clone(), Instant::now());
    loop {
        let (mut send, mut recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                info!(pop = %id.name, "PoP agent disconnected: {e}");
                return;
            }
        };
        let Some(req) = read_request::<AgentRequest>(&conn, &mut send, &mut recv).await else { continue };
        match req {
            AgentRequest::Heartbeat(report) => m.heartbeat(&id.name, conn.stable_id(), report),
        }
        let reply: fs_proto::vpe::AgentReply = Ok(AgentResponse::Ack);
        let _ = write_msg(&mut send, &reply).await;
        let _ = send.finish();
    }
}

/// Reads one request frame, closing the connection on a protocol violation.
async fn read_request<Q: serde::de::DeserializeOwned>(
    conn: &quinn::Connection,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
) -> Option<Q> {
    match tokio::time::timeout(REQUEST_READ_TIMEOUT, read_msg::<Q>(recv)).await {
        Ok(Ok(q)) => Some(q),
        Ok(Err(e)) if e.is_protocol_violation() => {
            warn!("closing connection: {e}");
            conn.close(quic_codes::PROTOCOL, format!("protocol violation: {e}").as_bytes());
            None
        }
        Ok(Err(e)) => {
            debug!("request stream failed: {e}");
            None
        }
        Err(_) => {
            warn!("request frame not received within {REQUEST_READ_TIMEOUT:?}; resetting stream");
            let _ = send.reset(quic_codes::PROTOCOL);
            None
        }
    }
}
