//! Service checks in the spirit of INCA: every `check_interval_ms` the
//! server proves it can do its job, and says so.
//!
//! - `write`: write a probe replica into the spool the way a real write
//!   does (temporary file, chunk hashes, fsync, rename).
//! - `read`: read it back through the verified read path and compare its
//!   BLAKE3 with what was written (and with the hash the replica records).
//! - `serve`: dial our own advertised address over QUIC and get our `Pong`.
//! - `meta`: a round trip to the meta server.
//!
//! Each round is reported to the meta server (the status page shows every
//! check); failing checks also become heartbeat problems, so `renkei hosts`
//! shows them with their reason. Reasons are kept free of timings and
//! counters so a lasting failure reads the same every round.

use crate::node::Ctx;
use crate::replica::{ReplicaFile, ReplicaWriter};
use fs_proto::meta::{MetaRequest, MetaResponse};
use fs_proto::monitor::{check_names, CheckResult, MonitorRequest};
use fs_proto::rpc::PeerAddr;
use fs_proto::server::{ServerRequest, ServerResponse};
use fs_proto::Timestamp;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// Bound on one check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of the probe replica: two chunks, so the chunk table is exercised.
const PROBE_LEN: usize = 256 * 1024 + 4096;

/// The latest round.
#[derive(Default)]
pub struct CheckState {
    last: Mutex<Vec<CheckResult>>,
}

impl CheckState {
    /// The latest round's results.
    pub fn last(&self) -> Vec<CheckResult> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Failing checks as heartbeat problems: `check NAME failed: REASON`.
    pub fn problems(&self) -> Vec<String> {
        self.last().into_iter().filter(|c| !c.ok).map(|c| format!("check {} failed: {}", c.name, c.detail)).collect()
    }

    fn set(&self, round: Vec<CheckResult>) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = round;
    }
}

/// Run rounds until the task is dropped (`interval` zero: never).
pub async fn run(ctx: Arc<Ctx>, interval: Duration) {
    if interval.is_zero() {
        return;
    }
    loop {
        let round = round(&ctx).await;
        let report = MetaRequest::Monitor(MonitorRequest::ReportChecks(round));
        if let Err(e) = ctx.meta.call(report).await {
            debug!("service checks not reported: {e}");
        }
        tokio::time::sleep(interval).await;
    }
}

/// Run every check once and keep the results.
pub async fn round(ctx: &Arc<Ctx>) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let root = ctx.spool.root().to_path_buf();
    let start = Instant::now();
    match tokio::time::timeout(CHECK_TIMEOUT, tokio::task::spawn_blocking(move || spool_round_trip(&root))).await {
        Ok(Ok((write, read))) => {
            out.push(write);
            // The read check runs only on a probe that was written.
            out.extend(read);
        }
        Ok(Err(e)) => {
            out.push(result(check_names::WRITE, false, format!("the check's thread failed: {e}"), start.elapsed()))
        }
        Err(_) => out.push(result(
            check_names::WRITE,
            false,
            format!("no result within {} s", CHECK_TIMEOUT.as_secs()),
            start.elapsed(),
        )),
    }
    out.push(timed(check_names::SERVE, serve_check(ctx)).await.unwrap_or_else(|r| r));
    out.push(timed(check_names::META, meta_check(ctx)).await.unwrap_or_else(|r| r));
    for c in out.iter().filter(|c| !c.ok) {
        warn!(check = %c.name, "service check failed: {}", c.detail);
    }
    ctx.checks.set(out.clone());
    out
}

fn result(name: &str, ok: bool, detail: String, took: Duration) -> CheckResult {
    CheckResult {
        name: name.to_string(),
        ok,
        detail,
        duration_us: took.as_micros() as u64,
        at_ms: Timestamp::now().as_millis(),
    }
}

/// Run a check with the common bound. `Err` carries a finished failing
/// result (timeout or failure); `Ok` the check's own value.
async fn timed<T>(name: &'static str, f: impl Future<Output = Result<T, String>>) -> Result<T, CheckResult> {
    let start = Instant::now();
    match tokio::time::timeout(CHECK_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(why)) => Err(result(name, false, why, start.elapsed())),
        Err(_) => Err(result(name, false, format!("no result within {} s", CHECK_TIMEOUT.as_secs()), start.elapsed())),
    }
}

/// Pseudo-random probe bytes, different every round.
fn probe_bytes() -> Vec<u8> {
    let mut x = Timestamp::now().as_millis() ^ 0x9E37_79B9_7F4A_7C15 | 1;
    let mut v = Vec::with_capacity(PROBE_LEN + 8);
    while v.len() < PROBE_LEN {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(PROBE_LEN);
    v
}

/// The write and read checks on the spool (blocking); no read check when no
/// probe could be written.
fn spool_round_trip(root: &std::path::Path) -> (CheckResult, Option<CheckResult>) {
    let tmp_dir = root.join("tmp");
    let pid = std::process::id();
    let tmp: PathBuf = tmp_dir.join(format!(".check-{pid}.part"));
    let dst: PathBuf = tmp_dir.join(format!(".check-{pid}"));
    let _ = std::fs::remove_file(&tmp);
    let data = probe_bytes();
    let want = blake3::hash(&data);

    let start = Instant::now();
    let written = ReplicaWriter::create(tmp.clone()).and_then(|mut w| match w.write_at(0, &data) {
        Ok(()) => w.finish(&dst),
        Err(e) => {
            w.abort();
            Err(e)
        }
    });
    let write = match &written {
        Ok(_) => result(check_names::WRITE, true, format!("{} bytes written and synced", data.len()), start.elapsed()),
        Err(e) => result(check_names::WRITE, false, format!("cannot write a probe replica: {e}"), start.elapsed()),
    };
    let Ok((_, recorded)) = written else {
        let _ = std::fs::remove_file(&tmp);
        return (write, None);
    };

    let start = Instant::now();
    let read = match ReplicaFile::open(&dst).and_then(|f| {
        let mut out = Vec::with_capacity(data.len());
        f.read_verified(0, f.size(), &mut out).map(|_| (out, f.hash()))
    }) {
        Err(e) => result(check_names::READ, false, format!("cannot read the probe back: {e}"), start.elapsed()),
        Ok((back, _)) if blake3::hash(&back) != want => result(
            check_names::READ,
            false,
            "the probe read back does not match the BLAKE3 of what was written".into(),
            start.elapsed(),
        ),
        Ok((_, stored)) if stored != *want.as_bytes() || recorded != *want.as_bytes() => result(
            check_names::READ,
            false,
            "the probe's recorded hash does not match the BLAKE3 of its bytes".into(),
            start.elapsed(),
        ),
        Ok((back, _)) => result(
            check_names::READ,
            true,
            format!("{} bytes read back, BLAKE3 {}", back.len(), &want.to_hex()[..16]),
            start.elapsed(),
        ),
    };
    let _ = std::fs::remove_file(&dst);
    (write, Some(read))
}

async fn serve_check(ctx: &Arc<Ctx>) -> Result<CheckResult, String> {
    let me = PeerAddr { addr: ctx.advertise, name: ctx.identity.name.clone() };
    let start = Instant::now();
    match ctx.peers.call::<_, ServerResponse>(&me, &ServerRequest::Ping, CHECK_TIMEOUT).await {
        Ok(ServerResponse::Pong { host, .. }) if host == ctx.identity.name => {
            let took = start.elapsed();
            Ok(result(check_names::SERVE, true, format!("{} answers over QUIC", ctx.advertise), took))
        }
        Ok(other) => Err(format!("{} answered something else: {other:?}", ctx.advertise)),
        Err(e) => Err(format!("{} does not answer: {e}", ctx.advertise)),
    }
}

async fn meta_check(ctx: &Arc<Ctx>) -> Result<CheckResult, String> {
    let start = Instant::now();
    match ctx.meta.call(MetaRequest::WhoAmI).await {
        Ok(MetaResponse::WhoAmI(_)) => {
            let took = start.elapsed();
            let ms = took.as_secs_f64() * 1000.0;
            Ok(result(check_names::META, true, format!("{} answers, round trip {ms:.1} ms", ctx.meta.peer()), took))
        }
        Ok(other) => Err(format!("{} answered something else: {other:?}", ctx.meta.peer())),
        Err(e) => Err(format!("cannot reach the meta server: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spool_round_trip_passes_on_a_good_spool_and_names_the_reason_otherwise() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("tmp")).expect("tmp");
        let (w, r) = spool_round_trip(dir.path());
        assert!(w.ok, "{w:?}");
        let r = r.expect("read ran");
        assert!(r.ok, "{r:?}");
        assert!(r.detail.contains(&format!("{} bytes read back", PROBE_LEN)), "{}", r.detail);
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).expect("ls").count(), 0, "probe removed");

        // A spool whose tmp/ is not a directory cannot take writes.
        std::fs::remove_dir(dir.path().join("tmp")).expect("rmdir");
        std::fs::write(dir.path().join("tmp"), b"not a directory").expect("file");
        let (w, r) = spool_round_trip(dir.path());
        assert!(!w.ok);
        assert!(w.detail.starts_with("cannot write a probe replica: "), "{}", w.detail);
        assert!(w.detail.contains("Not a directory"), "{}", w.detail);
        assert!(r.is_none(), "nothing to read back");
    }

    #[test]
    fn failing_checks_become_problems_with_their_reason() {
        let s = CheckState::default();
        s.set(vec![
            result("write", false, "cannot write a probe replica: x: Read-only file system".into(), Duration::ZERO),
            result("meta", true, "fine".into(), Duration::ZERO),
        ]);
        assert_eq!(s.problems(), vec!["check write failed: cannot write a probe replica: x: Read-only file system"]);
    }
}
