//! The replication worker's status as the status page shows it: backlog,
//! copies in flight and done, failures, hosts being replaced.

use crate::service::MetaService;
use fs_proto::monitor::ReplicationSummary;

/// The worker's status now.
pub fn summary(svc: &MetaService) -> Option<ReplicationSummary> {
    let r = svc.replication.status();
    Some(ReplicationSummary {
        enabled: r.enabled,
        last_pass_ms: r.last_pass_ms,
        backlog_files: r.backlog_files,
        backlog_bytes: r.backlog_bytes,
        stuck_files: r.stuck_files,
        surplus_files: r.surplus_files,
        in_flight: r.in_flight,
        copies_done: r.copies_done,
        bytes_copied: r.bytes_copied,
        copies_failed: r.copies_failed,
        hosts_lost: r.hosts_lost,
        last_error: r.last_error,
    })
}
