//! What the monitoring tests share: a headless Chromium driven through
//! chromedriver (WebDriver, with fantoccini), fetching over HTTP with curl,
//! parsing `/metrics`, waiting with a bound, and where artifacts go.

use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Debian's Chromium and its WebDriver.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// One monitoring test at a time: they measure rates and time bounds, and
/// Chromium is heavy on two cores.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

use tests::strict;

/// Whether Chromium and chromedriver are installed; otherwise print why the
/// test is skipped (a failure under `RENKEI_TEST_STRICT=1`).
pub fn browser_available() -> bool {
    for p in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(p).exists() {
            assert!(!strict(), "{p} is missing (apt-get install chromium chromium-driver) and RENKEI_TEST_STRICT=1");
            eprintln!("skipping: {p} is missing (apt-get install chromium chromium-driver)");
            return false;
        }
    }
    true
}

/// Whether we are root (needed to make a spool read-only with a bind mount).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(!strict(), "this test needs root and RENKEI_TEST_STRICT=1");
        eprintln!("skipping: needs root");
    }
    root
}

/// `target/test-artifacts/`, created.
pub fn artifacts() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target
    let target = exe.ancestors().nth(3).expect("target dir").to_path_buf();
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}

/// GET `url` with curl; (HTTP status, body).
pub fn curl(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}", url])
        .output()
        .expect("run curl (apt-get install curl)");
    assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (code.trim().parse().expect("HTTP status"), body.to_string())
}

/// Fetch `/metrics` and parse it as Prometheus exposition format.
pub fn scrape(base: &str) -> prometheus_parse::Scrape {
    let (code, body) = curl(&format!("{base}metrics"));
    assert_eq!(code, 200, "{body}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("/metrics is valid Prometheus text format")
}

/// The value of a sample with these labels.
pub fn sample(s: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples.iter().find(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))).map(|x| {
        match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        }
    })
}

/// A headless Chromium under chromedriver; both stop on drop.
pub struct Browser {
    driver: Child,
    client: Option<Client>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Start chromedriver and a fresh Chromium session.
    pub async fn start() -> Browser {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let profile = tempfile::tempdir().expect("profile dir");
        let mut driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        // It says when it listens: its output read as a stream (then
        // drained, so it never blocks on a full pipe).
        let out = driver.stdout.take().expect("chromedriver's output");
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut ready_tx = Some(ready_tx);
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if line.contains("started successfully") {
                    ready_tx.take().map(|t| t.send(()));
                }
            }
        });
        let listening = tokio::time::timeout(Duration::from_secs(30), ready).await;
        assert!(matches!(listening, Ok(Ok(()))), "chromedriver did not say it listens on {port} within 30 s");
        let mut b = Browser { driver, client: None, _profile: profile };
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,1400",
        ];
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", b._profile.path().display()));
        let caps = json!({ "browserName": "chrome", "goog:chromeOptions": { "binary": CHROMIUM, "args": args } });
        let caps = caps.as_object().cloned().expect("object");
        let url = format!("http://127.0.0.1:{port}");
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = tokio::time::timeout(
            Duration::from_secs(30),
            ClientBuilder::new(connector).capabilities(caps).connect(&url),
        )
        .await
        .expect("a Chromium session through chromedriver within 30 s")
        .expect("a Chromium session through chromedriver");
        b.client = Some(client);
        b
    }

    /// The WebDriver session.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("session")
    }

    /// Wait (at most `bound`) until `f` returns Some of what the page shows,
    /// looking again at each of the page's redraws (its own refresh, on the
    /// page's timer: an event in the page, watched there), never on a timer
    /// of the test's.
    pub async fn until<T>(&self, bound: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> Option<T> {
        let until = tokio::time::Instant::now() + bound;
        loop {
            if let Some(v) = f().await {
                return Some(v);
            }
            if tokio::time::timeout_at(until, self.eval_async(REDRAW_SCRIPT)).await.is_err() {
                return None;
            }
        }
    }

    async fn eval_async(&self, script: &str) -> Value {
        self.client().execute_async(script, vec![]).await.expect("script runs in the page")
    }

    /// Run a script in the page and return its value.
    pub async fn eval(&self, script: &str) -> Value {
        self.client().execute(script, vec![]).await.expect("script runs in the page")
    }

    /// Save a screenshot under `target/test-artifacts/`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client().screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = artifacts().join(name);
        std::fs::write(&path, png).expect("write screenshot");
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// End the session and stop chromedriver.
    pub async fn close(mut self) {
        if let Some(c) = self.client.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), c.close()).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// What the page shows for each PoP: reads the rendered table.
pub const POPS_SCRIPT: &str = r#"
return {
  loadedAt: window.renkeiPage ? window.renkeiPage.loadedAt : null,
  updates: window.renkeiPage ? window.renkeiPage.updates : 0,
  pops: Array.from(document.querySelectorAll('#pops tr.pop')).map(r => ({
    host: r.dataset.host,
    site: r.dataset.site,
    state: r.dataset.state,
    stateText: r.querySelector('.state').textContent,
    heartbeat: r.querySelector('.heartbeat').textContent,
    checks: r.querySelector('td.checks').dataset.checks,
    failing: r.querySelector('td.checks').dataset.failing || '',
    reasons: Array.from(r.querySelectorAll('.reason')).map(x => x.textContent),
    problems: Array.from(r.querySelectorAll('.problem')).map(x => x.textContent),
  })),
  events: Array.from(document.querySelectorAll('#events li')).map(x => x.textContent),
};
"#;

/// Returns at the page's next redraw (`data-updates` on the body moves).
const REDRAW_SCRIPT: &str = r#"
const done = arguments[arguments.length - 1];
const seen = document.body.dataset.updates;
new MutationObserver((_, o) => {
  if (document.body.dataset.updates !== seen) { o.disconnect(); done(true); }
}).observe(document.body, { attributes: true, attributeFilter: ['data-updates'] });
"#;

/// The row of `host` in a [`POPS_SCRIPT`] result.
pub fn pop<'a>(page: &'a Value, host: &str) -> Option<&'a Value> {
    page["pops"].as_array()?.iter().find(|p| p["host"] == host)
}
