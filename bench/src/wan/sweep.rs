//! Run identity and cleanup of dead runs.
//!
//! Every test bed has a random run id; its namespaces are named `rkw-<run>-<site>` and it holds an
//! exclusive `flock` on `/run/renkei-wan/runs/<run>.lock` for as long as it lives. The kernel drops
//! that lock when the owner dies however it dies (SIGKILL included), so any `rkw-` namespace whose
//! run's lock can be taken, or has no lock file, belongs to a dead run: [`sweep_stale`] kills the
//! processes left inside it and deletes it. TUN devices need no sweeping: they vanish with the
//! router's descriptors.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use rand::RngExt;
use tracing::{info, warn};

use super::error::WanError;
use super::netns::{self, Netns};

/// Where run lock files live.
pub const RUN_DIR: &str = "/run/renkei-wan/runs";
/// Prefix of every namespace a test bed creates.
pub const NETNS_PREFIX: &str = "rkw-";

/// Name of the namespace of `site` in run `run_id`.
pub fn netns_name(run_id: &str, site: &str) -> String {
    format!("{NETNS_PREFIX}{run_id}-{site}")
}

/// Run id of a test-bed namespace name, if it is one.
pub fn run_of_netns(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(NETNS_PREFIX)?;
    let (run, site) = rest.split_once('-')?;
    (!run.is_empty() && !site.is_empty()).then_some(run)
}

fn lock_path(run_id: &str) -> PathBuf {
    Path::new(RUN_DIR).join(format!("{run_id}.lock"))
}

/// The lock that marks a run as alive.
#[derive(Debug)]
pub struct RunLock {
    id: String,
    _lock: Flock<File>,
}

impl RunLock {
    /// Pick a fresh run id and take its lock.
    pub fn acquire() -> Result<RunLock, WanError> {
        std::fs::create_dir_all(RUN_DIR).map_err(|e| WanError::io(format!("creating {RUN_DIR}"), e))?;
        let id = format!("{:08x}", rand::rng().random::<u32>());
        // Lock under a temporary name and rename: a sweeper never sees an unlocked live file.
        let tmp = Path::new(RUN_DIR).join(format!(".{id}.{}", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| WanError::io(format!("creating {}", tmp.display()), e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| WanError::errno(format!("locking {}", tmp.display()), e))?;
        std::fs::rename(&tmp, lock_path(&id)).map_err(|e| WanError::io("publishing run lock", e))?;
        Ok(RunLock { id, _lock: lock })
    }

    /// The run id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Remove the lock file (the lock itself goes when `self` drops).
    pub fn release(self) {
        let _ = std::fs::remove_file(lock_path(&self.id));
    }
}

/// Whether the run `run_id` is alive; if it is dead, returns its lock, held, so the caller can sweep
/// it without racing another sweeper.
fn claim_if_dead(run_id: &str) -> Result<Option<Option<Flock<File>>>, WanError> {
    let file = match File::open(lock_path(run_id)) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(None)),
        Err(e) => return Err(WanError::io("opening run lock", e)),
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(Some(lock))),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(WanError::errno("testing run lock", e)),
    }
}

/// Whether the run `run_id` is alive (its owner holds its lock).
pub fn run_is_alive(run_id: &str) -> bool {
    matches!(claim_if_dead(run_id), Ok(None))
}

/// Whether the process named in a temporary lock file `.<run>.<pid>` still runs.
fn publisher_alive(name: &str) -> bool {
    name.rsplit_once('.')
        .and_then(|(_, pid)| pid.parse::<u32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

/// What a sweep removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Namespaces deleted.
    pub namespaces: Vec<String>,
    /// Processes killed inside them.
    pub processes: usize,
}

/// Delete the namespaces (and kill the processes inside) of every run whose owner is dead, and
/// their lock files. Live runs, including concurrent test beds, are left alone.
pub fn sweep_stale() -> Result<SweepReport, WanError> {
    let mut report = SweepReport::default();
    let mut runs: Vec<String> = netns::list()?.iter().filter_map(|n| run_of_netns(n)).map(str::to_string).collect();
    if let Ok(dir) = std::fs::read_dir(RUN_DIR) {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(run) = name.strip_suffix(".lock") {
                runs.push(run.to_string());
            } else if name.starts_with('.') {
                // A lock being published, or left by a run that died mid-publish. Its creator locks
                // it only after creating it, so a file whose creating process still lives is left
                // alone: taking its lock in that moment and deleting it made the creator's publish
                // fail (two test beds starting at once in one test binary).
                if publisher_alive(&name) {
                    continue;
                }
                if File::open(entry.path())
                    .ok()
                    .and_then(|f| Flock::lock(f, FlockArg::LockExclusiveNonblock).ok())
                    .is_some()
                {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
    runs.sort();
    runs.dedup();
    for run in runs {
        let Some(_held) = claim_if_dead(&run)? else { continue };
        for name in netns::list()?.into_iter().filter(|n| run_of_netns(n) == Some(run.as_str())) {
            let ns = Netns::named(&name);
            report.processes += ns.kill_all(Duration::from_millis(500));
            match ns.delete() {
                Ok(()) => report.namespaces.push(name),
                Err(e) => warn!(netns = %name, error = %e, "could not delete stale namespace"),
            }
        }
        let _ = std::fs::remove_file(lock_path(&run));
    }
    if !report.namespaces.is_empty() {
        info!(namespaces = ?report.namespaces, processes = report.processes, "swept leftovers of dead runs");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_carry_the_run() {
        let n = netns_name("0badf00d", "titech1");
        assert_eq!(n, "rkw-0badf00d-titech1");
        assert_eq!(run_of_netns(&n), Some("0badf00d"));
        assert_eq!(run_of_netns("rkw-abc-kek_x"), Some("abc"));
        assert_eq!(run_of_netns("other"), None);
        assert_eq!(run_of_netns("rkw-nosite"), None);
    }

    #[test]
    fn a_lock_being_published_by_a_live_process_is_not_swept() {
        assert!(publisher_alive(&format!(".0badf00d.{}", std::process::id())));
        assert!(!publisher_alive(".0badf00d.notapid"));
        assert!(!publisher_alive(&format!(".0badf00d.{}", u32::MAX)));
    }
}
