//! Monitoring from the client's side: `renkei netcheck` (the meta server
//! orders every file server to measure the paths from its peers and answers
//! with the matrix) and the federation status the status page shows.

use crate::error::ClientError;
use crate::Client;
use fs_proto::meta::{MetaCall, MetaRequest, MetaResponse};
use fs_proto::monitor::{FederationStatus, MonitorRequest, MonitorResponse, NetMatrix, NetcheckRequest};
use std::time::Duration;

type Result<T> = std::result::Result<T, ClientError>;

async fn monitor_call(client: &Client, req: MonitorRequest, timeout: Duration) -> Result<MonitorResponse> {
    let call = MetaCall { cred: None, req: MetaRequest::Monitor(req) };
    let dialer = client.data().dialer();
    match client.meta().peers().call::<_, MetaResponse>(dialer, &call, timeout).await? {
        MetaResponse::Monitor(m) => Ok(m),
        other => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}

/// A bound for a netcheck of `servers` file servers: every directed path's
/// pings and transfers, with room to spare.
pub fn netcheck_bound(servers: usize, req: &NetcheckRequest) -> Duration {
    let paths = (servers.max(2) * (servers.max(2) - 1)) as u64;
    let per_path_ms = req.transfer_ms as u64 * 4 + req.pings as u64 * 200 + 20_000;
    Duration::from_millis(paths * per_path_ms + 30_000)
}

/// Measure every path between live file servers (admins only); waits at
/// most `timeout`.
pub async fn netcheck(client: &Client, req: NetcheckRequest, timeout: Duration) -> Result<NetMatrix> {
    match monitor_call(client, MonitorRequest::Netcheck(req), timeout).await? {
        MonitorResponse::Matrix(Some(m)) => Ok(m),
        other => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}

/// The last netcheck's matrix, if any.
pub async fn matrix(client: &Client) -> Result<Option<NetMatrix>> {
    match monitor_call(client, MonitorRequest::Matrix, Duration::from_secs(30)).await? {
        MonitorResponse::Matrix(m) => Ok(m),
        other => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}

/// Everything the status page shows.
pub async fn status(client: &Client) -> Result<FederationStatus> {
    match monitor_call(client, MonitorRequest::Status, Duration::from_secs(30)).await? {
        MonitorResponse::Status(s) => Ok(*s),
        other => Err(ClientError::Unexpected(format!("{other:?}"))),
    }
}
