//! The `[monitor]` table of `renkei-meta`'s configuration: where the status
//! page and `/metrics` are served, who may see them, and how much history
//! is kept.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Monitoring settings. Every field has a default; the web server is off
/// until `web` names an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// TCP address of the status page and `/metrics` (HTTP, read-only),
    /// e.g. `127.0.0.1:7478`. None: not served.
    pub web: Option<SocketAddr>,
    /// Networks (CIDR) whose clients may see the page and the metrics;
    /// everyone else gets 403. Default: loopback only.
    pub allow: Vec<String>,
    /// How often the page refreshes itself (ms).
    pub refresh_ms: u64,
    /// How often the host registry is sampled for rates and history (ms).
    pub sample_ms: u64,
    /// Recent samples kept per host at `sample_ms` (300 at 1 s: 5 minutes).
    pub fine_samples: usize,
    /// Interval of the long history (s): samples averaged over it.
    pub coarse_step_secs: u64,
    /// Long-history samples kept per host (360 at 60 s: 6 hours).
    pub coarse_samples: usize,
    /// Recent errors and recoveries kept for the page.
    pub events: usize,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            web: None,
            allow: vec!["127.0.0.0/8".into(), "::1/128".into()],
            refresh_ms: 1_000,
            sample_ms: 1_000,
            fine_samples: 300,
            coarse_step_secs: 60,
            coarse_samples: 360,
            events: 200,
        }
    }
}
