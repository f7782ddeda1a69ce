//! [`build`]: the federation as the status page shows it, assembled from
//! the host registry, the replication worker's status and what
//! [`super::Monitor`] keeps.

use crate::service::MetaService;
use fs_proto::monitor::{FederationStatus, HostStatus};
use fs_proto::Timestamp;

/// The status now.
pub fn build(svc: &MetaService) -> FederationStatus {
    let m = &svc.monitor;
    let hosts = svc
        .hosts
        .list(&m.replica_counts())
        .into_iter()
        .map(|info| {
            let (in_bytes_per_s, out_bytes_per_s) = m.rates(&info.host);
            let (checks_at_ms, checks) = m.checks_of(&info.host);
            HostStatus { info, in_bytes_per_s, out_bytes_per_s, checks, checks_at_ms }
        })
        .collect();
    FederationStatus {
        at_ms: Timestamp::now().as_millis(),
        meta_started_ms: m.started_ms,
        host_timeout_ms: m.host_timeout_ms,
        refresh_ms: m.config.refresh_ms,
        hosts,
        matrix: m.matrix(),
        replication: super::backlog::summary(svc),
        vms: m.vm_report(),
        events: m.events.recent(),
    }
}
