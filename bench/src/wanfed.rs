//! A renkei federation of real processes at emulated sites: the meta server
//! in one site's network namespace, file servers in others, all joined by
//! the [`crate::wan`] emulator, and in-process clients whose sockets live in
//! a chosen site. Used by WAN tests and benchmarks.

use crate::wan::Wan;
use anyhow::Context;
use fs_client::{Client, ClientConfig};
use fs_proto::endpoint::{client_endpoint_on, TlsFiles, TlsIdentity, Tuning};
use fs_proto::identity::{CaDir, IssueRequest, Role};
use fs_proto::rpc::PeerAddr;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// UDP port of the meta server inside its site.
pub const META_PORT: u16 = 7470;
/// UDP port of a file server inside its site.
pub const SERVER_PORT: u16 = 7471;

/// Where the processes go.
#[derive(Debug, Clone)]
pub struct WanFedSpec {
    /// Site of the meta server.
    pub meta_site: String,
    /// Sites that get a file server each (may include the meta site).
    pub server_sites: Vec<String>,
    /// Directory of renkei-meta and renkei-server.
    pub bin_dir: PathBuf,
    /// Heartbeat interval of the servers (ms).
    pub heartbeat_ms: u64,
}

/// The running federation. Dropping it kills its processes (and the
/// emulator's own teardown removes the sites).
pub struct WanFederation {
    dir: tempfile::TempDir,
    ca: CaDir,
    meta: PeerAddr,
    children: Vec<(String, Child)>,
    spec: WanFedSpec,
}

fn pop_name(site: &str) -> String {
    format!("pop-{site}")
}

/// One process of a federation: its name, the site it runs in, its binary
/// and its configuration file.
#[derive(Debug, Clone)]
pub struct FedProc {
    /// `meta` or `pop-SITE`.
    pub name: String,
    /// Site (network namespace) it runs in.
    pub site: String,
    /// Its binary.
    pub bin: PathBuf,
    /// Its configuration file.
    pub config: PathBuf,
}

/// Write a CA, certificates and configurations for `spec` under `dir` (the
/// sites' addresses from `addr_of`): the meta server's address and the
/// processes to start, meta first. Shared by [`WanFederation::start`] and
/// `renkei-bench wan fed up`.
pub fn prepare(
    dir: &Path,
    spec: &WanFedSpec,
    addr_of: &dyn Fn(&str) -> anyhow::Result<Ipv4Addr>,
) -> anyhow::Result<(CaDir, PeerAddr, Vec<FedProc>)> {
    let ca = CaDir::new(dir.join("ca"));
    ca.init("wan-test")?;
    let issue = |name: &str, role: Role, site: Option<&str>| -> anyhow::Result<TlsFiles> {
        let f = ca.issue(&IssueRequest {
            name: name.into(),
            role,
            site: site.map(str::to_string),
            not_before: None,
            valid_days: 7,
        })?;
        Ok(TlsFiles { ca: ca.cert_path(), cert: f.cert, key: f.key })
    };
    let meta_ip: Ipv4Addr = addr_of(&spec.meta_site)?;
    let meta = PeerAddr { addr: SocketAddr::from((meta_ip, META_PORT)), name: "meta".into() };
    std::fs::create_dir_all(dir.join("logs"))?;
    let mut procs = Vec::new();

    let tls = issue("meta", Role::Host, Some(&spec.meta_site))?;
    let meta_cfg = dir.join("meta.toml");
    std::fs::write(
        &meta_cfg,
        format!(
            "listen = \"{}\"\ndb = \"{}\"\nhost_timeout_ms = {}\n\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            meta.addr,
            dir.join("meta.db").display(),
            spec.heartbeat_ms * 5,
            tls.ca.display(),
            tls.cert.display(),
            tls.key.display()
        ),
    )?;
    procs.push(FedProc {
        name: "meta".into(),
        site: spec.meta_site.clone(),
        bin: spec.bin_dir.join("renkei-meta"),
        config: meta_cfg,
    });

    for site in &spec.server_sites {
        let name = pop_name(site);
        let tls = issue(&name, Role::Host, Some(site))?;
        let addr = SocketAddr::from((addr_of(site)?, SERVER_PORT));
        let cfg = dir.join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "listen = \"{addr}\"\nspool = \"{}\"\nheartbeat_ms = {}\n\n[meta]\naddr = \"{}\"\nname = \"meta\"\n\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
                dir.join("spool").join(&name).display(),
                spec.heartbeat_ms,
                meta.addr,
                tls.ca.display(),
                tls.cert.display(),
                tls.key.display()
            ),
        )?;
        procs.push(FedProc { name, site: site.clone(), bin: spec.bin_dir.join("renkei-server"), config: cfg });
    }
    Ok((ca, meta, procs))
}

/// A client configuration for `user` at `site` of the federation whose CA
/// is `ca` and meta server `meta`, written to `dir/client-SITE-USER.toml`
/// too; returns (config, path).
pub fn client_config(
    ca: &CaDir,
    meta: &PeerAddr,
    dir: &Path,
    site: &str,
    user: &str,
) -> anyhow::Result<(ClientConfig, PathBuf)> {
    let paths = ca.issued_paths(Role::User, user);
    let files = if paths.cert.exists() {
        TlsFiles { ca: ca.cert_path(), cert: paths.cert, key: paths.key }
    } else {
        let f = ca.issue(&IssueRequest {
            name: user.into(),
            role: Role::User,
            site: None,
            not_before: None,
            valid_days: 7,
        })?;
        TlsFiles { ca: ca.cert_path(), cert: f.cert, key: f.key }
    };
    let cfg = ClientConfig::new(meta.clone(), site.to_string(), files);
    let path = dir.join(format!("client-{site}-{user}.toml"));
    std::fs::write(&path, toml::to_string(&cfg)?)?;
    Ok((cfg, path))
}

impl WanFederation {
    /// Write certificates and configs and start the processes in their sites.
    pub fn start(wan: &Wan, spec: WanFedSpec) -> anyhow::Result<Self> {
        Self::start_with_admin(wan, spec, None)
    }

    /// [`Self::start`], with federation user `admin` (if any) declared an
    /// admin at the meta server: `renkei netcheck` is for admins.
    pub fn start_with_admin(wan: &Wan, spec: WanFedSpec, admin: Option<&str>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let (ca, meta, procs) = prepare(dir.path(), &spec, &|site| Ok(wan.addr_of(site)?))?;
        if let (Some(admin), Some(meta_proc)) = (admin, procs.first()) {
            let mut cfg = std::fs::OpenOptions::new().append(true).open(&meta_proc.config)?;
            std::io::Write::write_all(
                &mut cfg,
                format!("\n[[users]]\nname = \"{admin}\"\nuid = 900\nadmin = true\n").as_bytes(),
            )
            .context("declaring the admin user")?;
        }
        let logs = dir.path().join("logs");
        let mut children = Vec::new();
        for p in procs {
            let child = spawn(wan, &p.site, &p.bin, &p.config, &logs, &p.name)?;
            children.push((p.name, child));
        }
        Ok(WanFederation { dir, ca, meta, children, spec })
    }

    /// The scratch directory (certificates, configs, spools, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Host name of the file server at `site`.
    pub fn server_name(site: &str) -> String {
        pop_name(site)
    }

    /// A client configuration for `user` at `site`, written to a file too
    /// (for running the CLI inside the site); returns (config, path).
    pub fn client_config(&self, site: &str, user: &str) -> anyhow::Result<(ClientConfig, PathBuf)> {
        client_config(&self.ca, &self.meta, self.dir(), site, user)
    }

    /// An in-process client whose socket lives in `site`.
    pub async fn client(&self, wan: &Wan, site: &str, user: &str) -> anyhow::Result<Client> {
        let (cfg, _) = self.client_config(site, user)?;
        let tls = TlsIdentity::load(&cfg.tls)?;
        let site_h = wan.site(site)?;
        let ip = site_h.addr();
        let socket = site_h.run_in(move || std::net::UdpSocket::bind((ip, 0)))?;
        let ep = client_endpoint_on(socket, &tls, &Tuning::default())?;
        Ok(Client::with_endpoint(cfg, tls.identity, ep))
    }

    /// Wait until every file server is alive (as seen from `site`).
    pub async fn wait_alive(&self, wan: &Wan, site: &str, bound: Duration) -> anyhow::Result<()> {
        let c = self.client(wan, site, "harness").await?;
        let want: Vec<String> = self.spec.server_sites.iter().map(|s| pop_name(s)).collect();
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < bound {
            match c.hosts().await {
                Ok(h) => {
                    let alive: Vec<&str> = h.iter().filter(|h| h.alive).map(|h| h.host.as_str()).collect();
                    if want.iter().all(|w| alive.contains(&w.as_str())) {
                        return Ok(());
                    }
                    last = format!("alive: {alive:?}");
                }
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::bail!("federation not up within {bound:?} ({last}); logs in {}", self.dir().join("logs").display())
    }

    /// The log of a process.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir().join("logs").join(format!("{name}.log"))).unwrap_or_default()
    }
}

fn spawn(wan: &Wan, site: &str, bin: &Path, cfg: &Path, logs: &Path, name: &str) -> anyhow::Result<Child> {
    anyhow::ensure!(bin.exists(), "{} missing: build the binaries first", bin.display());
    let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
    let child = wan
        .site(site)?
        .command(bin)
        .arg("--config")
        .arg(cfg)
        .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info,quinn=warn".into()))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {name} in site {site}"))?;
    Ok(child)
}

impl Drop for WanFederation {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
