//! VMs per PoP for the meta server's status page: every few seconds the
//! manager sends `MonitorRequest::ReportVms` (each PoP agent it knows, its
//! liveness and limit, and the VMs the registry places there) over the
//! connection its namespace client already has. Best effort: a meta server
//! that cannot be reached just misses a report.

use super::Manager;
use fs_proto::meta::{MetaCall, MetaRequest, MetaResponse};
use fs_proto::monitor::{MonitorRequest, PopVms, VmSummary};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::debug;

/// How often the manager reports.
const EVERY: Duration = Duration::from_secs(2);
/// Bound on one report.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Report until the task is dropped.
pub(super) async fn run(m: Arc<Manager>) {
    loop {
        let call = MetaCall { cred: None, req: MetaRequest::Monitor(MonitorRequest::ReportVms(pop_vms(&m))) };
        let client = m.ns.client();
        if let Err(e) = client.meta().peers().call::<_, MetaResponse>(client.data().dialer(), &call, TIMEOUT).await {
            debug!("VM report not delivered to the meta server: {e}");
        }
        tokio::time::sleep(EVERY).await;
    }
}

/// Every known PoP with the VMs the registry places on it.
fn pop_vms(m: &Manager) -> Vec<PopVms> {
    let s = m.lock();
    let vms: Vec<_> = s.registry.vms.values().map(|v| v.to_info()).collect();
    s.agents
        .infos(&s.registry, m.config.agent_timeout(), Instant::now())
        .into_iter()
        .map(|p| PopVms {
            vms: vms
                .iter()
                .filter(|v| v.pop == p.name)
                .map(|v| VmSummary { name: v.name.clone(), owner: v.owner.clone(), state: format!("{:?}", v.phase) })
                .collect(),
            pop: p.name,
            site: p.site,
            alive: p.alive,
            max_vms: p.max_vms,
        })
        .collect()
}
