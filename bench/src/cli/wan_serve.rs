//! The `wan up` daemon: a detached `renkei-bench wan serve` process that owns the [`Wan`] (and so
//! the router threads), publishes its state and link counters, and tears everything down on
//! SIGTERM/SIGINT/SIGHUP or when its time-to-live runs out.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bench::wan::state::{self, RunState, SiteState};
use bench::wan::{Topology, Wan};
use nix::sys::signal::{SigSet, Signal};
use tracing::{info, warn};

/// How long `up` waits for the daemon to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the daemon refreshes `stats.json` (and checks for signals).
const TICK: Duration = Duration::from_secs(1);

/// The topology file the daemon runs, inside the state directory.
pub fn topology_path(dir: &Path) -> PathBuf {
    dir.join("topology.toml")
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("router.log")
}

/// Start `renkei-bench wan serve` detached (own session, output to `router.log`) and wait until it
/// has the topology up.
pub fn spawn_daemon(dir: &Path, ttl: Duration) -> anyhow::Result<RunState> {
    let exe = std::env::current_exe().context("locating renkei-bench")?;
    let log = File::create(log_path(dir)).with_context(|| format!("creating {}", log_path(dir).display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("wan")
        .arg("serve")
        .arg("--state-dir")
        .arg(dir)
        .arg("--ttl-secs")
        .arg(ttl.as_secs().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log);
    // SAFETY: setsid(2) is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(drop).map_err(std::io::Error::from));
    }
    let mut child = cmd.spawn().context("starting the WAN daemon")?;
    let stdout = child.stdout.take().context("daemon stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(READY_TIMEOUT) {
        Ok(line) if line.starts_with("ready") => {}
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(log_path(dir)).unwrap_or_default();
            bail!("the WAN daemon did not come up; its log:\n{log}");
        }
    }
    RunState::load(dir)?.context("daemon reported ready but wrote no state")
}

/// Run the topology in `dir` until signalled or `ttl` passes.
pub fn serve(dir: &Path, ttl: Duration) -> anyhow::Result<()> {
    let topo = Topology::load(&topology_path(dir))?;
    let mut signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(s);
    }
    // Blocked before any thread starts, so every router thread inherits the mask and the signals
    // wait for `sigtimedwait` below.
    signals.thread_block().context("blocking signals")?;
    let wan = Wan::start(topo)?;
    let expires = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default() + ttl;
    let st = RunState {
        pid: std::process::id(),
        run_id: wan.run_id().to_string(),
        mtu: wan.topology().mtu,
        rate_scale: wan.topology().rate_scale,
        expires_unix: expires.as_secs(),
        sites: wan
            .sites()
            .iter()
            .map(|s| SiteState { name: s.name().to_string(), addr: s.addr(), netns: s.netns().to_string() })
            .collect(),
    };
    st.save(dir)?;
    let mut out = std::io::stdout();
    writeln!(out, "ready {}", st.run_id).and_then(|_| out.flush()).context("reporting ready")?;
    let deadline = Instant::now() + ttl;
    let mut got = None;
    while got.is_none() && Instant::now() < deadline {
        if let Err(e) = state::save_stats(dir, &wan.stats()) {
            warn!(error = %e, "writing stats");
        }
        got = wait_signal(&signals, TICK.min(deadline.saturating_duration_since(Instant::now())));
    }
    info!(signal = ?got, "tearing the WAN down");
    drop(wan);
    if RunState::load(dir).ok().flatten().is_some_and(|s| s.run_id == st.run_id) {
        RunState::remove(dir);
    }
    Ok(())
}

/// Wait up to `timeout` for one of `signals` (which must be blocked).
fn wait_signal(signals: &SigSet, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: timeout.subsec_nanos() as _ };
    // SAFETY: valid set and timespec; a null siginfo pointer is allowed.
    let sig = unsafe { libc::sigtimedwait(signals.as_ref(), std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}
