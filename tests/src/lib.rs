//! Test harnesses for renkei.
//!
//! - [`cluster::Cluster`]: a meta server and N file servers in this process,
//!   on `127.0.0.1:0`, with a fresh CA per cluster: fast integration tests.
//! - [`procs::ProcFederation`]: the real binaries as processes (through
//!   `renkei local up`), for end-to-end tests that kill and restart them.
//! - [`etcd`]: a real three-member etcd cluster (the etcd store; also
//!   under every meta server with `RENKEI_TEST_STORE=etcd`).
//! - [`raw`]: speaking raw bytes to a service, for malformed-input tests.
//!
//! Every test is wrapped in a global timeout ([`with_timeout`]).

pub mod cluster;
pub mod etcd;
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

/// Wait (at most `bound`) until directory `dir` is empty: each removal in it
/// is an inotify event, so this looks again when something goes, not on a
/// timer. Panics with what is left after `bound`.
pub fn wait_dir_empty(dir: &std::path::Path, bound: Duration) {
    let count = || std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    if !wait_inotify(dir, libc::IN_DELETE | libc::IN_MOVED_FROM, bound, || count() == 0) {
        panic!("{} files left in {} after {bound:?}", count(), dir.display());
    }
}

/// An inotify descriptor (non-blocking) watching `mask` on directory `dir`
/// and the files in it.
fn inotify(dir: &std::path::Path, mask: u32) -> std::os::fd::OwnedFd {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: inotify_init1 takes flags and returns a new descriptor.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    assert!(fd >= 0, "inotify_init1: {}", std::io::Error::last_os_error());
    // SAFETY: a descriptor we own from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).expect("path without NUL");
    // SAFETY: a valid descriptor and NUL-terminated path.
    let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), mask) };
    assert!(wd >= 0, "inotify_add_watch {}: {}", dir.display(), std::io::Error::last_os_error());
    fd
}

/// Read away the events that arrived on a non-blocking inotify descriptor.
fn drain(fd: &std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 4096];
    // SAFETY: reading into a buffer we own.
    while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
}

/// Wait (at most `bound`) until `done()` holds, looking again on every
/// inotify event of `mask` about directory `dir` or a file in it (e.g.
/// `IN_MODIFY` for a log written there), never on a timer. Returns whether
/// `done()` held within the bound.
pub fn wait_inotify(dir: &std::path::Path, mask: u32, bound: Duration, mut done: impl FnMut() -> bool) -> bool {
    use std::os::fd::AsRawFd;
    // Watched before the first look, so a change between the look and the
    // poll is still an event.
    let fd = inotify(dir, mask);
    let until = std::time::Instant::now() + bound;
    while !done() {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        drain(&fd);
    }
    true
}

/// Changes in a directory as async events (inotify), e.g. every line the
/// processes logging there write: what a test of real processes waits on.
pub struct DirWatch(tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>);

impl DirWatch {
    /// Watch `mask` (e.g. `IN_MODIFY`) on `dir` and the files in it, from now.
    pub fn new(dir: &std::path::Path, mask: u32) -> Self {
        // SAFETY: an OwnedFd returns the one descriptor it owns for as long
        // as it lives, and the AsyncFd owns it.
        let fd = unsafe { tokio::io::unix::AsyncFd::register(inotify(dir, mask)) };
        DirWatch(fd.unwrap_or_else(|e| panic!("register the inotify descriptor: {e}")))
    }

    /// Wait for the next change (taking every one arrived so far), at most
    /// until `until`; false at the deadline.
    pub async fn next(&self, until: tokio::time::Instant) -> bool {
        match tokio::time::timeout_at(until, self.0.readable()).await {
            Ok(Ok(mut ready)) => {
                drain(self.0.get_ref());
                ready.clear_ready();
                true
            }
            Ok(Err(e)) => panic!("inotify: {e}"),
            Err(_) => false,
        }
    }
}
