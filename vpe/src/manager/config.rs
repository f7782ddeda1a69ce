//! The manager's configuration (`vpe serve --config manager.toml`; see
//! `vpe/manager.toml` for a documented sample). Tests build the struct.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fs_proto::endpoint::{TlsFiles, Tuning};
use serde::{Deserialize, Serialize};

use crate::placement::{Strategy, UserLimits};

/// What one user may do and what they are given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Sites the user may run VMs at; absent: every site.
    #[serde(default)]
    pub allowed_sites: Option<BTreeSet<String>>,
    /// VMs the user may run at once, federation-wide.
    #[serde(default = "default_user_max_vms")]
    pub max_vms: u32,
    /// SSH public keys injected into every VM of the user.
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// The user's static addresses per segment (`lab = ["10.1.0.5/24"]`);
    /// each VM gets the first one no other VM of the user holds.
    #[serde(default)]
    pub addresses: BTreeMap<String, Vec<String>>,
}

fn default_user_max_vms() -> u32 {
    2
}

impl UserConfig {
    /// The limits placement checks.
    pub fn limits(&self) -> UserLimits {
        UserLimits { allowed_sites: self.allowed_sites.clone(), max_vms: self.max_vms }
    }
}

/// `vpe serve` configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagerConfig {
    /// UDP address of the manager's QUIC endpoint (users and agents dial it).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Directory for the VM registry (`vms.json`).
    pub state_dir: PathBuf,
    /// The meta server of the namespace holding images and templates.
    pub meta: fs_proto::rpc::MetaAddrs,
    /// The site the manager is at (where the records it writes are stored).
    pub site: String,
    /// The manager's host certificate, key and the federation CA.
    pub tls: TlsFiles,
    /// How a site's PoP is chosen: `least-loaded` (ties round robin) or `round-robin`.
    #[serde(default)]
    pub strategy: Strategy,
    /// A PoP not heard from for this long (ms) is down.
    #[serde(default = "default_agent_timeout_ms")]
    pub agent_timeout_ms: u64,
    /// Bound on one run: staging, booting and waiting for the guest (s).
    #[serde(default = "default_run_timeout_secs")]
    pub run_timeout_secs: u64,
    /// Bound on one save: flattening and writing the disk back (s).
    #[serde(default = "default_save_timeout_secs")]
    pub save_timeout_secs: u64,
    /// Virtual CPUs when a run names none.
    #[serde(default = "default_cpus")]
    pub default_cpus: u32,
    /// Memory (MiB) when a run names none.
    #[serde(default = "default_memory_mib")]
    pub default_memory_mib: u64,
    /// Swap disk (MiB) of every VM.
    #[serde(default = "default_swap_mib")]
    pub swap_mib: u64,
    /// Most virtual CPUs one VM may have.
    #[serde(default = "default_max_cpus")]
    pub max_cpus: u32,
    /// Most memory (MiB) one VM may have.
    #[serde(default = "default_max_memory_mib")]
    pub max_memory_mib: u64,
    /// Host certificates allowed to act as PoP agents (each must name its
    /// site). No other host is accepted as an agent: absent or empty, none.
    #[serde(default)]
    pub agents: BTreeSet<String>,
    /// Users, by federation name. Users not listed get `default_user`, or no VMs.
    #[serde(default)]
    pub users: BTreeMap<String, UserConfig>,
    /// Limits of users not listed in `users` (absent: they may not run VMs).
    #[serde(default)]
    pub default_user: Option<UserConfig>,
    /// QUIC transport tuning.
    #[serde(default)]
    pub transport: Tuning,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 7480))
}
fn default_agent_timeout_ms() -> u64 {
    5_000
}
fn default_run_timeout_secs() -> u64 {
    600
}
fn default_save_timeout_secs() -> u64 {
    900
}
fn default_cpus() -> u32 {
    1
}
fn default_memory_mib() -> u64 {
    256
}
fn default_swap_mib() -> u64 {
    64
}
fn default_max_cpus() -> u32 {
    8
}
fn default_max_memory_mib() -> u64 {
    16 * 1024
}

impl ManagerConfig {
    /// A configuration with defaults for everything optional.
    pub fn new(state_dir: PathBuf, meta: impl Into<fs_proto::rpc::MetaAddrs>, site: String, tls: TlsFiles) -> Self {
        Self {
            listen: default_listen(),
            state_dir,
            meta: meta.into(),
            site,
            tls,
            strategy: Strategy::default(),
            agent_timeout_ms: default_agent_timeout_ms(),
            run_timeout_secs: default_run_timeout_secs(),
            save_timeout_secs: default_save_timeout_secs(),
            default_cpus: default_cpus(),
            default_memory_mib: default_memory_mib(),
            swap_mib: default_swap_mib(),
            max_cpus: default_max_cpus(),
            max_memory_mib: default_max_memory_mib(),
            agents: BTreeSet::new(),
            users: BTreeMap::new(),
            default_user: None,
            transport: Tuning::default(),
        }
    }

    /// Reads a TOML file; relative paths are relative to its directory.
    pub fn load(path: &Path) -> Result<Self, String> {
        let mut config: Self = fs_proto::config::load(path).map_err(|e| e.to_string())?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.tls.resolve(base);
        if config.state_dir.is_relative() {
            config.state_dir = base.join(&config.state_dir);
        }
        Ok(config)
    }

    /// The configuration of `user`, if they may run VMs at all.
    pub fn user(&self, user: &str) -> Option<&UserConfig> {
        self.users.get(user).or(self.default_user.as_ref())
    }

    /// The agent silence after which a PoP is down.
    pub fn agent_timeout(&self) -> Duration {
        Duration::from_millis(self.agent_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("manager.toml");
        let c = ManagerConfig::load(&path).unwrap();
        assert_eq!(c.strategy, Strategy::LeastLoaded);
        let alice = c.user("alice").unwrap();
        assert_eq!(alice.addresses["lab"], vec!["10.10.0.11/24".to_string(), "10.10.0.12/24".to_string()]);
        assert!(c.tls.ca.is_absolute());
        assert!(c.user("mallory").is_none(), "unlisted users get no VMs without default_user");
    }
}
