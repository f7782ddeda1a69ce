//! `renkei netcheck` on the meta server: order every live file server, one
//! at a time, to measure the paths from each of its peers (round trips with
//! pings, throughput by pulling bytes), and keep the matrix for the page.
//! Servers measure one after another so no two paths share a link or CPU
//! while being measured.

use crate::service::MetaService;
use fs_proto::frame::write_msg;
use fs_proto::meta::{MetaCall, MetaReply, MetaRequest, MetaResponse};
use fs_proto::monitor::{
    EventLevel, MeasureOrder, MonitorResponse, NetMatrix, NetcheckRequest, PathMeasurement, ProbeRequest,
    ProbeResponse, MAX_PINGS, MAX_TRANSFER_MS,
};
use fs_proto::rpc::PeerAddr;
use fs_proto::server::{ServerRequest, ServerResponse};
use fs_proto::{ErrorCode, Identity, RemoteError, ServerLoc, Timestamp};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, Instrument};

/// Bound on one server's measurements of one peer beyond its transfer time.
const PER_PEER_SLACK: Duration = Duration::from_secs(20);

/// May `id` run a netcheck? Admins (admin users and `admin_hosts`): it
/// floods every link.
fn allowed(svc: &MetaService, id: &Identity) -> bool {
    let call = MetaCall { cred: None, req: MetaRequest::WhoAmI };
    matches!(svc.handle(id, call), Ok(MetaResponse::WhoAmI(w)) if w.admin)
}

/// Serve a netcheck request on its stream: measure, answer with the matrix.
pub async fn serve(svc: Arc<MetaService>, id: Identity, req: NetcheckRequest, mut send: quinn::SendStream) {
    let span = tracing::info_span!("netcheck", by = %id.name);
    let reply: MetaReply = async {
        if !allowed(&svc, &id) {
            return Err(RemoteError::new(
                ErrorCode::NotPermitted,
                "netcheck is reserved for admins (admin users and the meta server's `admin_hosts`)",
            ));
        }
        run(&svc, &id.name, req).await.map(|m| MetaResponse::Monitor(MonitorResponse::Matrix(Some(m))))
    }
    .instrument(span)
    .await;
    let _ = write_msg(&mut send, &reply).await;
    let _ = send.finish();
}

/// The servers to measure: live ones, optionally only those named.
fn targets(svc: &MetaService, names: &[String]) -> Result<Vec<ServerLoc>, RemoteError> {
    let live: Vec<ServerLoc> = svc
        .hosts
        .list(&HashMap::new())
        .into_iter()
        .filter(|h| h.alive && (names.is_empty() || names.contains(&h.host)))
        .map(|h| ServerLoc { host: h.host, site: h.site, addr: h.addr })
        .collect();
    if let Some(missing) = names.iter().find(|n| !live.iter().any(|l| &&l.host == n)) {
        return Err(RemoteError::new(ErrorCode::NotFound, format!("{missing} is not a live file server")));
    }
    if live.len() < 2 {
        return Err(RemoteError::new(ErrorCode::NoServer, "a netcheck needs at least two live file servers"));
    }
    Ok(live)
}

/// Measure every directed path between the chosen servers.
pub async fn run(svc: &MetaService, by: &str, req: NetcheckRequest) -> Result<NetMatrix, RemoteError> {
    let m = &svc.monitor;
    let _one = m
        .netcheck
        .try_lock()
        .map_err(|_| RemoteError::new(ErrorCode::Unavailable, "a netcheck is running; try again when it is done"))?;
    let dialer = m
        .dialer
        .get()
        .cloned()
        .ok_or_else(|| RemoteError::new(ErrorCode::Unavailable, "meta server not serving yet"))?;
    let servers = targets(svc, &req.hosts)?;
    let pings = req.pings.clamp(1, MAX_PINGS);
    let transfer_ms = req.transfer_ms.min(MAX_TRANSFER_MS);
    let started_ms = Timestamp::now().as_millis();
    info!(servers = servers.len(), pings, transfer_ms, "netcheck started");
    let mut paths = Vec::new();
    for to in &servers {
        let peers: Vec<ServerLoc> = servers.iter().filter(|s| s.host != to.host).cloned().collect();
        let per_peer = Duration::from_millis(transfer_ms as u64 * 4 + pings as u64 * 2_000) + PER_PEER_SLACK;
        let bound = per_peer * peers.len() as u32;
        let order =
            ServerRequest::Probe(ProbeRequest::Measure(MeasureOrder { peers: peers.clone(), pings, transfer_ms }));
        let peer = PeerAddr { addr: to.addr, name: to.host.clone() };
        let failed = |why: String| -> Vec<PathMeasurement> {
            peers
                .iter()
                .map(|from| PathMeasurement {
                    from: from.clone(),
                    to: to.clone(),
                    rtt_us: None,
                    rtt_median_us: None,
                    rate_bytes_per_s: None,
                    bytes: 0,
                    at_ms: Timestamp::now().as_millis(),
                    error: Some(why.clone()),
                })
                .collect()
        };
        let got = match dialer.call::<_, ServerResponse>(&peer, &order, bound).await {
            Ok(ServerResponse::Probe(ProbeResponse::Measured(p))) => p,
            Ok(other) => failed(format!("unexpected answer from {}: {other:?}", to.host)),
            Err(e) => failed(format!("{} could not measure: {e}", to.host)),
        };
        for p in got.iter().filter(|p| p.error.is_some()) {
            let why = p.error.as_deref().unwrap_or_default();
            m.events.record(
                EventLevel::Warning,
                Some(&p.to.host),
                format!("netcheck {} -> {}: {why}", p.from.host, p.to.host),
            );
        }
        paths.extend(got);
    }
    let matrix =
        NetMatrix { started_ms, finished_ms: Timestamp::now().as_millis(), requested_by: by.to_string(), paths };
    info!(paths = matrix.paths.len(), secs = (matrix.finished_ms - started_ms) / 1000, "netcheck done");
    m.set_matrix(matrix.clone());
    Ok(matrix)
}
