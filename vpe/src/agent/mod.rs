//! `vpe agent`: one per PoP.
//!
//! The agent dials the manager with the PoP's host certificate (its name is
//! the PoP's name, its site the PoP's site), sends a heartbeat with the
//! PoP's VMs, cache and problems every `heartbeat_ms`, and serves the
//! [`PopRequest`]s the manager sends on streams it opens on that same
//! connection: run, stop, save, console, status. If the connection is lost
//! the agent dials again; the VMs keep running meanwhile.
//!
//! VM work is done by the [`worker`] thread that owns the PoP's
//! [`crate::VmHost`]; images are read from (and saved to) the namespace
//! through fs-client.
//!
//! # Layout
//! - [`config`], `agent.toml`.
//! - [`worker`]: the thread owning the VM host.

pub mod config;
pub(crate) mod worker;

use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fs_client::{Client, ClientConfig};
use fs_proto::endpoint::{client_endpoint, TlsIdentity};
use fs_proto::error::quic_codes;
use fs_proto::frame::{read_msg, write_msg};
use fs_proto::rpc::Dialer;
use fs_proto::vpe::{AgentRequest, AgentResponse, ConsoleText, PopReply, PopReport, PopRequest, PopResponse, PopVm};
use fs_proto::{ErrorCode, RemoteError};
use tracing::{debug, info, warn, Instrument};

pub use config::AgentConfig;
use worker::Worker;

use crate::error::ServiceError;

/// Longest a stop of every VM at exit may take.
const STOP_ALL_BOUND: Duration = Duration::from_secs(60);

/// Runs the agent until `shutdown` completes.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> Result<(), ServiceError> {
    let tls = TlsIdentity::load(&config.tls)?;
    let name = tls.identity.name.clone();
    let site = tls.identity.site.clone().ok_or_else(|| {
        ServiceError::Config(format!("the agent's certificate ({name}) names no site; issue it with --site"))
    })?;
    let bind: SocketAddr = if config.manager.addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }
        .parse()
        .map_err(|e| ServiceError::Config(format!("{e}")))?;
    let endpoint = client_endpoint(bind, &tls, &config.transport)?;
    let client_config = ClientConfig::new(config.meta.clone(), site.clone(), config.tls.clone());
    let client = Client::with_endpoint(client_config, tls.identity.clone(), endpoint.clone());
    let worker = Worker::spawn(config.host.clone(), config.probe_kernel(), client, tokio::runtime::Handle::current());
    let span = tracing::info_span!("agent", pop = %name, %site);
    let dialer = Dialer::new(endpoint.clone(), Duration::from_secs(10));
    info!(parent: &span, manager = %config.manager, state = %config.host.state_dir.display(), "vpe agent starting");

    tokio::pin!(shutdown);
    let mut attempt = 0u32;
    loop {
        let session = session(&config, &dialer, &worker).instrument(span.clone());
        tokio::select! {
            _ = &mut shutdown => break,
            ended = session => {
                attempt = attempt.saturating_add(1);
                match ended {
                    Ok(()) => info!(parent: &span, "connection to the manager ended; dialling again"),
                    Err(e) if attempt == 1 || attempt % 30 == 0 => warn!(parent: &span, "manager unreachable: {e}"),
                    Err(e) => debug!(parent: &span, "manager unreachable: {e}"),
                }
                dialer.forget(&config.manager).await;
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    info!(parent: &span, "vpe agent shutting down");
    if config.stop_vms_on_exit && tokio::time::timeout(STOP_ALL_BOUND, worker.stop_all()).await.is_err() {
        warn!(parent: &span, "stopping the VMs took longer than {STOP_ALL_BOUND:?}");
    }
    endpoint.close(quic_codes::SHUTDOWN, b"vpe agent shutting down");
    Ok(())
}

fn report(config: &AgentConfig, worker: &Worker) -> PopReport {
    let snap = worker.snapshot();
    PopReport {
        max_vms: config.max_vms,
        vms: snap.vms.iter().map(|v| PopVm { name: v.name.clone(), state: v.state.clone() }).collect(),
        accel: snap.accel,
        cached_images: snap.cached_images,
        image_bytes_fetched: worker.fetched.load(Ordering::Relaxed),
        problems: snap.problems,
    }
}

/// One connection to the manager: heartbeats and the manager's requests,
/// until the connection ends.
async fn session(config: &AgentConfig, dialer: &Dialer, worker: &Worker) -> Result<(), String> {
    // Report nothing before the first look at libvirt.
    worker.first_snapshot().await;
    let conn = dialer.connect(&config.manager).await.map_err(|e| e.to_string())?;
    info!("registered with the manager");
    let heartbeats = async {
        let every = Duration::from_millis(config.heartbeat_ms.max(100));
        loop {
            worker.refresh();
            let req = AgentRequest::Heartbeat(report(config, worker));
            match fs_proto::rpc::call::<_, AgentResponse>(&conn, &config.manager.name, &req, every * 5).await {
                Ok(AgentResponse::Ack) => {}
                Err(e) if e.is_unreachable() => return format!("heartbeat failed: {e}"),
                Err(e) => warn!("heartbeat refused: {e}"),
            }
            tokio::time::sleep(every).await;
        }
    };
    let requests = async {
        loop {
            let (mut send, mut recv) = match conn.accept_bi().await {
                Ok(s) => s,
                Err(e) => return format!("connection lost: {e}"),
            };
            let (worker, config) = (worker.clone(), config.clone());
            tokio::spawn(
                async move {
                    let req =
                        match tokio::time::timeout(Duration::from_secs(30), read_msg::<PopRequest>(&mut recv)).await {
                            Ok(Ok(r)) => r,
                            Ok(Err(e)) => return debug!("bad request stream: {e}"),
                            Err(_) => return debug!("request frame timed out"),
                        };
                    let kind = req.kind();
                    let reply = handle(&config, &worker, req).instrument(tracing::info_span!("request", kind)).await;
                    if let Err(e) = &reply {
                        info!(kind, "failed: {e}");
                    }
                    let _ = write_msg(&mut send, &reply).await;
                    let _ = send.finish();
                }
                .in_current_span(),
            );
        }
    };
    let why = tokio::select! {
        why = heartbeats => why,
        why = requests => why,
    };
    conn.close(quic_codes::OK, b"reconnecting");
    Err(why)
}

async fn handle(config: &AgentConfig, worker: &Worker, req: PopRequest) -> PopReply {
    match req {
        PopRequest::Run(run) => {
            info!(vm = %run.name, image = %run.image.path, "run");
            worker.run(run).await.map(PopResponse::Started)
        }
        PopRequest::Stop { name } => worker.stop(name).await.map(|()| PopResponse::Done),
        PopRequest::Save { name, dest } => worker.save(name, dest).await.map(PopResponse::Saved),
        PopRequest::Console { name, max_bytes } => {
            let snap = worker.snapshot();
            let vm = snap
                .vms
                .iter()
                .find(|v| v.name == name)
                .ok_or_else(|| RemoteError::new(ErrorCode::NotFound, format!("no VM named {name} on this PoP")))?;
            let path = vm.console_log.clone();
            tokio::task::spawn_blocking(move || tail(&path, max_bytes))
                .await
                .map_err(|e| RemoteError::new(ErrorCode::Internal, e.to_string()))?
                .map(PopResponse::Console)
        }
        PopRequest::Status => Ok(PopResponse::Status(report(config, worker))),
    }
}

/// The last `max` bytes of a file, as text.
fn tail(path: &std::path::Path, max: u64) -> Result<ConsoleText, RemoteError> {
    let io = |e: std::io::Error| RemoteError::new(ErrorCode::Internal, format!("{}: {e}", path.display()));
    let mut f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let skipped = len.saturating_sub(max);
    f.seek(SeekFrom::Start(skipped)).map_err(io)?;
    let mut bytes = Vec::new();
    f.take(max).read_to_end(&mut bytes).map_err(io)?;
    Ok(ConsoleText { text: String::from_utf8_lossy(&bytes).into_owned(), skipped })
}
