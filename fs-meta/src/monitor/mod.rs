//! Monitoring on the meta server (the original's Munin + INCA + VGXP):
//! what the status page and `/metrics` show, and the small web server
//! (the "web role") that serves them.
//!
//! The meta server already hears every file server's heartbeat (liveness,
//! capacity, free space, load, byte counters, problems) and runs the
//! replication worker, so the figures are here; [`Monitor`] adds what
//! arrives only for monitoring (service-check rounds, VM reports, the
//! netcheck matrix), a sampler that turns heartbeats into rates, history
//! and events, and [`web`] serves it all over HTTP, read-only, to the
//! networks the configuration allows.
//!
//! # Layout
//! - [`config`]: the `[monitor]` configuration table.
//! - [`backlog`]: the replication worker's status, as the page shows it.
//! - [`history`]: rates and bounded trends per host (sans IO).
//! - [`events`]: recent errors and recoveries.
//! - [`status`]: the [`FederationStatus`] the page shows.
//! - [`metrics`]: the Prometheus text format.
//! - [`netcheck`]: measuring every path between file servers.
//! - [`web`]: the HTTP server (axum) and the page's assets.

pub mod backlog;
pub mod config;
pub mod events;
pub mod guard;
pub mod history;
pub mod metrics;
pub mod netcheck;
pub mod status;
pub mod web;

use crate::service::MetaService;
use crate::MetaError;
use config::MonitorConfig;
use events::Events;
use fs_proto::monitor::{
    CheckResult, EventLevel, HostHistory, MonitorRequest, MonitorResponse, NetMatrix, PopVms, ReplicationSummary,
    VmReport,
};
use fs_proto::rpc::Dialer;
use fs_proto::{ErrorCode, HostInfo, Identity, RemoteError, Timestamp};
use history::{Bounds, Change, Tracker};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Replica counts per host are recomputed at most this often.
const REPLICA_COUNT_EVERY: Duration = Duration::from_secs(10);

/// Monitoring state of the meta server.
pub struct Monitor {
    config: MonitorConfig,
    host_timeout_ms: u64,
    started_ms: u64,
    checks: Mutex<HashMap<String, (u64, Vec<CheckResult>)>>,
    matrix: Mutex<Option<NetMatrix>>,
    vms: Mutex<Option<VmReport>>,
    events: Events,
    tracker: Mutex<Tracker>,
    last_replication: Mutex<Option<ReplicationSummary>>,
    replica_counts: Mutex<HashMap<String, u64>>,
    netcheck: tokio::sync::Mutex<()>,
    dialer: OnceLock<Dialer>,
    web_addr: OnceLock<SocketAddr>,
    /// Connections the page holds open ([`guard`]).
    web_open: guard::OpenCount,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Monitor {
    /// Fresh state for a meta server configured so.
    pub fn new(meta: &crate::MetaConfig) -> Self {
        let config = meta.monitor.clone();
        let bounds = Bounds {
            fine_step_ms: config.sample_ms.max(100),
            fine_samples: config.fine_samples,
            coarse_step_ms: config.coarse_step_secs.max(1) * 1000,
            coarse_samples: config.coarse_samples,
        };
        Monitor {
            events: Events::new(config.events),
            config,
            host_timeout_ms: meta.host_timeout_ms,
            started_ms: Timestamp::now().as_millis(),
            checks: Mutex::new(HashMap::new()),
            matrix: Mutex::new(None),
            vms: Mutex::new(None),
            tracker: Mutex::new(Tracker::new(bounds)),
            last_replication: Mutex::new(None),
            replica_counts: Mutex::new(HashMap::new()),
            netcheck: tokio::sync::Mutex::new(()),
            dialer: OnceLock::new(),
            web_addr: OnceLock::new(),
            web_open: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &MonitorConfig {
        &self.config
    }

    /// Where the status page is served, once it is.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web_addr.get().copied()
    }

    /// How many connections the page holds open, seen at every change.
    pub fn web_connections(&self) -> tokio::sync::watch::Receiver<usize> {
        self.web_open.subscribe()
    }

    /// Recent errors and recoveries.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// The last netcheck's matrix.
    pub fn matrix(&self) -> Option<NetMatrix> {
        lock(&self.matrix).clone()
    }

    /// Every host's trends.
    pub fn history(&self) -> Vec<HostHistory> {
        lock(&self.tracker).history()
    }

    /// Take a round of service checks from `host`. Failures reach the
    /// events through the host's heartbeat problems, so they are not
    /// recorded twice here.
    fn report_checks(&self, host: &str, checks: Vec<CheckResult>) {
        lock(&self.checks).insert(host.to_string(), (Timestamp::now().as_millis(), checks));
    }

    fn report_vms(&self, reporter: &str, pops: Vec<PopVms>) {
        let report = VmReport { reporter: reporter.to_string(), at_ms: Timestamp::now().as_millis(), pops };
        *lock(&self.vms) = Some(report);
    }

    /// Take the registry and the replication status at `now_ms`: rates,
    /// history, and events for what changed.
    pub fn sample(&self, now_ms: u64, hosts: &[HostInfo], repl: Option<&ReplicationSummary>) {
        let changes = lock(&self.tracker).observe(now_ms, hosts);
        for c in changes {
            match c {
                Change::Down { host, last_heartbeat_ms } => {
                    let ago = now_ms.saturating_sub(last_heartbeat_ms) as f64 / 1000.0;
                    self.events.record(
                        EventLevel::Error,
                        Some(&host),
                        format!("{host} is down: no heartbeat for {ago:.1} s"),
                    );
                }
                Change::Up { host } => self.events.record(EventLevel::Info, Some(&host), format!("{host} is up")),
                Change::Problem { host, problem } => {
                    self.events.record(EventLevel::Error, Some(&host), format!("{host}: {problem}"))
                }
                Change::Resolved { host, problem } => {
                    self.events.record(EventLevel::Info, Some(&host), format!("{host}: resolved: {problem}"))
                }
            }
        }
        let Some(repl) = repl else { return };
        let mut last = lock(&self.last_replication);
        if let Some(prev) = last.as_ref() {
            if repl.copies_failed > prev.copies_failed {
                let n = repl.copies_failed - prev.copies_failed;
                let why = repl.last_error.as_deref().unwrap_or("no reason given");
                self.events.record(EventLevel::Warning, None, format!("replication: {n} copy(ies) failed: {why}"));
            }
            for h in repl.hosts_lost.iter().filter(|h| !prev.hosts_lost.contains(h)) {
                self.events.record(
                    EventLevel::Error,
                    Some(h),
                    format!("replication: {h} is down past the grace period; its replicas are being replaced"),
                );
            }
        }
        *last = Some(repl.clone());
    }

    /// (in, out) bytes per second of a host.
    pub fn rates(&self, host: &str) -> (u64, u64) {
        lock(&self.tracker).rates(host)
    }

    fn checks_of(&self, host: &str) -> (u64, Vec<CheckResult>) {
        lock(&self.checks).get(host).cloned().unwrap_or_default()
    }

    fn vm_report(&self) -> Option<VmReport> {
        lock(&self.vms).clone()
    }

    fn replica_counts(&self) -> HashMap<String, u64> {
        lock(&self.replica_counts).clone()
    }

    fn set_matrix(&self, m: NetMatrix) {
        *lock(&self.matrix) = Some(m);
    }
}

/// Handle a monitoring request that answers at once (netcheck runs on its
/// own stream: see [`netcheck::serve`]).
pub fn handle(svc: &MetaService, id: &Identity, req: MonitorRequest) -> Result<MonitorResponse, RemoteError> {
    let m = &svc.monitor;
    Ok(match req {
        MonitorRequest::ReportChecks(checks) => {
            svc.users.file_server(id, "reporting service checks")?;
            m.report_checks(&id.name, checks);
            MonitorResponse::Done
        }
        MonitorRequest::ReportVms(pops) => {
            svc.users.admin_host(id, "reporting VMs")?;
            m.report_vms(&id.name, pops);
            MonitorResponse::Done
        }
        MonitorRequest::Matrix => MonitorResponse::Matrix(m.matrix()),
        MonitorRequest::Status => MonitorResponse::Status(Box::new(status::build(svc))),
        MonitorRequest::Netcheck(_) => {
            return Err(RemoteError::new(ErrorCode::InvalidArgument, "netcheck cannot be batched"));
        }
    })
}

/// The running monitoring tasks: the sampler and the web server.
pub struct Background {
    exit: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    /// Stop the tasks and wait for them (bounded).
    pub async fn stop(self) {
        let _ = self.exit.send(true);
        for mut t in self.tasks {
            if tokio::time::timeout(Duration::from_secs(5), &mut t).await.is_err() {
                t.abort();
            }
        }
    }
}

/// Start sampling, keep `endpoint` for netcheck orders, and serve the page
/// if configured. Fails only if the page's address cannot be bound.
pub async fn start(svc: Arc<MetaService>, endpoint: &quinn::Endpoint) -> Result<Background, MetaError> {
    let _ = svc.monitor.dialer.set(Dialer::new(endpoint.clone(), Duration::from_secs(10)));
    let (exit, rx) = watch::channel(false);
    let mut tasks = vec![tokio::spawn(sample_loop(svc.clone(), rx.clone()))];
    if let Some(addr) = svc.monitor.config.web {
        let web_err = |e: String| MetaError::Web(format!("status page at {addr}: {e}"));
        let allow = web::Allow::parse(&svc.monitor.config.allow).map_err(web_err)?;
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| web_err(e.to_string()))?;
        let bound = listener.local_addr().map_err(|e| web_err(e.to_string()))?;
        let _ = svc.monitor.web_addr.set(bound);
        tracing::info!(addr = %bound, "status page at http://{bound}/ (metrics at /metrics)");
        tasks.push(tokio::spawn(web::serve(svc, listener, allow, rx)));
    }
    Ok(Background { exit, tasks })
}

async fn sample_loop(svc: Arc<MetaService>, mut exit: watch::Receiver<bool>) {
    let every = Duration::from_millis(svc.monitor.config.sample_ms.max(100));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut counted: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = exit.changed() => if r.is_err() || *exit.borrow() { break } else { continue },
        }
        let hosts = svc.hosts.list(&HashMap::new());
        svc.monitor.sample(Timestamp::now().as_millis(), &hosts, backlog::summary(&svc).as_ref());
        if counted.is_none_or(|t| t.elapsed() >= REPLICA_COUNT_EVERY) {
            counted = Some(tokio::time::Instant::now());
            let s = svc.clone();
            // A scan of every replica record: off the async threads.
            let counts = tokio::task::spawn_blocking(move || {
                let mut counts = HashMap::new();
                if let Ok(all) = s.ns.all_replicas() {
                    for (host, _, _) in all {
                        *counts.entry(host).or_insert(0u64) += 1;
                    }
                }
                counts
            })
            .await;
            if let Ok(c) = counts {
                *lock(&svc.monitor.replica_counts) = c;
            }
        }
    }
}
