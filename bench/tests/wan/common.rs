//! Shared helpers of the namespace tests: the gate, the global lock that keeps test beds from
//! sharing the two cores, and runners for ping and iperf3 inside sites.

use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{bail, Context};
use bench::wan::Site;

static SERIAL: Mutex<()> = Mutex::new(());

/// Gate for tests that need root, namespaces, `ip`, `ping` and `iperf3`. Returns the lock that
/// serialises them, or `None` (after printing why) when `RENKEI_TEST_NETNS=1` is not set. When it is
/// set, anything missing is a failure, not a skip: CI sets it and a skip there must not pass.
pub fn gate(test: &str) -> Option<MutexGuard<'static, ()>> {
    if std::env::var("RENKEI_TEST_NETNS").as_deref() != Ok("1") {
        let why = "set RENKEI_TEST_NETNS=1 (as root) to run the network-namespace tests";
        // The workspace's one rule: under RENKEI_TEST_STRICT=1 a gate that
        // cannot run fails.
        assert!(
            std::env::var("RENKEI_TEST_STRICT").as_deref() != Ok("1"),
            "{test} cannot run: {why} (RENKEI_TEST_STRICT=1)"
        );
        eprintln!("skipping {test}: {why}");
        return None;
    }
    assert!(nix::unistd::geteuid().is_root(), "RENKEI_TEST_NETNS=1 but not root: {test} needs root");
    for tool in ["ip", "ping", "iperf3"] {
        let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "RENKEI_TEST_NETNS=1 but `{tool}` is missing: apt-get install iproute2 iputils-ping iperf3"
        );
    }
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("bench=info").try_init();
    Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Run a command to completion and insist it succeeded.
pub fn run_ok(mut cmd: Command) -> anyhow::Result<Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    Ok(out)
}

/// Ping `to` from `from` `count` times at `interval`; the RTT of every reply, in ms.
pub fn ping_rtts(from: &Site, to: &Site, count: u32, interval: Duration) -> anyhow::Result<Vec<f64>> {
    let deadline = (count as f64 * interval.as_secs_f64() + 10.0).ceil() as u64;
    let mut cmd = from.command("ping");
    cmd.args(["-n", "-c", &count.to_string(), "-i", &format!("{:.3}", interval.as_secs_f64())]).args([
        "-w",
        &deadline.to_string(),
        &to.addr().to_string(),
    ]);
    let out = run_ok(cmd)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rtts: Vec<f64> =
        text.lines().filter_map(|l| l.split("time=").nth(1)?.split_whitespace().next()?.parse().ok()).collect();
    if rtts.is_empty() {
        bail!("no replies in ping output:\n{text}");
    }
    Ok(rtts)
}

/// Median of a non-empty sample.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Sent and received counts of a quiet ping run (`-q`) of exactly `count` requests.
pub fn ping_counts(from: &Site, to: &Site, count: u32, interval: Duration) -> anyhow::Result<(u64, u64)> {
    // No `-w`: with a deadline ping keeps sending until `count` replies arrive. coreutils' `timeout`
    // bounds the run instead.
    let limit = (count as f64 * interval.as_secs_f64() * 4.0 + 20.0).ceil() as u64;
    let mut cmd = from.command("timeout");
    cmd.args([&limit.to_string(), "ping", "-n", "-q", "-c", &count.to_string()]).args([
        "-i",
        &format!("{:.3}", interval.as_secs_f64()),
        &to.addr().to_string(),
    ]);
    // ping exits 1 when some replies are missing, which is the point here.
    let out = cmd.output().context("running ping")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line =
        text.lines().find(|l| l.contains("packets transmitted")).with_context(|| format!("ping said:\n{text}"))?;
    let num = |word: &str| -> anyhow::Result<u64> {
        let before = line.split(word).next().context("field")?;
        before.split_whitespace().last().context("number")?.parse().context("parsing count")
    };
    Ok((num(" packets transmitted")?, num(" received")?))
}

pub use bench::wan::iperf::iperf3_bps;

/// Whether `rel` is within `tol` (fraction) of `want`.
pub fn within(got: f64, want: f64, tol: f64) -> bool {
    (got - want).abs() <= want * tol
}
