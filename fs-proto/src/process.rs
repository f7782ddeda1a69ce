//! What every renkei binary does the same way: install the tracing
//! subscriber (binaries only; libraries never do), to stderr (journald) or
//! to a log file reopened on SIGHUP (logrotate), wait for SIGINT or SIGTERM
//! as the shutdown signal, and die at a named crash point when a fault test
//! asks for it ([`crash_point`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

fn env_filter(default: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default))
}

/// Install a `tracing` subscriber reading `RUST_LOG`, defaulting to `default`.
pub fn init_tracing(default: &str) {
    let _ = tracing_subscriber::fmt().with_env_filter(env_filter(default)).with_writer(std::io::stderr).try_init();
}

/// A log file the subscriber appends to, reopened by path on SIGHUP (after
/// logrotate moved it away).
#[derive(Clone)]
struct LogFile {
    path: PathBuf,
    file: Arc<Mutex<std::fs::File>>,
}

fn open_log(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().create(true).append(true).open(path)
}

impl LogFile {
    fn lock(&self) -> MutexGuard<'_, std::fs::File> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reopen(&self) -> std::io::Result<()> {
        let f = open_log(&self.path)?;
        *self.lock() = f;
        Ok(())
    }
}

/// One event's writer: the file, locked while the event is written.
struct LogWriter<'a>(MutexGuard<'a, std::fs::File>);

impl Write for LogWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogFile {
    type Writer = LogWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        LogWriter(self.lock())
    }
}

/// [`init_tracing`], writing to `file` (appended, created if missing)
/// instead of stderr when one is given. The file is reopened on SIGHUP, so
/// logrotate's `postrotate` can `kill -HUP` the service. Must run inside a
/// tokio runtime (it waits for the signal on a task).
pub fn init_tracing_to(default: &str, file: Option<&Path>) -> std::io::Result<()> {
    let Some(path) = file else {
        init_tracing(default);
        return Ok(());
    };
    let log = LogFile { path: path.to_path_buf(), file: Arc::new(Mutex::new(open_log(path)?)) };
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(env_filter(default))
        .with_ansi(false)
        .with_writer(log.clone())
        .try_init();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match log.reopen() {
                Ok(()) => tracing::info!(file = %log.path.display(), "log file reopened (SIGHUP)"),
                Err(e) => tracing::error!(file = %log.path.display(), "cannot reopen the log file: {e}"),
            }
        }
    });
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

/// Environment variable naming the crash points at which this process kills
/// itself (comma-separated), for fault tests that must hit an exact moment:
/// e.g. `RENKEI_CRASH_AT=server.bundle.committed` makes a file server die
/// after the meta server committed a bundle and before the client hears.
pub const CRASH_AT_ENV: &str = "RENKEI_CRASH_AT";

fn crash_points() -> &'static [String] {
    static POINTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    POINTS.get_or_init(|| {
        std::env::var(CRASH_AT_ENV)
            .map(|v| v.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect())
            .unwrap_or_default()
    })
}

/// If `RENKEI_CRASH_AT` names `point`, die here as `kill -9` would (no
/// destructors, no flush, no goodbye to peers). A no-op otherwise (the
/// variable is read once).
pub fn crash_point(point: &str) {
    if crash_points().iter().any(|p| p == point) {
        eprintln!("crash point {point} reached ({CRASH_AT_ENV}): killing this process");
        // SAFETY: signalling ourselves.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// [`crash_point`] named `<role>.<what>.<at>` (e.g. `meta.rename.flushed`
/// for every kind of request), the name built only when a point is armed,
/// so the hot path pays one check.
pub fn crash_point_of(role: &str, what: &str, at: &str) {
    if !crash_points().is_empty() {
        crash_point(&format!("{role}.{what}.{at}"));
    }
}
