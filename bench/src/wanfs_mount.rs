//! renkei mounts at a site of the WAN emulator, for `wanfs_bench`:
//!
//! - [`BinMount`]: the real `renkei mount -f` binary started inside the site
//!   (what a user runs); stopping it (SIGTERM, like Ctrl-C) waits for the
//!   process to exit, which is when every bundle has been committed.
//! - [`CountedMount`]: the same mount served by this process, from a thread
//!   that entered the site's network namespace (so its QUIC socket lives
//!   there), for reading the mount's per-kind request counters.

use crate::mount_bench::mounted;
use crate::sshfs::{unmount, wait_for, Place};
use crate::wan::{netns, Site};
use anyhow::Context;
use fs_client::counters::Counters;
use fs_client::mount::{self, MountOptions};
use fs_client::ClientConfig;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `renkei mount -f` running inside a site.
pub struct BinMount {
    child: Option<Child>,
    /// The mount point.
    pub mp: PathBuf,
    log: PathBuf,
}

impl BinMount {
    /// Mount `/` at `mp` as the client whose config file is `config`, with
    /// `-o options` (a spill directory is added), inside `site`.
    pub fn start(
        site: &Site,
        bin_dir: &Path,
        config: &Path,
        mp: &Path,
        options: &str,
        scratch: &Path,
    ) -> anyhow::Result<Self> {
        Self::start_at(Place::Site(site), bin_dir, config, mp, options, scratch)
    }

    /// [`Self::start`] at `place` (this machine's own network, or a site).
    pub fn start_at(
        place: Place<'_>,
        bin_dir: &Path,
        config: &Path,
        mp: &Path,
        options: &str,
        scratch: &Path,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(mp)?;
        let at = match place {
            Place::Local => "local".to_string(),
            Place::Site(s) => s.name().to_string(),
        };
        let log = scratch.join(format!("mount-{at}-{}.log", mp.file_name().and_then(|n| n.to_str()).unwrap_or("mnt")));
        let spill = scratch.join("spill");
        std::fs::create_dir_all(&spill)?;
        let mut o = format!("spill_dir={}", spill.display());
        if !options.is_empty() {
            o = format!("{o},{options}");
        }
        let child = place
            .command(bin_dir.join("renkei"))
            .env("RENKEI_CONFIG", config)
            .env("RUST_LOG", "info,quinn=warn")
            .arg("mount")
            .arg("-f")
            .arg(mp)
            .arg("-o")
            .arg(&o)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting renkei mount")?;
        let mut m = BinMount { child: Some(child), mp: mp.to_path_buf(), log };
        let up = wait_for("renkei mount", Duration::from_secs(30), || mounted(mp));
        if let Err(e) = up {
            m.stop(Duration::from_secs(5));
            anyhow::bail!("{e}: {}", m.log_tail());
        }
        Ok(m)
    }

    /// Stop the mount as a user's Ctrl-C does (SIGTERM: it unmounts, commits
    /// everything still pending, logs its request counters and exits) and
    /// wait up to `bound` for the process to exit. Returns false if it had
    /// to be killed.
    pub fn stop(&mut self, bound: Duration) -> bool {
        let Some(mut child) = self.child.take() else { return true };
        match i32::try_from(child.id()) {
            Ok(pid) => {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
            }
            Err(_) => unmount(&self.mp),
        }
        let t = Instant::now();
        while t.elapsed() < bound {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        unmount(&self.mp);
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// The requests the mount sent, per kind, from the line it logs when it
    /// has unmounted (`requests={"kind": n, ...}`); None before that.
    pub fn requests(&self) -> Option<BTreeMap<String, u64>> {
        let text = std::fs::read_to_string(&self.log).ok()?;
        let line = strip_ansi(text.lines().rev().find(|l| l.contains("unmounted"))?);
        let map = line.split_once("requests={")?.1.split_once('}')?.0;
        let mut out = BTreeMap::new();
        for item in map.split(", ").filter(|i| !i.is_empty()) {
            let (k, v) = item.split_once(": ")?;
            out.insert(k.trim_matches('"').to_string(), v.trim().parse().ok()?);
        }
        Some(out)
    }

    /// The last lines of the mount's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }
}

/// `s` without ANSI colour sequences (ESC [ ... m).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for BinMount {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(30));
    }
}

/// A mount served by this process with its socket in a site.
pub struct CountedMount {
    /// Requests the mount sent, per kind.
    pub counters: Arc<Counters>,
    /// The mount point.
    pub mp: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CountedMount {
    /// Mount `/` of `config`'s federation at `mp`, from inside `site`.
    pub fn start(site: &Site, config: ClientConfig, mp: &Path, spill: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(mp)?;
        let mut opts = MountOptions::new("/".into(), mp.to_path_buf());
        opts.spill_dir = spill.to_path_buf();
        let ns = netns::Netns::named(site.netns()).open()?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<Arc<Counters>>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            // The runtime's threads are made by this thread after it entered
            // the site, so they (and every socket they make) are in the site.
            let rt = netns::enter(&ns).map_err(anyhow::Error::from).and_then(|()| {
                Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
            });
            let rt = match rt {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                match mount::mount(config, opts).await {
                    Ok(m) => {
                        let _ = ready_tx.send(Ok(m.counters()));
                        let stop = async {
                            let _ = stop_rx.await;
                        };
                        if let Err(e) = m.serve(stop).await {
                            eprintln!("in-process mount ended: {e}");
                        }
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                    }
                }
            });
        });
        let counters = ready_rx.recv_timeout(Duration::from_secs(60)).context("in-process mount did not start")??;
        wait_for("in-process mount", Duration::from_secs(10), || mounted(mp))?;
        Ok(CountedMount { counters, mp: mp.to_path_buf(), stop: Some(stop_tx), thread: Some(thread) })
    }
}

impl Drop for CountedMount {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        unmount(&self.mp);
    }
}
