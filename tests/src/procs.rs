//! The real binaries as processes: a federation brought up with
//! `fs_client::local::up` (what `renkei local up` does), the `renkei` CLI run
//! as a command, and processes killed with SIGKILL.

use fs_client::local::{self, LocalSpec, LocalState};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

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
        crate::init_logs();
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = LocalSpec {
            dir: dir.path().to_path_buf(),
            sites,
            servers_per_site: 1,
            user: "tester".into(),
            bin_dir: Some(bin_dir()),
            env: Vec::new(),
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
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        local::up(&spec, Duration::from_secs(30)).await.map(|_| ())
    }

    /// Wait until process `name` has died by itself (a crash point), at
    /// most `bound`.
    pub async fn wait_dead(&self, name: &str, bound: Duration) {
        let t = std::time::Instant::now();
        while self.pid(name).is_some() {
            assert!(t.elapsed() < bound, "{name} still running after {bound:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
