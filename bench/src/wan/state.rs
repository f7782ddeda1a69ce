//! The files through which `renkei-bench wan up` (a daemon holding the router) tells later
//! commands (`exec`, `status`, `down`) what it runs: `state.json` (pid, run, sites) and
//! `stats.json` (link counters, refreshed every second). Written atomically (temp file + rename).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::WanError;
use super::router::LinkStats;
use super::sweep;

/// Default directory of the daemon's files.
pub const DEFAULT_STATE_DIR: &str = "/run/renkei-wan/cli";
const STATE_FILE: &str = "state.json";
const STATS_FILE: &str = "stats.json";

/// What a running `wan up` daemon serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Daemon process id.
    pub pid: u32,
    /// Run id (namespaces are `rkw-<run>-<site>`).
    pub run_id: String,
    /// TUN MTU.
    pub mtu: u32,
    /// Common factor applied to every rate.
    pub rate_scale: f64,
    /// Unix time at which the daemon tears itself down if nobody ran `wan down`.
    pub expires_unix: u64,
    /// Sites in address order.
    pub sites: Vec<SiteState>,
}

/// One site of a running daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteState {
    /// Site name.
    pub name: String,
    /// Address in the emulated subnet.
    pub addr: Ipv4Addr,
    /// Network namespace name.
    pub netns: String,
}

impl RunState {
    /// Whether the daemon that wrote this still runs (holds its run lock).
    pub fn alive(&self) -> bool {
        sweep::run_is_alive(&self.run_id)
    }

    /// The site called `name`.
    pub fn site(&self, name: &str) -> Result<&SiteState, WanError> {
        self.sites.iter().find(|s| s.name == name).ok_or_else(|| WanError::NoSuchSite(name.to_string()))
    }

    /// Write `state.json` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), WanError> {
        write_json(&dir.join(STATE_FILE), self)
    }

    /// Read `state.json` from `dir`; `Ok(None)` if there is none.
    pub fn load(dir: &Path) -> Result<Option<RunState>, WanError> {
        read_json(&dir.join(STATE_FILE))
    }

    /// Remove the state files from `dir`.
    pub fn remove(dir: &Path) {
        let _ = std::fs::remove_file(dir.join(STATE_FILE));
        let _ = std::fs::remove_file(dir.join(STATS_FILE));
    }
}

/// Write the link counters into `dir`.
pub fn save_stats(dir: &Path, stats: &[LinkStats]) -> Result<(), WanError> {
    write_json(&dir.join(STATS_FILE), &stats)
}

/// Read the link counters the daemon last wrote into `dir`.
pub fn load_stats(dir: &Path) -> Result<Option<Vec<LinkStats>>, WanError> {
    read_json(&dir.join(STATS_FILE))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), WanError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| WanError::State(e.to_string()))?;
    let tmp: PathBuf = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(|e| WanError::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| WanError::io(format!("renaming to {}", path.display()), e))
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, WanError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            serde_json::from_str(&text).map(Some).map_err(|e| WanError::State(format!("{}: {e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(WanError::io(format!("reading {}", path.display()), e)),
    }
}
