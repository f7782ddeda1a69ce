//! Configuration of `renkei-server`, read from TOML; see
//! `fs-server/server.toml` for a documented sample.

use crate::streams::StreamLimits;
use fs_proto::endpoint::{TlsFiles, Tuning};
use fs_proto::rpc::MetaAddrs;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// `renkei-server` configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// UDP address of the QUIC endpoint.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Address clients should dial (defaults to `listen`, which must then
    /// be a concrete address, not 0.0.0.0).
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// Spool directory holding the replicas.
    pub spool: PathBuf,
    /// The meta server: one `{ addr, name }`, or a list of them (the
    /// active/standby meta servers of an etcd store; the one that leads
    /// answers).
    pub meta: MetaAddrs,
    /// This host's certificate, key and the federation CA.
    pub tls: TlsFiles,
    /// Heartbeat interval (ms).
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Capacity to report, in bytes (defaults to the spool file system's).
    #[serde(default)]
    pub capacity: Option<u64>,
    /// Service checks (write, read back, serve, reach meta) run this often
    /// (ms); 0 turns them off.
    #[serde(default = "default_check_interval_ms")]
    pub check_interval_ms: u64,
    /// QUIC transport tuning.
    #[serde(default)]
    pub transport: Tuning,
    /// Bounds on what one stream, connection and user may hold.
    #[serde(default)]
    pub streams: StreamLimits,
    /// Join a meta server of another namespace than the one this spool's
    /// replicas belong to, deleting them (they are unknown there). Off by
    /// default: a server pointed at the wrong or a rebuilt meta server
    /// refuses to start instead of emptying its spool.
    #[serde(default)]
    pub forget_spool: bool,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 7471))
}
fn default_heartbeat_ms() -> u64 {
    1_000
}
fn default_check_interval_ms() -> u64 {
    10_000
}

impl ServerConfig {
    /// A config with defaults for everything but what must be given.
    pub fn new(spool: PathBuf, meta: impl Into<MetaAddrs>, tls: TlsFiles) -> Self {
        ServerConfig {
            listen: default_listen(),
            advertise: None,
            spool,
            meta: meta.into(),
            tls,
            heartbeat_ms: default_heartbeat_ms(),
            capacity: None,
            check_interval_ms: default_check_interval_ms(),
            transport: Tuning::default(),
            streams: StreamLimits::default(),
            forget_spool: false,
        }
    }

    /// Read from a TOML file; relative paths are relative to its directory.
    /// A fault is reported with its line and field.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let mut cfg: ServerConfig = fs_proto::config::load(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.tls.resolve(base);
        if cfg.spool.is_relative() {
            cfg.spool = base.join(&cfg.spool);
        }
        Ok(cfg)
    }
}
