//! The real binaries as processes: a federation brought up with
//! `fs_client::local::up` (what `renkei local up` does), the `renkei` CLI run
//! as a command, and processes killed with SIGKILL.

use fs_client::local::{self, LocalSpec, LocalState};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// What each process logs: as ever, plus the file servers' "heartbeat
/// answered" lines, which tests wait on ([`ProcFederation::wait_heartbeats`]).
fn log_env() -> Vec<(String, String)> {
    let base = std::env::var("RUST_LOG").unwrap_or_else(|_| "info,quinn=warn".into());
    vec![("RUST_LOG".into(), format!("{base},renkei::heartbeat=debug"))]
}

/// The line a file server logs once the meta server answered (and so
/// recorded) one of its heartbeats.
pub const HEARTBEAT: &str = "heartbeat answered";

/// Directory holding the built binaries: `RENKEI_BIN_DIR`, else the profile
/// directory this test binary was built into.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RENKEI_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> -> target/<profile>
    let dir = exe.parent().and_then(Path::parent).expect("profile dir").to_path_buf();
    for b in ["renkei", "renkei-meta", "renkei-server"] {
        assert!(
            dir.join(b).exists(),
            "{} missing: build the binaries first (`cargo build --workspace --bins` with the same profile) or set RENKEI_BIN_DIR",
            dir.join(b).display()
        );
    }
    dir
}

/// A federation of real processes in a temporary directory, stopped on drop.
pub struct ProcFederation {
    dir: tempfile::TempDir,
    /// What was set up.
    pub state: LocalState,
}

impl ProcFederation {
    /// Bring up `sites` sites (one server each).
    pub async fn up(sites: usize) -> Self {
        // RENKEI_TEST_STORE=etcd: the meta server on the test etcd cluster.
        let meta_toml =
            if crate::etcd::store_is_etcd() { crate::etcd::store_toml(crate::etcd::cluster()) } else { String::new() };
        Self::up_with(sites, meta_toml, false).await
    }

    /// Bring up `sites` sites with two meta servers (`meta`, `meta2`: one
    /// leads, one stands by) on `etcd`, under a fresh prefix.
    pub async fn up_ha(sites: usize, etcd: &crate::etcd::EtcdCluster) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("renkei-ha/{}-{n}/", std::process::id());
        Self::up_with(sites, etcd.store_toml(&prefix), true).await
    }

    async fn up_with(sites: usize, meta_toml: String, ha: bool) -> Self {
        crate::init_logs();
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = LocalSpec {
            dir: dir.path().to_path_buf(),
            sites,
            servers_per_site: 1,
            user: "tester".into(),
            bin_dir: Some(bin_dir()),
            env: log_env(),
            meta_toml,
            ha,
        };
        let state = match local::up(&spec, Duration::from_secs(30)).await {
            Ok(s) => s,
            Err(e) => {
                // Stop whatever did start before failing the test.
                let _ = local::down(dir.path());
                panic!("local up: {e}");
            }
        };
        ProcFederation { dir, state }
    }

    /// The federation's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Wait (at most `bound`) until `check` returns Ok, looking again
    /// whenever a process of the federation logs (every heartbeat a file
    /// server has answered, every copy order, every registration): events
    /// the processes write, never a timer. Panics naming `what`.
    pub async fn wait_until<T, F, Fut>(&self, bound: Duration, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        // Watched before the first look, so a line logged between the look
        // and the wait still wakes it.
        let logs = crate::DirWatch::new(&self.dir().join("logs"), libc::IN_MODIFY | libc::IN_CREATE);
        let until = tokio::time::Instant::now() + bound;
        loop {
            let why = match check().await {
                Ok(v) => return v,
                Err(why) => why,
            };
            if !logs.next(until).await {
                panic!("{what} not reached within {bound:?}: {why}");
            }
        }
    }

    /// Heartbeats of file server `host` the meta server has answered so far
    /// (its log's [`HEARTBEAT`] lines).
    pub fn heartbeats(&self, host: &str) -> usize {
        self.log(host).matches(HEARTBEAT).count()
    }

    /// Wait (at most `bound`) until `host` has had `more` heartbeats
    /// answered after `since` (a [`Self::heartbeats`] count).
    pub async fn wait_heartbeats(&self, host: &str, since: usize, more: usize, bound: Duration) {
        self.wait_log(host, HEARTBEAT, since + more, bound).await
    }

    /// Run `renkei` with the client config of `site` (None: the first site).
    pub fn renkei(&self, site: Option<&str>, args: &[&str]) -> Output {
        let cfg = match site {
            Some(s) => self.dir().join(format!("client-{s}.toml")),
            None => self.state.client_config.clone(),
        };
        Command::new(bin_dir().join("renkei")).env("RENKEI_CONFIG", cfg).args(args).output().expect("run renkei")
    }

    /// Run `renkei`, assert success, return stdout.
    pub fn renkei_ok(&self, site: Option<&str>, args: &[&str]) -> String {
        let out = self.renkei(site, args);
        assert!(
            out.status.success(),
            "renkei {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A client configuration (first site) for another federation user:
    /// a certificate for `name` from the federation's CA, in `NAME.toml`.
    pub fn user_config(&self, name: &str) -> PathBuf {
        let ca = self.dir().join("ca");
        self.renkei_ok(None, &["ca", "issue", "--dir", &ca.to_string_lossy(), "--user", name]);
        let me = &self.state.user;
        let text = std::fs::read_to_string(&self.state.client_config).expect("client config");
        let text = text.replace(&format!("/users/{me}."), &format!("/users/{name}."));
        assert!(text.contains(&format!("/users/{name}.")), "the client config names the user's files: {text}");
        let path = self.dir().join(format!("{name}.toml"));
        std::fs::write(&path, text).expect("write user config");
        path
    }

    /// Run `renkei` with client configuration `config`.
    pub fn renkei_as(&self, config: &Path, args: &[&str]) -> Output {
        Command::new(bin_dir().join("renkei")).env("RENKEI_CONFIG", config).args(args).output().expect("run renkei")
    }

    /// pid of a running process of the federation.
    pub fn pid(&self, name: &str) -> Option<i32> {
        local::running_pid(&self.dir().join("run").join(format!("{name}.pid")))
    }

    /// SIGKILL a process of the federation and wait until it is gone.
    pub fn kill(&self, name: &str) {
        let pid = self.pid(name).unwrap_or_else(|| panic!("{name} is not running"));
        // SAFETY: killing a process this federation started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        // Every thread gone: its sockets are closed and its port is free.
        match local::wait_pid_gone(pid, Duration::from_secs(5)) {
            Ok(true) => {}
            Ok(false) => panic!("{name} (pid {pid}) did not die within 5 s of SIGKILL"),
            Err(e) => panic!("wait for {name} (pid {pid}) to exit: {e}"),
        }
    }

    /// Start whatever is not running and wait for every server.
    pub async fn restart(&self) {
        self.restart_with(&[]).await
    }

    /// Like [`Self::restart`], with `env` for the processes started now
    /// (e.g. `RENKEI_CRASH_AT` to arm a crash point).
    pub async fn restart_with(&self, env: &[(&str, &str)]) {
        if let Err(e) = self.try_restart(env).await {
            let _ = local::down(self.dir());
            panic!("restart: {e}");
        }
    }

    /// `renkei local up` again: start whatever is not running and wait for
    /// every server; the error as `local up` reports it.
    pub async fn try_restart(&self, env: &[(&str, &str)]) -> Result<(), fs_client::ClientError> {
        let spec = LocalSpec {
            dir: self.dir().to_path_buf(),
            sites: 0,
            servers_per_site: 0,
            user: self.state.user.clone(),
            bin_dir: Some(bin_dir()),
            env: log_env().into_iter().chain(env.iter().map(|(k, v)| (k.to_string(), v.to_string()))).collect(),
            meta_toml: String::new(),
            ha: false,
        };
        local::up(&spec, Duration::from_secs(30)).await.map(|_| ())
    }

    /// Wait until process `name` has died by itself (a crash point), at
    /// most `bound`: its exit is an event on a pidfd, not a poll.
    pub async fn wait_dead(&self, name: &str, bound: Duration) {
        let Some(pid) = self.pid(name) else { return };
        let gone = tokio::task::spawn_blocking(move || local::wait_pid_gone(pid, bound)).await.expect("wait task");
        match gone {
            Ok(true) => {}
            Ok(false) => panic!("{name} (pid {pid}) still running after {bound:?}"),
            Err(e) => panic!("wait for {name} (pid {pid}) to exit: {e}"),
        }
    }

    /// `kill -9` file server `name` and start it again; returns once it
    /// has reconciled its spool with the meta server (its log says so:
    /// it heartbeats, and so counts as up, before it reconciles).
    pub async fn restart_server(&self, name: &str) {
        const RECONCILED: &str = "spool reconciled with the meta server";
        let before = self.log(name).matches(RECONCILED).count();
        self.kill(name);
        self.restart().await;
        self.wait_log(name, RECONCILED, before + 1, Duration::from_secs(30)).await;
    }

    /// Wait until the log of `name` holds `needle` `count` times, at most
    /// `bound`: the log is read again on every write to it (an inotify
    /// event on the log directory), never on a timer.
    pub async fn wait_log(&self, name: &str, needle: &str, count: usize, bound: Duration) {
        let (logs, file, want) = (self.dir().join("logs"), format!("{name}.log"), needle.to_string());
        let held = tokio::task::spawn_blocking(move || {
            let path = logs.join(file);
            crate::wait_inotify(&logs, libc::IN_MODIFY | libc::IN_CREATE | libc::IN_MOVED_TO, bound, || {
                std::fs::read_to_string(&path).unwrap_or_default().matches(want.as_str()).count() >= count
            })
        })
        .await
        .expect("log wait task");
        assert!(held, "{name} did not log {needle:?} ({count} times) within {bound:?}");
    }

    /// Run `renkei` (client config of the first site) with extra
    /// environment, e.g. a crash point.
    pub fn renkei_env(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut cmd = Command::new(bin_dir().join("renkei"));
        cmd.env("RENKEI_CONFIG", &self.state.client_config).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run renkei")
    }

    /// `renkei fsck /` succeeds: every registered replica verifies.
    pub fn assert_fsck_clean(&self) {
        let out = self.renkei(None, &["fsck", "/"]);
        assert!(
            out.status.success(),
            "fsck / is not clean:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Files of file server `host`'s spool the meta server does not know as
    /// that host's replica of that generation (orphans), and leftovers in
    /// its `tmp/` (unfinished writes).
    pub async fn spool_orphans(&self, host: &str) -> (Vec<(u64, u64)>, Vec<PathBuf>) {
        use fs_proto::meta::{MetaRequest, MetaResponse};
        let root = self.dir().join("spool").join(host);
        let mut held = Vec::new();
        let data = root.join("data");
        for d in std::fs::read_dir(&data).unwrap_or_else(|e| panic!("{}: {e}", data.display())) {
            let d = d.expect("spool entry").path();
            for f in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
                let name = f.expect("spool file").file_name().to_string_lossy().into_owned();
                let parsed = name
                    .split_once('.')
                    .and_then(|(a, b)| Some((u64::from_str_radix(a, 16).ok()?, u64::from_str_radix(b, 16).ok()?)));
                held.push(parsed.unwrap_or_else(|| panic!("{name} in {} is not a replica name", d.display())));
            }
        }
        let c = self.client(None).await;
        let mut orphans = Vec::new();
        for (ino, gen) in held {
            let known = match c.meta().call(MetaRequest::Where { ino }).await {
                Ok(MetaResponse::Replicas { replicas, .. }) => {
                    replicas.iter().any(|r| r.server.host == host && r.gen == gen)
                }
                Ok(other) => panic!("where {ino}: {other:?}"),
                Err(fs_proto::rpc::CallError::Remote(e)) if e.code == fs_proto::ErrorCode::NotFound => false,
                Err(e) => panic!("where {ino}: {e}"),
            };
            if !known {
                orphans.push((ino, gen));
            }
        }
        let tmp = root.join("tmp");
        let left = std::fs::read_dir(&tmp)
            .unwrap_or_else(|e| panic!("{}: {e}", tmp.display()))
            .map(|e| e.expect("tmp entry").path())
            .collect();
        (orphans, left)
    }

    /// After a restart of `host` (which reconciles its spool), it holds
    /// nothing the meta server does not know and no unfinished write.
    pub async fn assert_no_orphans_after_restart(&self, host: &str) {
        self.restart_server(host).await;
        let (orphans, tmp) = self.spool_orphans(host).await;
        assert!(orphans.is_empty(), "{host} kept replicas nobody registered after a restart: {orphans:?}");
        assert!(tmp.is_empty(), "{host} kept unfinished writes after a restart: {tmp:?}");
    }

    /// A client library handle for `site`.
    pub async fn client(&self, site: Option<&str>) -> fs_client::Client {
        let cfg = match site {
            Some(s) => self.dir().join(format!("client-{s}.toml")),
            None => self.state.client_config.clone(),
        };
        fs_client::Client::connect(fs_client::ClientConfig::load(&cfg).expect("config")).await.expect("connect")
    }

    /// The log of a process.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir().join("logs").join(format!("{name}.log"))).unwrap_or_default()
    }
}

impl Drop for ProcFederation {
    fn drop(&mut self) {
        let _ = local::down(self.dir.path());
    }
}
