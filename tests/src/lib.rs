//! Test harnesses for renkei.
//!
//! - [`cluster::Cluster`]: a meta server and N file servers in this process,
//!   on `127.0.0.1:0`, with a fresh CA per cluster: fast integration tests.
//! - [`procs::ProcFederation`]: the real binaries as processes (through
//!   `renkei local up`), for end-to-end tests that kill and restart them.
//! - [`raw`]: speaking raw bytes to a service, for malformed-input tests.
//!
//! Every test is wrapped in a global timeout ([`with_timeout`]).

pub mod cluster;
pub mod procs;
pub mod raw;

use std::future::Future;
use std::time::Duration;

/// Install a test-friendly tracing subscriber once (`RUST_LOG` to see logs).
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,quinn=error".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Run a test body with a hard time bound so a hang fails instead of
/// stalling CI.
pub async fn with_timeout<T>(secs: u64, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("test exceeded its {secs} s bound"),
    }
}

/// `RENKEI_TEST_STRICT=1` (the project's test command): every test tier
/// must run; a gate that cannot run fails instead of skipping. The one rule
/// every gate of the workspace follows.
pub fn strict() -> bool {
    std::env::var("RENKEI_TEST_STRICT").as_deref() == Ok("1")
}

/// Whether a gated test tier runs: its environment variable is set (and we
/// are root when `needs_root`). Otherwise print why it is skipped; under
/// `RENKEI_TEST_STRICT=1` (the project's test command) a skip is a failure.
pub fn tier_enabled(var: &str, needs_root: bool) -> bool {
    let strict = strict();
    let why = if std::env::var(var).as_deref() != Ok("1") {
        Some(format!("{var}=1 is not set"))
    } else if needs_root && unsafe { libc::geteuid() } != 0 {
        Some("not running as root".to_string())
    } else {
        None
    };
    match why {
        None => true,
        Some(why) if strict => panic!("test tier {var} cannot run: {why} (RENKEI_TEST_STRICT=1)"),
        Some(why) => {
            eprintln!("skipping: {why} (set {var}=1 and run as root to run this tier)");
            false
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), for test files.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
