//! Client configuration: which meta server, which site the client is at, and
//! the user's certificate. Read from the file named by `RENKEI_CONFIG`, else
//! `~/.config/renkei/client.toml`.

use crate::error::ClientError;
use fs_proto::endpoint::{TlsFiles, Tuning};
use fs_proto::rpc::{MetaAddrs, PeerAddr};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `renkei` client configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The meta server: one `{ addr, name }`, or a list of them (the
    /// active/standby meta servers of an etcd store; the one that leads
    /// answers, the client moves on from one it cannot reach).
    pub meta: MetaAddrs,
    /// The site this client is at: writes go to a file server there.
    pub site: String,
    /// The user's certificate, key and the federation CA.
    pub tls: TlsFiles,
    /// Bound on one metadata call (ms).
    #[serde(default = "default_meta_timeout_ms")]
    pub meta_timeout_ms: u64,
    /// Files transferred at once by recursive put/get.
    #[serde(default = "default_parallel")]
    pub parallel: usize,
    /// Send the new files of `put -r` in bundles (many files per stream and
    /// per metadata commit); false sends each file on its own.
    #[serde(default = "default_bundle")]
    pub bundle: bool,
    /// QUIC transport tuning.
    #[serde(default)]
    pub transport: Tuning,
    /// The VM manager, for `vpe` (the `[vpe]` table `renkei local up` adds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpe: Option<VpeSection>,
}

/// The `[vpe]` table of a user's client configuration: where `vpe` finds
/// the VM manager.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpeSection {
    /// The manager.
    pub manager: PeerAddr,
    /// Bound on `vpe run` and `vpe save` (s).
    #[serde(default = "default_long_secs")]
    pub long_timeout_secs: u64,
}

fn default_long_secs() -> u64 {
    900
}

fn default_meta_timeout_ms() -> u64 {
    15_000
}
fn default_parallel() -> usize {
    8
}
fn default_bundle() -> bool {
    true
}

impl ClientConfig {
    /// A config with defaults for the optional fields.
    pub fn new(meta: impl Into<MetaAddrs>, site: String, tls: TlsFiles) -> Self {
        ClientConfig {
            meta: meta.into(),
            site,
            tls,
            meta_timeout_ms: default_meta_timeout_ms(),
            parallel: default_parallel(),
            bundle: default_bundle(),
            transport: Tuning::default(),
            vpe: None,
        }
    }

    /// The file to read: `RENKEI_CONFIG`, else the per-user default.
    pub fn default_path() -> PathBuf {
        if let Some(p) = std::env::var_os("RENKEI_CONFIG") {
            return PathBuf::from(p);
        }
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        home.join(".config/renkei/client.toml")
    }

    /// Read from a TOML file; relative paths are relative to its directory.
    /// A fault is reported with its line and field.
    pub fn load(path: &Path) -> Result<Self, ClientError> {
        let mut cfg: ClientConfig = fs_proto::config::load(path).map_err(|e| match e {
            fs_proto::config::ConfigError::Read { source, .. } => ClientError::Config(format!(
                "cannot read client config {}: {source} (set RENKEI_CONFIG, or run `renkei local up` for a local federation)",
                path.display()
            )),
            invalid => ClientError::Config(invalid.to_string()),
        })?;
        cfg.tls.resolve(path.parent().unwrap_or(Path::new(".")));
        Ok(cfg)
    }
}
