//! What every renkei binary does the same way: install the tracing
//! subscriber (binaries only; libraries never do), wait for SIGINT or
//! SIGTERM as the shutdown signal, and die at a named crash point when a
//! fault test asks for it ([`crash_point`]).

/// Install a `tracing` subscriber reading `RUST_LOG`, defaulting to `default`.
pub fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
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
