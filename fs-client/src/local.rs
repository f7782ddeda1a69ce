//! A whole federation on this machine, as real processes: `renkei local up`
//! makes a CA, certificates and configs under one directory, starts one
//! `renkei-meta` and one `renkei-server` per site on loopback, and waits
//! until every server is alive. Running `up` again restarts whatever is not
//! running; `down` stops everything it started.
//!
//! Layout of the directory: `ca/` (CA and certificates), `meta.toml`,
//! `meta.db/`, `<server>.toml`, `spool/<server>/`, `client.toml` (a client
//! at the first site) and `client-<site>.toml`, `logs/`, `run/*.pid`,
//! `federation.json` (what was set up), and `vpe/` when the VM service is
//! there too (see `local/vpe.rs`). With two meta servers (`--ha`, on etcd)
//! the second has `meta2.toml` and `meta2.db/`, and the etcd members run
//! from `etcd/` (see `local/etcd.rs`).

use crate::config::ClientConfig;
use crate::error::ClientError;
use fs_proto::endpoint::TlsFiles;
use fs_proto::identity::{CaDir, IssueRequest, Role};
use fs_proto::rpc::{MetaAddrs, PeerAddr};
use serde::{Deserialize, Serialize};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, ClientError>;

pub mod etcd;
mod vpe;

/// What to set up.
#[derive(Debug, Clone)]
pub struct LocalSpec {
    /// The directory holding everything.
    pub dir: PathBuf,
    /// Number of sites (one file server each, times `servers_per_site`).
    pub sites: usize,
    /// File servers per site.
    pub servers_per_site: usize,
    /// Federation user to issue a certificate for.
    pub user: String,
    /// Where `renkei-meta` and `renkei-server` are (default: next to this
    /// executable, or `RENKEI_BIN_DIR`).
    pub bin_dir: Option<PathBuf>,
    /// Extra environment for the processes started now (fault tests arm
    /// crash points this way, see [`fs_proto::process::crash_point`]).
    pub env: Vec<(String, String)>,
    /// TOML appended to the meta server's configuration when the
    /// federation is created (e.g. a `[store]` table); empty for none.
    pub meta_toml: String,
    /// Two meta servers (`meta` and `meta2`, same certificate, own ports
    /// and mirrors) on the etcd store `meta_toml` names (if it names none:
    /// on three etcd members started here, `etcd1`..`etcd3`): one leads,
    /// the other stands by; every client and file server lists both.
    pub ha: bool,
}

/// One process of the local federation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalProc {
    /// Host name.
    pub name: String,
    /// Site.
    pub site: String,
    /// `meta` or `server`.
    pub role: String,
    /// Config file.
    pub config: PathBuf,
    /// UDP address.
    pub addr: SocketAddr,
}

/// What `up` set up (stored as `federation.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalState {
    /// Sites in order.
    pub sites: Vec<String>,
    /// Processes, meta first.
    pub procs: Vec<LocalProc>,
    /// The user certificate issued.
    pub user: String,
    /// Client config for the first site.
    pub client_config: PathBuf,
    /// The status page (`http://127.0.0.1:PORT/`, metrics at `/metrics`).
    #[serde(default)]
    pub web: Option<String>,
}

fn local_err(p: &Path, e: std::io::Error) -> ClientError {
    ClientError::Local { path: p.to_path_buf(), source: e }
}

fn cfg_err(e: impl std::fmt::Display) -> ClientError {
    ClientError::Config(e.to_string())
}

/// The lowest port the kernel hands out on its own (`bind` to port 0, a
/// client's QUIC endpoint): ports below it are taken only by explicit binds.
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A free port for a server of the federation, outside the kernel's
/// ephemeral range: the port is written into the configs and reused at
/// every restart, and one in the ephemeral range could meanwhile be handed
/// to any client socket (a process killed and restarted would then find
/// its port taken). Tried at random in `[20000, ephemeral low)`; falls back
/// to a kernel-chosen port when that range is exhausted.
fn free_port(bindable: impl Fn(SocketAddr) -> std::io::Result<SocketAddr>) -> Result<SocketAddr> {
    const LOW: u16 = 20_000;
    let high = ephemeral_low();
    if high > LOW + 100 {
        let seed = format!("{}:{:?}", std::process::id(), std::time::SystemTime::now());
        let mut hash = blake3::Hasher::new();
        hash.update(seed.as_bytes());
        let mut draws = hash.finalize_xof();
        for _ in 0..256 {
            let mut b = [0u8; 2];
            draws.fill(&mut b);
            let port = LOW + u16::from_le_bytes(b) % (high - LOW);
            if let Ok(addr) = bindable(SocketAddr::from(([127, 0, 0, 1], port))) {
                return Ok(addr);
            }
        }
    }
    bindable(SocketAddr::from(([127, 0, 0, 1], 0))).map_err(|e| local_err(Path::new("socket"), e))
}

fn free_tcp_port() -> Result<SocketAddr> {
    free_port(|a| std::net::TcpListener::bind(a)?.local_addr())
}

fn free_udp_port() -> Result<SocketAddr> {
    free_port(|a| UdpSocket::bind(a)?.local_addr())
}

/// Directory of the server binaries.
pub fn bin_dir(spec: Option<&Path>) -> PathBuf {
    if let Some(d) = spec {
        return d.to_path_buf();
    }
    if let Some(d) = std::env::var_os("RENKEI_BIN_DIR") {
        return PathBuf::from(d);
    }
    std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf)).unwrap_or_else(|| PathBuf::from("."))
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("federation.json")
}

/// Read `federation.json`.
pub fn load_state(dir: &Path) -> Result<LocalState> {
    let p = state_path(dir);
    let text = std::fs::read_to_string(&p).map_err(|e| local_err(&p, e))?;
    serde_json::from_str(&text).map_err(cfg_err)
}

fn toml_str(v: &impl Serialize) -> Result<String> {
    toml::to_string_pretty(v).map_err(cfg_err)
}

fn create(spec: &LocalSpec) -> Result<LocalState> {
    let dir = &spec.dir;
    let ca = CaDir::new(dir.join("ca"));
    ca.init("renkei-local").map_err(cfg_err)?;
    let issue = |name: &str, role: Role, site: Option<&str>| {
        ca.issue(&IssueRequest {
            name: name.into(),
            role,
            site: site.map(str::to_string),
            not_before: None,
            valid_days: fs_proto::identity::DEFAULT_VALID_DAYS,
        })
        .map_err(cfg_err)
    };
    let sites: Vec<String> = (1..=spec.sites).map(|i| format!("site{i}")).collect();
    let mut procs = Vec::new();
    let mut meta_toml = spec.meta_toml.clone();
    if spec.ha && !meta_toml.contains("kind = \"etcd\"") {
        if etcd::etcd_binary().is_none() {
            return Err(ClientError::Config("--ha needs etcd (Debian package etcd-server)".into()));
        }
        meta_toml.push_str(&etcd::create_members(dir, &sites[0], &mut procs).map_err(ClientError::Config)?);
    }
    let meta_addr = free_udp_port()?;
    let meta_files = issue("meta", Role::Host, Some(&sites[0]))?;
    let tls =
        |f: &fs_proto::identity::IssuedFiles| TlsFiles { ca: ca.cert_path(), cert: f.cert.clone(), key: f.key.clone() };

    let uid = unsafe { libc::getuid() };
    let gid = unsafe { libc::getgid() };
    let pops: Vec<(String, String)> = sites
        .iter()
        .enumerate()
        .flat_map(|(i, site)| {
            (0..spec.servers_per_site).map(move |j| {
                let name = if spec.servers_per_site == 1 {
                    format!("pop{}", i + 1)
                } else {
                    format!("pop{}-{}", i + 1, j + 1)
                };
                (name, site.clone())
            })
        })
        .collect();
    let with_vpe = vpe::available(&bin_dir(spec.bin_dir.as_deref()));
    // Hosts' roles, explicit: the PoPs are the file servers; the VM manager
    // acts as root in the namespace, the PoPs as VM agents (they read
    // private images and write saved ones) as root under /vpe only.
    let names = |v: &mut dyn Iterator<Item = &str>| v.map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ");
    let mut roles = format!("file_servers = [{}]\n", names(&mut pops.iter().map(|(n, _)| n.as_str())));
    if with_vpe {
        roles.push_str("admin_hosts = [\"vpe\"]\n");
        roles.push_str(&format!("vpe_hosts = [{}]\n", names(&mut pops.iter().map(|(n, _)| n.as_str()))));
    }
    // The meta servers: `meta`, and with `ha` its standby `meta2` with the
    // same identity (certificate and key: capabilities either signs verify
    // alike) on its own port, database directory and status page.
    let mut metas = Vec::new();
    let mut web = None;
    for (i, name) in ["meta", "meta2"].into_iter().take(if spec.ha { 2 } else { 1 }).enumerate() {
        let addr = if i == 0 { meta_addr } else { free_udp_port()? };
        let mut meta =
            fs_meta_config(&dir.join(format!("{name}.db")), tls(&meta_files), addr, &spec.user, uid, gid, &roles);
        // The status page and /metrics, on loopback only.
        let port = free_tcp_port()?;
        web.get_or_insert(port);
        meta.push_str(&format!("\n[monitor]\nweb = \"{port}\"\n"));
        meta.push_str(&meta_toml);
        let meta_cfg = dir.join(format!("{name}.toml"));
        std::fs::write(&meta_cfg, meta).map_err(|e| local_err(&meta_cfg, e))?;
        procs.push(LocalProc {
            name: name.into(),
            site: sites[0].clone(),
            role: "meta".into(),
            config: meta_cfg,
            addr,
        });
        metas.push(PeerAddr { addr, name: "meta".into() });
    }
    let web = web.expect("one meta server at least");
    let meta_peer = metas[0].clone();
    let meta_addrs = MetaAddrs::new(metas).map_err(cfg_err)?;
    for (name, site) in pops {
        {
            let files = issue(&name, Role::Host, Some(&site))?;
            let addr = free_udp_port()?;
            let cfg = ServerToml {
                listen: addr,
                spool: dir.join("spool").join(&name),
                meta: meta_addrs.clone(),
                tls: tls(&files),
                heartbeat_ms: 1000,
            };
            let path = dir.join(format!("{name}.toml"));
            std::fs::write(&path, toml_str(&cfg)?).map_err(|e| local_err(&path, e))?;
            procs.push(LocalProc { name, site, role: "server".into(), config: path, addr });
        }
    }

    let user_files = issue(&spec.user, Role::User, None)?;
    let mut client_config = PathBuf::new();
    for (i, site) in sites.iter().enumerate() {
        let c = ClientConfig::new(meta_addrs.clone(), site.clone(), tls(&user_files));
        let text = toml_str(&c)?;
        let p = dir.join(format!("client-{site}.toml"));
        std::fs::write(&p, &text).map_err(|e| local_err(&p, e))?;
        if i == 0 {
            client_config = dir.join("client.toml");
            std::fs::write(&client_config, &text).map_err(|e| local_err(&client_config, e))?;
        }
    }
    if with_vpe {
        vpe::create(dir, &ca, &sites, &mut procs, &meta_peer, &spec.user)?;
    }
    let web = Some(format!("http://{web}/"));
    let state = LocalState { sites, procs, user: spec.user.clone(), client_config, web };
    let sp = state_path(dir);
    std::fs::write(&sp, serde_json::to_string_pretty(&state).map_err(cfg_err)?).map_err(|e| local_err(&sp, e))?;
    Ok(state)
}

#[derive(Serialize)]
struct ServerToml {
    listen: SocketAddr,
    spool: PathBuf,
    meta: MetaAddrs,
    tls: TlsFiles,
    heartbeat_ms: u64,
}

fn fs_meta_config(db: &Path, tls: TlsFiles, listen: SocketAddr, user: &str, uid: u32, gid: u32, roles: &str) -> String {
    // The local user owns what they create; uid 0 would make every file
    // root's, so root is mapped to 1000 in the namespace. The local user is
    // an admin so a mount can act for other local users (see the mount docs).
    let uid = if uid == 0 { 1000 } else { uid };
    let gid = if gid == 0 { 1000 } else { gid };
    format!(
        "# renkei-meta configuration written by `renkei local up`; see fs-meta/meta.toml.\n\
         listen = \"{listen}\"\ndb = \"{db}\"\nhost_timeout_ms = 5000\n{roles}\n\
         [tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\n\
         [[users]]\nname = \"{user}\"\nuid = {uid}\ngid = {gid}\nadmin = true\n",
        db = db.display(),
        ca = tls.ca.display(),
        cert = tls.cert.display(),
        key = tls.key.display(),
    )
}

/// Whether the process in a pid file is running.
pub fn running_pid(pidfile: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    running_pid_of(pid).then_some(pid)
}

/// Whether process `pid` exists and is not a zombie.
pub fn running_pid_of(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    let not_zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().map(|r| !r.trim_start().starts_with('Z')).unwrap_or(true))
        .unwrap_or(false);
    alive && not_zombie
}

/// Wait (at most `bound`) until process `pid` has exited entirely: every
/// thread gone, so every socket it held is closed. Right after SIGKILL the
/// main thread may already be a zombie while another thread still holds the
/// process's sockets; a new process started then could not bind its port.
/// Waits on a pidfd, which becomes readable only once the whole thread group
/// has exited. `Ok(false)`: still there after `bound`.
pub fn wait_pid_gone(pid: i32, bound: Duration) -> std::io::Result<bool> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        // No such process: it is gone (and reaped) already.
        return if e.raw_os_error() == Some(libc::ESRCH) { Ok(true) } else { Err(e) };
    }
    // SAFETY: fd is a descriptor pidfd_open just returned, owned here.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    let until = Instant::now() + bound;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n > 0 {
            return Ok(true);
        }
        if n == 0 {
            return Ok(false);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Wait (at most `bound`) until the process in `pidfile` has no live
/// thread left.
fn wait_exited(pidfile: &Path, bound: Duration) -> Result<()> {
    let Some(pid) = std::fs::read_to_string(pidfile).ok().and_then(|s| s.trim().parse::<i32>().ok()) else {
        return Ok(());
    };
    match wait_pid_gone(pid, bound) {
        Ok(true) => Ok(()),
        Ok(false) => Err(ClientError::Config(format!(
            "process {pid} ({}) is still exiting after {} s; try again once it is gone",
            pidfile.display(),
            bound.as_secs()
        ))),
        Err(e) => Err(ClientError::Config(format!("wait for process {pid} ({}) to exit: {e}", pidfile.display()))),
    }
}

fn pidfile(dir: &Path, name: &str) -> PathBuf {
    dir.join("run").join(format!("{name}.pid"))
}

/// Start one process of the federation (if it is not running).
pub fn start_proc(dir: &Path, p: &LocalProc, bins: &Path, env: &[(String, String)]) -> Result<Option<i32>> {
    let pf = pidfile(dir, &p.name);
    if running_pid(&pf).is_some() {
        return Ok(None);
    }
    // A process killed a moment ago may still hold its port.
    wait_exited(&pf, Duration::from_secs(10))?;
    let (bin, subcommand, config_flag) = match vpe::command(&p.role, bins) {
        Some((bin, sub)) => (bin, Some(sub), "--config"),
        None if p.role == etcd::ROLE => {
            (etcd::etcd_binary().unwrap_or_else(|| PathBuf::from("etcd")), None, "--config-file")
        }
        None => (bins.join(if p.role == "meta" { "renkei-meta" } else { "renkei-server" }), None, "--config"),
    };
    if !bin.exists() {
        return Err(ClientError::Config(format!(
            "{} not found (build the workspace with `cargo build --release`, or set RENKEI_BIN_DIR)",
            bin.display()
        )));
    }
    for d in ["logs", "run"] {
        std::fs::create_dir_all(dir.join(d)).map_err(|e| local_err(&dir.join(d), e))?;
    }
    let log_path = dir.join("logs").join(format!("{}.log", p.name));
    let log =
        std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(|e| local_err(&log_path, e))?;
    let log2 = log.try_clone().map_err(|e| local_err(&log_path, e))?;
    let child = std::process::Command::new(&bin)
        .args(subcommand)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .arg(config_flag)
        .arg(&p.config)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .spawn()
        .map_err(|e| local_err(&bin, e))?;
    let pid = child.id() as i32;
    std::fs::write(&pf, pid.to_string()).map_err(|e| local_err(&pf, e))?;
    Ok(Some(pid))
}

/// Bring the federation up (creating it on first use) and wait until every
/// file server is alive, at most `wait`.
pub async fn up(spec: &LocalSpec, wait: Duration) -> Result<LocalState> {
    std::fs::create_dir_all(&spec.dir).map_err(|e| local_err(&spec.dir, e))?;
    let state = if state_path(&spec.dir).exists() {
        load_state(&spec.dir)?
    } else {
        if spec.sites == 0 || spec.servers_per_site == 0 {
            return Err(ClientError::Config("need at least one site and one server per site".into()));
        }
        create(spec)?
    };
    let bins = bin_dir(spec.bin_dir.as_deref());
    // A process found running may be one just killed, about to be gone:
    // once everything is up, check again, and start what died meanwhile.
    for round in 0..3 {
        let started_ms = fs_proto::Timestamp::now().as_millis();
        let mut started = Vec::new();
        for p in &state.procs {
            if let Some(pid) = start_proc(&spec.dir, p, &bins, &spec.env)? {
                started.push((p.clone(), pid));
            }
        }
        // A server started now counts only once it heartbeats itself (meta
        // may still show the heartbeats of the one it replaces).
        let fresh: Vec<&str> =
            started.iter().filter(|(p, _)| p.role == "server").map(|(p, _)| p.name.as_str()).collect();
        let waited = wait_alive_since(&spec.dir, &state, wait, &fresh, started_ms, &started).await;
        // Whatever was started must still be running: say which did not, and why.
        for (p, pid) in &started {
            if running_pid(&pidfile(&spec.dir, &p.name)) != Some(*pid) {
                let log = spec.dir.join("logs").join(format!("{}.log", p.name));
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(ClientError::Config(format!(
                    "{} (process {pid}) exited right after starting; from {}:\n{}",
                    p.name,
                    log.display(),
                    last_error(&text)
                )));
            }
        }
        waited?;
        let gone: Vec<&str> = state
            .procs
            .iter()
            .filter(|p| running_pid(&pidfile(&spec.dir, &p.name)).is_none())
            .map(|p| p.name.as_str())
            .collect();
        if gone.is_empty() {
            vpe::wait_ready(&state, &bins, wait).await?;
            return Ok(state);
        }
        tracing::info!(?gone, round, "processes that were running are gone: starting them");
    }
    Err(ClientError::Config(format!("processes of {} keep dying right after `up`; see its logs", spec.dir.display())))
}

/// What a process that died said about why: its last `Error:` report (the
/// message and its causes, without a backtrace), else its last lines.
fn last_error(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    match lines.iter().rposition(|l| l.starts_with("Error: ")) {
        Some(at) => lines[at..]
            .iter()
            .take_while(|l| !l.starts_with("Stack backtrace:"))
            .filter(|l| !l.trim().is_empty())
            .take(8)
            .copied()
            .collect::<Vec<_>>()
            .join("\n"),
        None => lines[lines.len().saturating_sub(5)..].join("\n"),
    }
}

/// Wait until every file server of the federation is reported alive.
pub async fn wait_alive(dir: &Path, state: &LocalState, wait: Duration) -> Result<()> {
    wait_alive_since(dir, state, wait, &[], 0, &[]).await
}

/// Wait until every file server is reported alive, those in `fresh` with a
/// heartbeat at or after `since_ms`.
async fn wait_alive_since(
    dir: &Path,
    state: &LocalState,
    wait: Duration,
    fresh: &[&str],
    since_ms: u64,
    started: &[(LocalProc, i32)],
) -> Result<()> {
    let client = crate::Client::connect(ClientConfig::load(&state.client_config)?).await?;
    let want: Vec<&str> = state.procs.iter().filter(|p| p.role == "server").map(|p| p.name.as_str()).collect();
    let start = Instant::now();
    let mut last = String::from("no answer yet");
    while start.elapsed() < wait {
        // A process started now that died already will not come: stop
        // waiting (the caller says which and why).
        if started.iter().any(|(p, pid)| running_pid(&pidfile(dir, &p.name)) != Some(*pid)) {
            return Err(ClientError::Config("a process exited right after starting".into()));
        }
        match client.hosts().await {
            Ok(hosts) => {
                let alive: Vec<&str> = hosts
                    .iter()
                    .filter(|h| h.alive && (!fresh.contains(&h.host.as_str()) || h.last_heartbeat_ms >= since_ms))
                    .map(|h| h.host.as_str())
                    .collect();
                if want.iter().all(|w| alive.contains(w)) {
                    return Ok(());
                }
                last = format!("alive: {alive:?}, expected {want:?}");
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(ClientError::Config(format!(
        "federation in {} did not come up within {} s ({last}); see {}/logs",
        dir.display(),
        wait.as_secs(),
        dir.display()
    )))
}

/// Stop every process of the federation; returns how many were running.
pub fn down(dir: &Path) -> Result<usize> {
    let state = load_state(dir)?;
    let mut pids = Vec::new();
    for p in state.procs.iter().rev() {
        let pf = pidfile(dir, &p.name);
        if let Some(pid) = running_pid(&pf) {
            // SAFETY: sending SIGTERM to a pid we started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            pids.push((pid, pf));
        } else {
            let _ = std::fs::remove_file(&pf);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for (pid, pf) in &pids {
        while running_pid(pf).is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if running_pid(pf).is_some() {
            // SAFETY: as above; it ignored SIGTERM for 5 s.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        let _ = std::fs::remove_file(pf);
    }
    Ok(pids.len())
}

/// Whether meta server `p` of the federation answers a request: the one
/// that leads does, a standby refuses (at once) or is not reachable.
pub async fn meta_answers(state: &LocalState, p: &LocalProc) -> bool {
    let Ok(mut cfg) = ClientConfig::load(&state.client_config) else { return false };
    let name = cfg.meta.first().name.clone();
    cfg.meta = PeerAddr { addr: p.addr, name }.into();
    let Ok(client) = crate::Client::connect(cfg).await else { return false };
    matches!(tokio::time::timeout(Duration::from_secs(5), client.meta().whoami()).await, Ok(Ok(_)))
}

/// (process, pid if running) for each process.
pub fn status(dir: &Path) -> Result<Vec<(LocalProc, Option<i32>)>> {
    let state = load_state(dir)?;
    Ok(state
        .procs
        .into_iter()
        .map(|p| {
            let pid = running_pid(&pidfile(dir, &p.name));
            (p, pid)
        })
        .collect())
}
