//! The PoP agent's local configuration (`vpe-agent.toml`).
//!
//! Tests build [`HostConfig`] directly; the binary reads it from TOML.
//! Every field has a default, so an empty file is a valid configuration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::accel::Accel;
use crate::libvirt::DEFAULT_URI;
use crate::network::SegmentBacking;

/// Whether to probe for KVM or force an acceleration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelMode {
    /// Probe once per host boot (see [`crate::accel`]).
    #[default]
    Auto,
    /// Always KVM.
    Kvm,
    /// Always TCG.
    Tcg,
}

impl AccelMode {
    /// The forced acceleration, if any.
    pub fn forced(self) -> Option<Accel> {
        match self {
            AccelMode::Auto => None,
            AccelMode::Kvm => Some(Accel::Kvm),
            AccelMode::Tcg => Some(Accel::Tcg),
        }
    }
}

/// Configuration of one PoP's VM host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Directory holding `cache/` (images), `vms/` (per-VM files) and
    /// `accel.toml`. Must be traversable by the qemu user (it is made 0755).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The libvirt connection URI.
    #[serde(default = "default_uri")]
    pub libvirt_uri: String,
    /// `auto` (probe KVM, fall back to TCG), `kvm` or `tcg`.
    #[serde(default)]
    pub accel: AccelMode,
    /// Seconds a KVM probe guest gets to print its kernel banner.
    #[serde(default = "default_probe_secs")]
    pub accel_probe_secs: u64,
    /// The qemu system emulator used by the KVM probe.
    #[serde(default = "default_qemu")]
    pub qemu: PathBuf,
    /// Seconds a guest gets to print its boot marker before the run fails.
    #[serde(default = "default_boot_secs")]
    pub boot_timeout_secs: u64,
    /// Seconds `save` may spend flattening a disk.
    #[serde(default = "default_save_secs")]
    pub save_timeout_secs: u64,
    /// How segments are realised here; unlisted segments are `isolated`.
    #[serde(default)]
    pub segments: BTreeMap<String, SegmentBacking>,
    /// Names this PoP's isolated segment networks (`renkei-seg-<scope>:<segment>`)
    /// when several PoPs share one libvirtd; empty for a PoP alone on its host.
    #[serde(default)]
    pub scope: String,
    /// Where the KVM-or-TCG decision is cached (default `<state_dir>/accel.toml`).
    /// PoPs on one host may share one file: the decision is the host's.
    #[serde(default)]
    pub accel_cache_file: Option<PathBuf>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/renkei-vpe")
}
fn default_uri() -> String {
    DEFAULT_URI.to_string()
}
fn default_probe_secs() -> u64 {
    5
}
fn default_qemu() -> PathBuf {
    PathBuf::from("qemu-system-x86_64")
}
fn default_boot_secs() -> u64 {
    60
}
fn default_save_secs() -> u64 {
    600
}

impl Default for HostConfig {
    fn default() -> Self {
        Self::new(default_state_dir())
    }
}

impl HostConfig {
    /// Defaults with state under `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            libvirt_uri: default_uri(),
            accel: AccelMode::Auto,
            accel_probe_secs: default_probe_secs(),
            qemu: default_qemu(),
            boot_timeout_secs: default_boot_secs(),
            save_timeout_secs: default_save_secs(),
            segments: BTreeMap::new(),
            scope: String::new(),
            accel_cache_file: None,
        }
    }

    /// Parses a TOML configuration.
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The image cache directory.
    pub fn cache_dir(&self) -> PathBuf {
        self.state_dir.join("cache")
    }

    /// The directory holding one subdirectory per VM.
    pub fn vms_dir(&self) -> PathBuf {
        self.state_dir.join("vms")
    }

    /// Where the acceleration decision is cached.
    pub fn accel_cache(&self) -> PathBuf {
        self.accel_cache_file.clone().unwrap_or_else(|| self.state_dir.join("accel.toml"))
    }

    /// How `segment` is realised on this PoP.
    pub fn backing(&self, segment: &str) -> SegmentBacking {
        self.segments.get(segment).cloned().unwrap_or(SegmentBacking::Isolated)
    }

    /// The boot deadline.
    pub fn boot_timeout(&self) -> Duration {
        Duration::from_secs(self.boot_timeout_secs)
    }
}

/// The VM directory of `vm` under `vms_dir`.
pub fn vm_dir(vms_dir: &Path, vm: &str) -> PathBuf {
    vms_dir.join(vm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults_and_segments_parse() {
        assert_eq!(HostConfig::from_toml("").unwrap(), HostConfig::default());
        let c = HostConfig::from_toml(
            "state_dir = \"/srv/vpe\"\naccel = \"tcg\"\n[segments.lab]\nkind = \"bridge\"\nbridge = \"br-lab\"\n",
        )
        .unwrap();
        assert_eq!(c.accel.forced(), Some(Accel::Tcg));
        assert_eq!(c.backing("lab"), SegmentBacking::Bridge { bridge: "br-lab".into() });
        assert_eq!(c.backing("other"), SegmentBacking::Isolated);
        assert!(HostConfig::from_toml("typo_field = 1").is_err());
    }
}
