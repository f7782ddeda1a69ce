//! A federation of real processes for the VM service tests: `renkei local
//! up` (renkei-meta, renkei-server per PoP, `vpe serve`, `vpe agent` per
//! PoP), then the manager's and agents' configurations adjusted as structs
//! and those processes restarted, users' certificates and configurations,
//! and the `vpe` command run as each user. Everything is stopped, and any
//! libvirt object of this federation destroyed, on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use fs_client::local::{self, LocalSpec, LocalState};
use fs_client::ClientConfig;
use fs_proto::identity::{CaDir, IssueRequest, Role};
use fs_proto::vpe::{PopInfo, VmInfo};
use tokio::sync::{Mutex, MutexGuard};
use vpe::agent::AgentConfig;
use vpe::manager::{ManagerConfig, UserConfig};
use vpe::network::in_scope;
use vpe::{Hypervisor, Libvirt};

/// The libvirt URI the agents use.
pub const URI: &str = "qemu:///system";

static LOCK: Mutex<()> = Mutex::const_new(());

/// The SSH key the manager gives alice.
pub const ALICE_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAliceServiceTestKey alice@renkei";

/// Where the binaries are: `RENKEI_BIN_DIR`, else next to this test's `vpe`.
fn bin_dir() -> PathBuf {
    let dir = match std::env::var_os("RENKEI_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_BIN_EXE_vpe")).parent().expect("bin dir").to_path_buf(),
    };
    for b in ["renkei-meta", "renkei-server", "vpe"] {
        assert!(
            dir.join(b).exists(),
            "{} missing: build the binaries first (`cargo build --workspace --bins`, same profile) or set RENKEI_BIN_DIR",
            dir.join(b).display()
        );
    }
    dir
}

/// `None` (with the reason printed) unless `VPE_TEST_LIBVIRT=1`.
pub async fn enabled(test: &str) -> Option<MutexGuard<'static, ()>> {
    if std::env::var("VPE_TEST_LIBVIRT").as_deref() != Ok("1") {
        let why = "set VPE_TEST_LIBVIRT=1 to boot real guests through libvirt";
        // The workspace's one rule: under RENKEI_TEST_STRICT=1 a gate that
        // cannot run fails.
        assert!(
            std::env::var("RENKEI_TEST_STRICT").as_deref() != Ok("1"),
            "{test} cannot run: {why} (RENKEI_TEST_STRICT=1)"
        );
        eprintln!("skipping {test}: {why}");
        return None;
    }
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
    Some(LOCK.lock().await)
}

/// The global lock, for tests that need no libvirt (the manager's own
/// requests, such as registering an image): they always run.
pub async fn serial() -> MutexGuard<'static, ()> {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
    LOCK.lock().await
}

/// Adjusts the manager's configuration.
pub type ManagerTweak = Box<dyn Fn(&mut ManagerConfig)>;
/// Adjusts an agent's configuration (given the PoP's name).
pub type AgentTweak = Box<dyn Fn(&str, &mut AgentConfig)>;

/// What a test wants of its federation.
pub struct Setup {
    pub sites: usize,
    pub pops_per_site: usize,
    /// Applied to the manager's configuration (alice and bob are there already).
    pub manager: ManagerTweak,
    /// Applied to each agent's configuration.
    pub agent: AgentTweak,
}

impl Setup {
    pub fn new(sites: usize, pops_per_site: usize) -> Self {
        Self { sites, pops_per_site, manager: Box::new(|_| {}), agent: Box::new(|_, _| {}) }
    }
}

/// A running federation with the VM service.
pub struct Stack {
    _lock: MutexGuard<'static, ()>,
    dir: tempfile::TempDir,
    pub state: LocalState,
    bins: PathBuf,
    /// The test image (built by scripts/vm-image/build.sh).
    pub image: PathBuf,
}

fn user_config(max_vms: u32, keys: &[&str], lab: &[&str], data: &[&str]) -> UserConfig {
    UserConfig {
        allowed_sites: None,
        max_vms,
        ssh_keys: keys.iter().map(|k| k.to_string()).collect(),
        addresses: [
            ("lab".to_string(), lab.iter().map(|a| a.to_string()).collect()),
            ("data".to_string(), data.iter().map(|a| a.to_string()).collect()),
        ]
        .into(),
    }
}

impl Stack {
    pub async fn start(lock: MutexGuard<'static, ()>, setup: Setup) -> Result<Self> {
        Self::start_with(lock, setup, true).await
    }

    /// A federation whose image is a few bytes in each file (not bootable):
    /// enough for what needs no VM, such as registering images.
    pub async fn start_without_vms(lock: MutexGuard<'static, ()>, setup: Setup) -> Result<Self> {
        Self::start_with(lock, setup, false).await
    }

    async fn start_with(lock: MutexGuard<'static, ()>, setup: Setup, bootable: bool) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        // qemu runs as its own user and must traverse to the VMs' files.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711))?;
        let fed = dir.path().join("fed");
        let bins = bin_dir();
        let spec = LocalSpec {
            dir: fed.clone(),
            sites: setup.sites,
            servers_per_site: setup.pops_per_site,
            user: "alice".into(),
            bin_dir: Some(bins.clone()),
            env: Vec::new(),
            meta_toml: String::new(),
            ha: false,
        };
        let state = local::up(&spec, Duration::from_secs(30)).await.context("renkei local up")?;
        ensure!(state.procs.iter().any(|p| p.role == "vpe-manager"), "local up did not start the VM manager");
        let image = dir.path().join("image");
        if bootable {
            let status = Command::new("bash")
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/vm-image/build.sh"))
                .arg(&image)
                .output()?;
            ensure!(status.status.success(), "build.sh: {}", String::from_utf8_lossy(&status.stderr));
        } else {
            std::fs::create_dir(&image)?;
            for (file, bytes) in
                [("kernel", &b"not a kernel"[..]), ("initrd", b"not an initrd"), ("disk", b"not a disk")]
            {
                std::fs::write(image.join(file), bytes)?;
            }
            std::fs::write(
                image.join("image.toml"),
                "name = \"tiny\"\ncmdline = \"console=ttyS0\"\n[files]\nkernel = \"kernel\"\ninitrd = \"initrd\"\ndisk = \"disk\"\n",
            )?;
        }
        let stack = Self { _lock: lock, dir, state, bins, image };
        stack.add_user("bob")?;
        stack.reconfigure(&setup).await?;
        Ok(stack)
    }

    pub fn fed(&self) -> PathBuf {
        self.dir.path().join("fed")
    }

    /// Issues a user certificate and writes `client-<user>.toml` (at the first site).
    fn add_user(&self, user: &str) -> Result<()> {
        let ca = CaDir::new(self.fed().join("ca"));
        let files = ca.issue(&IssueRequest {
            name: user.into(),
            role: Role::User,
            site: None,
            not_before: None,
            valid_days: 30,
        })?;
        // The client config carries its `[vpe]` table (the manager's address).
        let mut cfg = ClientConfig::load(&self.state.client_config)?;
        ensure!(cfg.vpe.is_some(), "no [vpe] table in {}", self.state.client_config.display());
        cfg.tls.cert = files.cert;
        cfg.tls.key = files.key;
        std::fs::write(self.client_config(user), toml::to_string(&cfg)?)?;
        Ok(())
    }

    pub fn client_config(&self, user: &str) -> PathBuf {
        if user == "alice" {
            self.state.client_config.clone()
        } else {
            self.fed().join(format!("client-{user}.toml"))
        }
    }

    /// The PoP names, in order.
    pub fn pops(&self) -> Vec<String> {
        self.state.procs.iter().filter(|p| p.role == "server").map(|p| p.name.clone()).collect()
    }

    fn vpe_procs(&self) -> Vec<&local::LocalProc> {
        self.state.procs.iter().filter(|p| p.role.starts_with("vpe-")).collect()
    }

    /// Rewrites the manager's and agents' configurations and restarts them.
    async fn reconfigure(&self, setup: &Setup) -> Result<()> {
        for p in self.vpe_procs() {
            let pidfile = self.fed().join("run").join(format!("{}.pid", p.name));
            if let Some(pid) = local::running_pid(&pidfile) {
                // SAFETY: a process this federation started.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                // Its exit is the event (a pidfd), not a poll.
                let gone = local::wait_pid_gone(pid, Duration::from_secs(20))?;
                ensure!(gone, "{} did not stop within 20 s of SIGTERM", p.name);
            }
            if p.role == "vpe-manager" {
                let mut c = ManagerConfig::load(&p.config).map_err(anyhow::Error::msg)?;
                c.users.insert(
                    "alice".into(),
                    user_config(
                        4,
                        &[ALICE_KEY],
                        &["10.71.0.11/24", "10.71.0.12/24"],
                        &["10.72.0.11/16", "10.72.0.12/16"],
                    ),
                );
                c.users.insert("bob".into(), user_config(2, &[], &["10.71.0.21/24"], &["10.72.0.21/16"]));
                (setup.manager)(&mut c);
                std::fs::write(&p.config, toml::to_string(&c)?)?;
            } else {
                let mut c = AgentConfig::load(&p.config).map_err(anyhow::Error::msg)?;
                c.host.boot_timeout_secs = 120;
                (setup.agent)(p.name.trim_start_matches("vpe-"), &mut c);
                std::fs::write(&p.config, toml::to_string(&c)?)?;
            }
        }
        self.up(Vec::new()).await.context("restarting the VM service")
    }

    /// Restarts VM-service process `name` (`vpe-manager`, `vpe-<pop>`) with
    /// `RENKEI_CRASH_AT=point`: it kills itself when it gets there.
    pub async fn arm_crash(&self, name: &str, point: &str) -> Result<()> {
        let pidfile = self.fed().join("run").join(format!("{name}.pid"));
        let pid = local::running_pid(&pidfile).with_context(|| format!("{name} is not running"))?;
        // SAFETY: a process this federation started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        self.wait_gone(name, pid).await?;
        self.up(vec![(fs_proto::process::CRASH_AT_ENV.into(), point.into())]).await
    }

    /// Waits (bounded) for `name` to die at its crash point, then starts it
    /// again, unarmed.
    pub async fn restart_after_crash(&self, name: &str) -> Result<()> {
        let pidfile = self.fed().join("run").join(format!("{name}.pid"));
        if let Some(pid) = local::running_pid(&pidfile) {
            self.wait_gone(name, pid).await?;
        }
        self.up(Vec::new()).await
    }

    async fn wait_gone(&self, name: &str, pid: i32) -> Result<()> {
        let gone = tokio::task::spawn_blocking(move || local::wait_pid_gone(pid, Duration::from_secs(60))).await?;
        ensure!(gone.map_err(anyhow::Error::msg)?, "{name} (pid {pid}) still runs after 60 s");
        Ok(())
    }

    /// `renkei local up` again: starts whatever is not running, with `env`.
    async fn up(&self, env: Vec<(String, String)>) -> Result<()> {
        let spec = LocalSpec {
            dir: self.fed(),
            sites: 0,
            servers_per_site: 0,
            user: "alice".into(),
            bin_dir: Some(self.bins.clone()),
            env,
            meta_toml: String::new(),
            ha: false,
        };
        local::up(&spec, Duration::from_secs(30)).await.context("renkei local up")?;
        Ok(())
    }

    /// Runs `vpe --json ARGS` as `user`: stdout on success, stderr on failure.
    pub fn vpe(&self, user: &str, args: &[&str]) -> std::result::Result<String, String> {
        let out = Command::new(self.bins.join("vpe"))
            .env_remove("RUST_BACKTRACE")
            .arg("--config")
            .arg(self.client_config(user))
            .arg("--json")
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `vpe` that must succeed.
    pub fn vpe_ok(&self, user: &str, args: &[&str]) -> Result<String> {
        self.vpe(user, args).map_err(|e| anyhow::anyhow!("vpe {args:?} as {user} failed: {e}"))
    }

    /// `vpe` that must fail; returns its error message.
    pub fn vpe_err(&self, user: &str, args: &[&str]) -> Result<String> {
        match self.vpe(user, args) {
            Ok(out) => bail!("vpe {args:?} as {user} succeeded but should not have: {out}"),
            Err(e) => Ok(e),
        }
    }

    /// `vpe run ARGS` as `user`.
    pub fn run(&self, user: &str, args: &[&str]) -> Result<VmInfo> {
        let mut all = vec!["run"];
        all.extend_from_slice(args);
        Ok(serde_json::from_str(&self.vpe_ok(user, &all)?)?)
    }

    /// The serial console of a VM.
    pub fn console(&self, user: &str, vm: &str) -> Result<vpe::ConsoleReport> {
        let c: fs_proto::vpe::ConsoleText = serde_json::from_str(&self.vpe_ok(user, &["console", vm])?)?;
        Ok(vpe::console::parse(&c.text))
    }

    /// `vpe pops` as alice.
    pub fn pop_infos(&self) -> Result<Vec<PopInfo>> {
        Ok(serde_json::from_str(&self.vpe_ok("alice", &["pops"])?)?)
    }

    /// Registers the test image as `name` (as `user`), optionally with another command line.
    pub fn register(&self, user: &str, name: &str, extra: &[&str]) -> Result<fs_proto::vpe::ImageInfo> {
        let image = self.image.to_string_lossy().into_owned();
        let mut args = vec!["image", "register", name, &image];
        args.extend_from_slice(extra);
        Ok(serde_json::from_str(&self.vpe_ok(user, &args)?)?)
    }

    /// The bytes of the test image's three files.
    pub fn image_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for f in ["kernel", "initrd", "disk"] {
            total += std::fs::metadata(self.image.join(f))?.len();
        }
        Ok(total)
    }

    /// The state directory of PoP `pop`'s agent.
    pub fn pop_state(&self, pop: &str) -> PathBuf {
        self.fed().join("vpe").join(pop)
    }

    /// Fails unless no PoP holds anything of VM `pop_name`: no domain, no
    /// files (overlay, swap, seed, console), and no segment network of the PoP
    /// when none of its VMs is left.
    pub fn assert_gone(&self, pop_name: &str) -> Result<()> {
        let lv = Libvirt::connect(URI)?;
        let domains = lv.list()?;
        ensure!(!domains.contains(&format!("renkei-{pop_name}")), "domain of {pop_name} left: {domains:?}");
        for pop in self.pops() {
            let dir = self.pop_state(&pop).join("vms").join(pop_name);
            ensure!(
                !dir.exists(),
                "files of {pop_name} left on {pop}: {:?}",
                std::fs::read_dir(&dir).ok().map(|d| d.count())
            );
        }
        Ok(())
    }

    /// Fails unless every PoP is empty: no VM directory, domain or segment network.
    pub fn assert_pops_empty(&self) -> Result<()> {
        let lv = Libvirt::connect(URI)?;
        let nets = lv.list_networks()?;
        for pop in self.pops() {
            let vms = self.pop_state(&pop).join("vms");
            let left: Vec<_> = std::fs::read_dir(&vms)
                .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
                .unwrap_or_default();
            ensure!(left.is_empty(), "VM files left on {pop}: {left:?}");
            let mine: Vec<&String> = nets.iter().filter(|n| in_scope(&pop, n)).collect();
            ensure!(mine.is_empty(), "segment networks of {pop} left: {mine:?}");
        }
        let fed = self.fed();
        for d in lv.list()? {
            let ours = lv.console_log(&d).ok().flatten().is_some_and(|p| p.starts_with(&fed));
            ensure!(!ours, "domain {d} of this federation left");
        }
        Ok(())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = local::down(&self.fed());
        // Whatever a failing test left: this federation's domains and networks.
        let Ok(lv) = Libvirt::connect(URI) else { return };
        let fed = self.fed();
        for d in lv.list().unwrap_or_default() {
            if lv.console_log(&d).ok().flatten().is_some_and(|p| p.starts_with(&fed)) {
                eprintln!("test left domain {d}: destroying it");
                let _ = lv.destroy(&d);
            }
        }
        for pop in self.pops() {
            for n in lv.list_networks().unwrap_or_default().into_iter().filter(|n| in_scope(&pop, n)) {
                eprintln!("test left network {n}: destroying it");
                let _ = lv.remove_network(&n);
            }
        }
    }
}
