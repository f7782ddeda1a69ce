//! The replication worker's status as the status page shows it: backlog,
//! copies in flight and done, failures, hosts being replaced.
//!
//! This meta server has no background replication worker yet, so there is
//! nothing to show: the page says so and `/metrics` leaves the
//! `renkei_replication_*` families without samples.

use crate::service::MetaService;
use fs_proto::monitor::ReplicationSummary;

/// The worker's status now (None: no worker to ask).
pub fn summary(_svc: &MetaService) -> Option<ReplicationSummary> {
    None
}
