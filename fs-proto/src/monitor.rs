//! Monitoring: what the status page and `/metrics` of the meta server show,
//! and the messages that feed them.
//!
//! - File servers run service checks (in the spirit of INCA) and report
//!   each round with [`MonitorRequest::ReportChecks`]; failures also travel
//!   as heartbeat problems, so `renkei hosts` shows them.
//! - `renkei netcheck` asks the meta server for [`MonitorRequest::Netcheck`];
//!   the meta server orders every live file server to measure the paths
//!   from its peers ([`ProbeRequest::Measure`]): round trips with `Ping`,
//!   throughput by pulling bytes ([`ProbeRequest::Source`]). The result is
//!   the site-to-site [`NetMatrix`] (the original's Table 4).
//! - The VM manager reports VMs per PoP with [`MonitorRequest::ReportVms`].
//! - [`FederationStatus`] is everything the page shows, as one value; the
//!   page fetches it as JSON, `renkei` may fetch it with
//!   [`MonitorRequest::Status`].
//!
//! Durations are integer microseconds and rates integer bytes per second,
//! so every type here compares exactly.

use crate::types::{HostInfo, ServerLoc};
use serde::{Deserialize, Serialize};

/// Check names, in the order a round runs them.
pub mod check_names {
    /// Write a probe replica into the spool (temp file, chunk hashes,
    /// fsync, rename), as a real write does.
    pub const WRITE: &str = "write";
    /// Read the probe back through the verified read path and compare its
    /// BLAKE3 with what was written.
    pub const READ: &str = "read";
    /// Dial our own advertised address over QUIC and get a `Pong`.
    pub const SERVE: &str = "serve";
    /// A round trip to the meta server.
    pub const META: &str = "meta";
}

/// The outcome of one service check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Which check ([`check_names`]).
    pub name: String,
    /// Passed.
    pub ok: bool,
    /// What was found: on failure the reason, in words an operator can act on.
    pub detail: String,
    /// How long it took (µs).
    pub duration_us: u64,
    /// When it ran (ms since the epoch, the server's clock).
    pub at_ms: u64,
}

/// One directed path between two file servers: `to` pulled bytes from
/// `from` (so the rate is what `from -> to` carries, as in the original's
/// Table 4); the RTT is the same both ways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathMeasurement {
    /// Where the bytes came from.
    pub from: ServerLoc,
    /// Who measured (the receiving server).
    pub to: ServerLoc,
    /// Smallest request round trip of the pings (µs).
    pub rtt_us: Option<u64>,
    /// Median request round trip of the pings (µs).
    pub rtt_median_us: Option<u64>,
    /// Throughput, bytes per second of payload (what a copy would reach):
    /// the best of the transfers long enough to time.
    pub rate_bytes_per_s: Option<u64>,
    /// Bytes moved to measure it.
    pub bytes: u64,
    /// When it was measured (ms since the epoch).
    pub at_ms: u64,
    /// Why it could not be measured (fully or partly).
    pub error: Option<String>,
}

/// The site-to-site matrix of the last `renkei netcheck`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetMatrix {
    /// Start (ms since the epoch).
    pub started_ms: u64,
    /// End (ms since the epoch).
    pub finished_ms: u64,
    /// Who asked for it.
    pub requested_by: String,
    /// Every directed path measured.
    pub paths: Vec<PathMeasurement>,
}

/// What `renkei netcheck` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetcheckRequest {
    /// Hosts to include (empty: every live file server).
    pub hosts: Vec<String>,
    /// Pings per path for the RTT.
    pub pings: u32,
    /// Rough time to spend moving bytes per path (ms); 0: RTT only.
    pub transfer_ms: u32,
}

/// Largest number of pings per path a server accepts.
pub const MAX_PINGS: u32 = 1000;
/// Longest transfer time per path a server accepts (ms).
pub const MAX_TRANSFER_MS: u32 = 30_000;
/// Largest single probe transfer a server sends ([`ProbeRequest::Source`]).
pub const MAX_SOURCE_BYTES: u64 = 4 << 30;

/// One VM on a PoP, as the VM manager knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSummary {
    /// VM name.
    pub name: String,
    /// Owner (federation user).
    pub owner: String,
    /// Lifecycle state (`Running`, `Starting`...).
    pub state: String,
}

/// The VMs of one PoP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopVms {
    /// The PoP's host name (its agent uses the PoP's host certificate).
    pub pop: String,
    /// Site.
    pub site: String,
    /// The PoP's agent is connected to the manager.
    pub alive: bool,
    /// VMs it accepts.
    pub max_vms: u32,
    /// Its VMs.
    pub vms: Vec<VmSummary>,
}

/// The latest VM report, as the meta server keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmReport {
    /// Who reported (the manager's host name).
    pub reporter: String,
    /// When it arrived (ms since the epoch).
    pub at_ms: u64,
    /// Per PoP.
    pub pops: Vec<PopVms>,
}

/// How bad an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventLevel {
    /// Something failed.
    Error,
    /// Something may need attention.
    Warning,
    /// Something recovered or changed.
    Info,
}

/// One entry of the recent errors list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// Severity.
    pub level: EventLevel,
    /// The host concerned, if any.
    pub host: Option<String>,
    /// What happened.
    pub message: String,
}

/// Background replication as the status page shows it (the meta server's
/// replication worker: copy counts kept, hosts lost replaced).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationSummary {
    /// Whether the worker runs at all.
    pub enabled: bool,
    /// End of its last pass over the namespace (ms since the epoch; 0: none).
    pub last_pass_ms: u64,
    /// Files short of their copy count.
    pub backlog_files: u64,
    /// Bytes still to copy for them.
    pub backlog_bytes: u64,
    /// Files that cannot reach their copy count now.
    pub stuck_files: u64,
    /// Files with more replicas than wanted, still to trim.
    pub surplus_files: u64,
    /// Copies being made now.
    pub in_flight: u64,
    /// Copies made since the meta server started.
    pub copies_done: u64,
    /// Bytes copied since the meta server started.
    pub bytes_copied: u64,
    /// Copies that failed since the meta server started.
    pub copies_failed: u64,
    /// Hosts down past the grace period, whose replicas are being replaced.
    pub hosts_lost: Vec<String>,
    /// The most recent failure.
    pub last_error: Option<String>,
}

/// One file server on the status page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostStatus {
    /// What the registry knows (liveness, last heartbeat, capacity, free,
    /// load, problems, byte counters).
    pub info: HostInfo,
    /// File bytes received per second, over the last few seconds.
    pub in_bytes_per_s: u64,
    /// File bytes sent per second, over the last few seconds.
    pub out_bytes_per_s: u64,
    /// The latest round of service checks (empty until the first report).
    pub checks: Vec<CheckResult>,
    /// When that round arrived (ms since the epoch; 0: never).
    pub checks_at_ms: u64,
}

/// Everything the status page shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FederationStatus {
    /// When this was made (ms since the epoch).
    pub at_ms: u64,
    /// When the meta server started (ms since the epoch).
    pub meta_started_ms: u64,
    /// A host whose heartbeat is older than this (ms) is down.
    pub host_timeout_ms: u64,
    /// How often the page refreshes itself (ms).
    pub refresh_ms: u64,
    /// File servers, by site then name.
    pub hosts: Vec<HostStatus>,
    /// The last netcheck.
    pub matrix: Option<NetMatrix>,
    /// Background replication (backlog, copies, failures); None when this
    /// meta server has no replication worker to ask.
    pub replication: Option<ReplicationSummary>,
    /// VMs per PoP, when the VM manager reports them.
    pub vms: Option<VmReport>,
    /// Recent errors and recoveries, newest first.
    pub events: Vec<Event>,
}

/// One point of a host's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistorySample {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// Alive at that time.
    pub alive: bool,
    /// Capacity (bytes).
    pub capacity: u64,
    /// Free space (bytes).
    pub free: u64,
    /// File bytes received per second over the interval before `at_ms`.
    pub in_bytes_per_s: u64,
    /// File bytes sent per second over the interval before `at_ms`.
    pub out_bytes_per_s: u64,
    /// Load average × 100.
    pub load_centi: u32,
}

/// A host's trends: a fine series (recent minutes) and a coarse one (hours).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostHistory {
    /// Host name.
    pub host: String,
    /// Site.
    pub site: String,
    /// Interval of the fine series (ms).
    pub fine_step_ms: u64,
    /// Recent samples, oldest first.
    pub fine: Vec<HistorySample>,
    /// Interval of the coarse series (ms).
    pub coarse_step_ms: u64,
    /// Older samples (averaged over each step), oldest first.
    pub coarse: Vec<HistorySample>,
}

/// Requests of the monitoring family (carried in
/// [`crate::meta::MetaRequest::Monitor`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MonitorRequest {
    /// File server: the results of its latest round of service checks.
    ReportChecks(Vec<CheckResult>),
    /// The VM manager: VMs per PoP (replaces the previous report).
    ReportVms(Vec<PopVms>),
    /// Measure every path between live file servers now; answered with the
    /// matrix once done (admins only: admin users and `admin_hosts`; one at a time).
    Netcheck(NetcheckRequest),
    /// The last netcheck's matrix.
    Matrix,
    /// Everything the status page shows.
    Status,
}

impl MonitorRequest {
    /// A stable name per variant, for request counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            MonitorRequest::ReportChecks(_) => "monitor_report_checks",
            MonitorRequest::ReportVms(_) => "monitor_report_vms",
            MonitorRequest::Netcheck(_) => "monitor_netcheck",
            MonitorRequest::Matrix => "monitor_matrix",
            MonitorRequest::Status => "monitor_status",
        }
    }
}

/// Answers of the monitoring family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MonitorResponse {
    /// Taken.
    Done,
    /// A matrix (None: no netcheck yet).
    Matrix(Option<NetMatrix>),
    /// The status.
    Status(Box<FederationStatus>),
}

/// The meta server orders a file server to measure the paths from `peers`
/// to itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasureOrder {
    /// Servers to measure from.
    pub peers: Vec<ServerLoc>,
    /// Pings per peer.
    pub pings: u32,
    /// Rough time to spend pulling bytes per peer (ms); 0: RTT only.
    pub transfer_ms: u32,
}

/// Monitoring requests to a file server (carried in
/// [`crate::server::ServerRequest::Probe`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeRequest {
    /// Measure (from the meta server only). Answered with
    /// [`ProbeResponse::Measured`].
    Measure(MeasureOrder),
    /// Send `bytes` raw bytes (from file servers only). Answered with
    /// [`ProbeResponse::Sourcing`], then exactly `len` raw bytes.
    Source {
        /// Bytes wanted (at most [`MAX_SOURCE_BYTES`]).
        bytes: u64,
    },
}

/// Answers of a file server to [`ProbeRequest`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeResponse {
    /// The paths measured, one per peer.
    Measured(Vec<PathMeasurement>),
    /// `len` raw bytes follow.
    Sourcing {
        /// Bytes that follow.
        len: u64,
    },
}
