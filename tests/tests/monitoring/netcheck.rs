//! `renkei netcheck` across the WAN emulator's `renkei2011` preset: the real
//! binaries run inside the six emulated sites (meta at titech1, one file
//! server per site), the CLI runs at titech1, and every directed path of the
//! matrix must come within 20 % of the emulator's configured RTT and
//! (scaled) rate. Gated by `RENKEI_TEST_NETNS=1` (root).

use crate::common::{sample, SERIAL};
use bench::wan::preset::{self, RENKEI2011_RATES_MBYTE, RENKEI2011_RTT_MS, RENKEI2011_SITES};
use bench::wan::Wan;
use fs_proto::identity::{CaDir, IssueRequest, Role};
use fs_proto::monitor::NetMatrix;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;
use tests::{tier_enabled, with_timeout};

/// The emulator's rate scale (`renkei-bench wan up`'s default).
const SCALE: f64 = 0.125;
/// Allowed relative error.
const TOLERANCE: f64 = 0.20;
/// Below this the emulator itself cannot be within 20 %: its router adds
/// ~0.1-0.2 ms per round trip (bench/README.md measures 0.37 ms for the
/// configured 0.2 ms), and a request round trip adds the two QUIC stacks.
const RTT_FLOOR_MS: f64 = 0.35;

struct Federation {
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Drop for Federation {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn issue(ca: &CaDir, name: &str, role: Role, site: Option<&str>) -> (PathBuf, PathBuf) {
    let f = ca
        .issue(&IssueRequest {
            name: name.into(),
            role,
            site: site.map(str::to_string),
            not_before: None,
            valid_days: 2,
        })
        .expect("issue certificate");
    (f.cert, f.key)
}

fn spawn(wan: &Wan, site: &str, bin: &Path, cfg: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    let err = log.try_clone().expect("log file");
    wan.site(site)
        .expect("site")
        .command(bin)
        .arg("--config")
        .arg(cfg)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .expect("start a process in its site")
}

/// Meta server (with the status page) at `meta_site`, a file server in
/// every site, an admin user `tester`.
fn start(wan: &Wan, meta_site: &str) -> Federation {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = CaDir::new(dir.path().join("ca"));
    ca.init("netcheck-test").expect("ca");
    let bins = tests::procs::bin_dir();
    let meta_ip = wan.addr_of(meta_site).expect("meta site");
    let (cert, key) = issue(&ca, "meta", Role::Host, Some(meta_site));
    let meta_cfg = dir.path().join("meta.toml");
    std::fs::write(
        &meta_cfg,
        format!(
            "listen = \"{meta_ip}:7470\"\ndb = \"{db}\"\nhost_timeout_ms = 3000\n\n\
             [tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\n\
             [[users]]\nname = \"tester\"\nuid = 1000\nadmin = true\n\n\
             [monitor]\nweb = \"{meta_ip}:7478\"\nallow = [\"10.77.0.0/24\"]\n",
            db = dir.path().join("meta.db").display(),
            ca = ca.cert_path().display(),
            cert = cert.display(),
            key = key.display(),
        ),
    )
    .expect("meta config");
    let mut children = vec![spawn(wan, meta_site, &bins.join("renkei-meta"), &meta_cfg, &dir.path().join("meta.log"))];
    for site in RENKEI2011_SITES {
        let name = format!("pop-{site}");
        let ip = wan.addr_of(site).expect("site");
        let (cert, key) = issue(&ca, &name, Role::Host, Some(site));
        let cfg = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "listen = \"{ip}:7471\"\nspool = \"{spool}\"\nheartbeat_ms = 500\n\n\
                 [meta]\naddr = \"{meta_ip}:7470\"\nname = \"meta\"\n\n\
                 [tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n",
                spool = dir.path().join("spool").join(&name).display(),
                ca = ca.cert_path().display(),
                cert = cert.display(),
                key = key.display(),
            ),
        )
        .expect("server config");
        children.push(spawn(wan, site, &bins.join("renkei-server"), &cfg, &dir.path().join(format!("{name}.log"))));
    }
    let (cert, key) = issue(&ca, "tester", Role::User, None);
    std::fs::write(
        dir.path().join("client.toml"),
        format!(
            "site = \"{meta_site}\"\n\n[meta]\naddr = \"{meta_ip}:7470\"\nname = \"meta\"\n\n\
             [tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n",
            ca = ca.cert_path().display(),
            cert = cert.display(),
            key = key.display(),
        ),
    )
    .expect("client config");
    Federation { dir, children }
}

/// Run `renkei` at `site` with the test's client configuration.
fn renkei(wan: &Wan, fed: &Federation, site: &str, args: &[&str]) -> Output {
    wan.site(site)
        .expect("site")
        .command(tests::procs::bin_dir().join("renkei"))
        .arg("--config")
        .arg(fed.dir.path().join("client.toml"))
        .args(args)
        .output()
        .expect("run renkei")
}

fn configured_rtt_ms(a: &str, b: &str) -> f64 {
    RENKEI2011_RTT_MS
        .iter()
        .find(|(x, y, _)| (*x == a && *y == b) || (*x == b && *y == a))
        .map(|r| r.2)
        .unwrap_or_else(|| panic!("no RTT for {a}<->{b}"))
}

/// Configured bytes per second from `a` to `b`, scaled as the emulator is.
fn configured_rate(a: &str, b: &str) -> f64 {
    RENKEI2011_RATES_MBYTE
        .iter()
        .find(|(x, y, _, _)| *x == a && *y == b)
        .map(|r| r.2 * 1e6 * SCALE)
        .unwrap_or_else(|| panic!("no rate for {a}->{b}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netcheck_on_renkei2011_fills_the_matrix_within_20_percent_of_the_emulator() {
    if !tier_enabled("RENKEI_TEST_NETNS", true) {
        return;
    }
    let _one = SERIAL.lock().await;
    with_timeout(900, async {
        let wan = Wan::start(preset::renkei2011(SCALE).expect("preset")).expect("start the WAN emulator");
        let fed = start(&wan, "titech1");
        // Every server has joined: each logs that it serves once the meta
        // server answered its first heartbeat (its log read on every write,
        // an inotify event)...
        let logs: Vec<_> = RENKEI2011_SITES.iter().map(|s| fed.dir.path().join(format!("pop-{s}.log"))).collect();
        let dir = fed.dir.path().to_path_buf();
        let serving =
            |l: &std::path::PathBuf| std::fs::read_to_string(l).unwrap_or_default().contains("file server serving");
        let joined = tokio::task::spawn_blocking(move || {
            tests::wait_inotify(&dir, libc::IN_MODIFY, Duration::from_secs(60), || logs.iter().all(serving))
        })
        .await
        .expect("wait task");
        assert!(joined, "six file servers serving within 60 s");
        // ...so the meta server sees all six alive.
        let out = renkei(&wan, &fed, "titech1", &["--json", "hosts"]);
        assert!(out.status.success(), "renkei hosts: {}", String::from_utf8_lossy(&out.stderr));
        let hosts: serde_json::Value = serde_json::from_slice(&out.stdout).expect("hosts JSON");
        let alive = hosts.as_array().map(|a| a.iter().filter(|h| h["alive"] == true).count()).unwrap_or(0);
        assert_eq!(alive, RENKEI2011_SITES.len(), "every file server alive: {hosts}");

        // A path passes when one of up to three netcheck runs measures it
        // within the tolerance: a one-second measurement on two busy cores
        // (the router shares them with the servers) can fall short once.
        let mut passed: std::collections::HashSet<(String, String)> = Default::default();
        let mut bad = Vec::new();
        let mut m = NetMatrix::default();
        for attempt in 1..=3 {
            let out = renkei(&wan, &fed, "titech1", &["--json", "netcheck", "--pings", "20", "--seconds", "1"]);
            assert!(out.status.success(), "netcheck failed: {}", String::from_utf8_lossy(&out.stderr));
            m = serde_json::from_slice(&out.stdout).expect("matrix JSON");
            assert_eq!(m.paths.len(), 30, "every directed path of six servers");

            if m.paths.iter().any(|p| p.error.is_some()) {
                for name in
                    std::iter::once("meta".to_string()).chain(RENKEI2011_SITES.iter().map(|s| format!("pop-{s}")))
                {
                    let log = std::fs::read_to_string(fed.dir.path().join(format!("{name}.log"))).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(15).collect();
                    eprintln!("--- {name}.log (last lines)\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
                }
            }
            bad.clear();
            eprintln!("netcheck run {attempt}");
            eprintln!("{:<8} -> {:<8} {:>8} {:>8} {:>9} {:>9}", "from", "to", "rtt ms", "config", "MB/s", "config");
            for p in &m.paths {
                assert!(p.error.is_none(), "{} -> {}: {:?}", p.from.host, p.to.host, p.error);
                let (from, to) = (p.from.site.as_str(), p.to.site.as_str());
                let rtt = p.rtt_us.expect("rtt") as f64 / 1000.0;
                let rate = p.rate_bytes_per_s.expect("rate") as f64;
                let (want_rtt, want_rate) = (configured_rtt_ms(from, to), configured_rate(from, to));
                eprintln!(
                    "{from:<8} -> {to:<8} {rtt:>8.2} {want_rtt:>8.2} {:>9.1} {:>9.1}",
                    rate / 1e6,
                    want_rate / 1e6
                );
                let mut wrong = Vec::new();
                if (rtt - want_rtt).abs() > (want_rtt * TOLERANCE).max(RTT_FLOOR_MS) {
                    wrong.push(format!("{from}->{to}: RTT {rtt:.2} ms, configured {want_rtt} ms"));
                }
                if (rate - want_rate).abs() > want_rate * TOLERANCE {
                    wrong.push(format!("{from}->{to}: {:.1} MB/s, configured {:.1} MB/s", rate / 1e6, want_rate / 1e6));
                }
                let key = (from.to_string(), to.to_string());
                if wrong.is_empty() {
                    passed.insert(key);
                } else if !passed.contains(&key) {
                    bad.extend(wrong);
                }
            }
            if bad.is_empty() {
                break;
            }
            eprintln!("outside the tolerance in run {attempt}: {bad:?}");
        }
        assert!(bad.is_empty(), "beyond 20 % of the emulator's configuration:\n{}", bad.join("\n"));

        // The page's data and /metrics carry the same matrix.
        let web = format!("http://{}:7478/", wan.addr_of("titech1").expect("addr"));
        let curl = |path: &str| {
            let out = wan
                .site("titech1")
                .expect("site")
                .command("curl")
                .args(["-sS", "--max-time", "10"])
                .arg(format!("{web}{path}"))
                .output()
                .expect("curl");
            assert!(out.status.success(), "curl {path}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let st: serde_json::Value = serde_json::from_str(&curl("api/status")).expect("status JSON");
        let page: NetMatrix = serde_json::from_value(st["matrix"].clone()).expect("matrix on the page");
        assert_eq!(page, m, "the page shows the matrix netcheck returned");
        let body = curl("metrics");
        let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("metrics parse");
        let nii_titech = sample(
            &scrape,
            "renkei_path_throughput_bytes_per_second",
            &[("from_site", "nii1"), ("to_site", "titech1")],
        )
        .expect("nii1 -> titech1 in /metrics");
        let want =
            m.paths.iter().find(|p| p.from.site == "nii1" && p.to.site == "titech1").and_then(|p| p.rate_bytes_per_s);
        assert_eq!(Some(nii_titech as u64), want);
        drop(fed);
        drop(wan);
    })
    .await
}
