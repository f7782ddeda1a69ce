//! Configuration of `renkei-meta`, read from TOML. Every field is documented
//! and has a default except the TLS files; see `fs-meta/meta.toml`.

use fs_proto::endpoint::{TlsFiles, Tuning};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A user with fixed ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Federation user name (the certificate's common name).
    pub name: String,
    /// uid in the namespace.
    pub uid: u32,
    /// Primary gid (defaults to the uid).
    #[serde(default)]
    pub gid: Option<u32>,
    /// Supplementary groups.
    #[serde(default)]
    pub groups: Vec<u32>,
    /// May assert other uids (root-equivalent); for mounts shared by several
    /// local users and for pjdfstest.
    #[serde(default)]
    pub admin: bool,
}

/// `renkei-meta` configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetaConfig {
    /// UDP address of the QUIC endpoint.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory of the sled database (with `[store] kind = "etcd"`: of
    /// the local mirror of etcd's data).
    pub db: PathBuf,
    /// Which engine keeps the metadata: sled in `db` (default) or etcd.
    #[serde(default)]
    pub store: crate::store::StoreConfig,
    /// This host's certificate, key and the federation CA.
    pub tls: TlsFiles,
    /// A file server whose heartbeat is older than this (ms) is down.
    #[serde(default = "default_host_timeout_ms")]
    pub host_timeout_ms: u64,
    /// Lifetime of capabilities handed to clients (s).
    #[serde(default = "default_capability_ttl_secs")]
    pub capability_ttl_secs: u64,
    /// How long (ms) a replica of an old generation is kept before its server
    /// is told to delete it, so readers that opened it can finish.
    #[serde(default = "default_gc_grace_ms")]
    pub gc_grace_ms: u64,
    /// Permission bits of the root directory when the namespace is created.
    #[serde(default = "default_root_mode")]
    pub root_mode: u32,
    /// Register unknown user certificates on first contact.
    #[serde(default = "default_true")]
    pub auto_register_users: bool,
    /// Users with fixed ids or admin rights.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Host certificates granted root in the namespace (and the right to
    /// assert credentials): the VM manager (`vpe serve`). Every other host
    /// acts in the namespace as nobody (uid 65534, no groups), and may
    /// assert no credentials.
    #[serde(default)]
    pub admin_hosts: Vec<String>,
    /// Host certificates granted root under `/vpe` only (if `/vpe` is a
    /// directory root owns): the PoPs whose VM agents read private images
    /// and write saved ones there. A request of theirs that names anything
    /// outside `/vpe` runs as nobody; they may assert no credentials.
    #[serde(default)]
    pub vpe_hosts: Vec<String>,
    /// Host certificates that may act as file servers (heartbeat, register
    /// and report replicas, send their inventory, commit bundles, report
    /// service checks), each only under its own certificate's name. Absent:
    /// any host certificate of the federation.
    #[serde(default)]
    pub file_servers: Option<Vec<String>>,
    /// How long (ms) a caching client (a mount) may trust metadata it was
    /// sent without asking again; changes within a lease are pushed to it.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// Copy count of files that set none (`renkei ncopy`): the background
    /// worker makes sure they have at least this many replicas, and never
    /// removes replicas of such files.
    #[serde(default = "default_ncopy")]
    pub default_ncopy: u32,
    /// Run the background replication worker (keeps copy counts, replaces
    /// replicas of lost hosts, trims surplus).
    #[serde(default = "default_true")]
    pub replication_worker: bool,
    /// A replica on a file server down for longer than this (ms) is
    /// replaced elsewhere; one down for less still counts. When the server
    /// returns, the surplus this left is removed.
    #[serde(default = "default_replica_down_grace_ms")]
    pub replica_down_grace_ms: u64,
    /// The worker looks over every file at least this often (ms); writes,
    /// copy-count changes, bad replicas and hosts going or coming wake it
    /// sooner.
    #[serde(default = "default_replication_interval_ms")]
    pub replication_interval_ms: u64,
    /// Copy orders the worker keeps in flight at once (each a stream of
    /// many files to one destination).
    #[serde(default = "default_replication_parallel")]
    pub replication_parallel: usize,
    /// How long (ms) a request waits for the holder of a directory write
    /// lease (a bundling client) to send what it has pending there and give
    /// the lease back; after that the lease is broken.
    #[serde(default = "default_recall_timeout_ms")]
    pub recall_timeout_ms: u64,
    /// QUIC transport tuning.
    #[serde(default)]
    pub transport: Tuning,
    /// Monitoring: the status page and `/metrics` (off unless `web` is
    /// set), who may see them, and how much history is kept.
    #[serde(default)]
    pub monitor: crate::monitor::config::MonitorConfig,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 7470))
}
fn default_host_timeout_ms() -> u64 {
    6_000
}
fn default_capability_ttl_secs() -> u64 {
    600
}
fn default_gc_grace_ms() -> u64 {
    10_000
}
fn default_root_mode() -> u32 {
    0o1777
}
fn default_lease_ms() -> u64 {
    60_000
}
fn default_true() -> bool {
    true
}
fn default_ncopy() -> u32 {
    1
}
fn default_replica_down_grace_ms() -> u64 {
    600_000
}
fn default_replication_interval_ms() -> u64 {
    60_000
}
fn default_replication_parallel() -> usize {
    4
}
fn default_recall_timeout_ms() -> u64 {
    10_000
}

impl MetaConfig {
    /// A config with defaults for everything but the paths.
    pub fn new(db: PathBuf, tls: TlsFiles) -> Self {
        MetaConfig {
            listen: default_listen(),
            db,
            store: Default::default(),
            tls,
            host_timeout_ms: default_host_timeout_ms(),
            capability_ttl_secs: default_capability_ttl_secs(),
            gc_grace_ms: default_gc_grace_ms(),
            root_mode: default_root_mode(),
            auto_register_users: true,
            users: Vec::new(),
            admin_hosts: Vec::new(),
            vpe_hosts: Vec::new(),
            file_servers: None,
            lease_ms: default_lease_ms(),
            default_ncopy: default_ncopy(),
            replication_worker: true,
            replica_down_grace_ms: default_replica_down_grace_ms(),
            replication_interval_ms: default_replication_interval_ms(),
            replication_parallel: default_replication_parallel(),
            recall_timeout_ms: default_recall_timeout_ms(),
            transport: Tuning::default(),
            monitor: Default::default(),
        }
    }

    /// Read from a TOML file; relative paths are relative to its directory.
    /// A fault is reported with its line and field.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let mut cfg: MetaConfig = fs_proto::config::load(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.tls.resolve(base);
        if cfg.db.is_relative() {
            cfg.db = base.join(&cfg.db);
        }
        cfg.store.validate().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(cfg)
    }
}
