//! The PoP agent's configuration (`vpe agent --config agent.toml`; see
//! `vpe/agent.toml` for a documented sample). Tests build the struct.

use std::path::{Path, PathBuf};

use fs_proto::endpoint::{TlsFiles, Tuning};
use fs_proto::rpc::PeerAddr;
use serde::{Deserialize, Serialize};

use crate::config::HostConfig;

/// `vpe agent` configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The manager to register with.
    pub manager: PeerAddr,
    /// The meta server of the namespace images are read from and saved to.
    pub meta: fs_proto::rpc::MetaAddrs,
    /// This PoP's host certificate (its name is the PoP's name, its site the
    /// PoP's site), key, and the federation CA.
    pub tls: TlsFiles,
    /// VMs this PoP accepts at once.
    #[serde(default = "default_max_vms")]
    pub max_vms: u32,
    /// Heartbeat interval (ms).
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Stop every VM of this PoP when the agent is asked to exit (what
    /// `renkei local down` wants); otherwise VMs outlive an agent restart.
    #[serde(default)]
    pub stop_vms_on_exit: bool,
    /// A kernel for the KVM probe at start (default: the newest
    /// `/boot/vmlinuz-*`; without one the probe waits for the first run).
    #[serde(default)]
    pub probe_kernel: Option<PathBuf>,
    /// QUIC transport tuning.
    #[serde(default)]
    pub transport: Tuning,
    /// The VM host: state directory, libvirt, acceleration, segments.
    #[serde(default)]
    pub host: HostConfig,
}

fn default_max_vms() -> u32 {
    4
}
fn default_heartbeat_ms() -> u64 {
    1000
}

impl AgentConfig {
    /// Reads a TOML file; relative paths are relative to its directory.
    pub fn load(path: &Path) -> Result<Self, String> {
        let mut config: Self = fs_proto::config::load(path).map_err(|e| e.to_string())?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.tls.resolve(base);
        for p in [&mut config.host.state_dir].into_iter().chain(config.host.accel_cache_file.as_mut()) {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(config)
    }

    /// The kernel to probe KVM with: the configured one, else the newest `/boot/vmlinuz-*`.
    pub fn probe_kernel(&self) -> Option<PathBuf> {
        if let Some(k) = &self.probe_kernel {
            return Some(k.clone());
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir("/boot")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vmlinuz")))
            .collect();
        found.sort();
        found.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("agent.toml");
        let c = AgentConfig::load(&path).unwrap();
        assert_eq!(c.max_vms, 4);
        assert_eq!(c.host.scope, "");
        assert_eq!(c.host.backing("lab"), crate::SegmentBacking::Bridge { bridge: "br-lab".into() });
        assert!(c.tls.cert.is_absolute());
    }
}
