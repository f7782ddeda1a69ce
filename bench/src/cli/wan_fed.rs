//! `renkei-bench wan fed up|exec|status|down`: a renkei federation on the
//! WAN that `wan up` runs, for a person to try tools across the emulated
//! link without writing code. The meta server runs in one site, a file
//! server in each (or the chosen) site, as processes in the sites' network
//! namespaces that outlive the command; `exec` runs a command in a site with
//! `RENKEI_CONFIG` set for that site; `down` (and `wan down`) stops them
//! and removes their files.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bench::wan::state::{RunState, SiteState};
use bench::wan::{netns, site};
use bench::wanfed::{self, WanFedSpec};
use clap::{Args, Subcommand};
use fs_proto::identity::CaDir;
use fs_proto::rpc::PeerAddr;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::wan::DirArgs;

/// Arguments of `renkei-bench wan fed`.
#[derive(Debug, Args)]
pub struct FedArgs {
    #[command(subcommand)]
    command: FedCommand,
}

#[derive(Debug, Subcommand)]
enum FedCommand {
    /// Start a meta server in one site and a file server in each server
    /// site, and write a client configuration per site.
    Up(UpArgs),
    /// Run a command in a site with RENKEI_CONFIG set for it and the renkei
    /// binaries on PATH: `wan fed exec SITE -- CMD ARGS...`.
    Exec(ExecArgs),
    /// Show the federation's processes and whether each is running.
    Status(DirArgs),
    /// Stop the federation's processes and remove its files.
    Down(DirArgs),
}

#[derive(Debug, Args)]
struct UpArgs {
    /// Site of the meta server (default: the first site).
    #[arg(long)]
    meta: Option<String>,
    /// Sites that get a file server, comma-separated (default: every site).
    #[arg(long, value_delimiter = ',')]
    servers: Vec<String>,
    /// Federation user the client configurations are for.
    #[arg(long, default_value = "user")]
    user: String,
    /// Directory of renkei, renkei-meta and renkei-server (default:
    /// $RENKEI_BIN_DIR, else the directory of renkei-bench).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    #[command(flatten)]
    dir: DirArgs,
}

#[derive(Debug, Args)]
struct ExecArgs {
    /// Site to run in.
    site: String,
    /// Federation user whose configuration to use (issued on first use).
    #[arg(long, default_value = "user")]
    user: String,
    /// Command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
    #[command(flatten)]
    dir: DirArgs,
}

/// What `up` started, in `STATE_DIR/fed/fed.json`.
#[derive(Debug, Serialize, Deserialize)]
struct FedState {
    /// The WAN run it runs on.
    run_id: String,
    meta: PeerAddr,
    bin_dir: PathBuf,
    procs: Vec<FedProcState>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FedProcState {
    name: String,
    site: String,
    pid: i32,
}

fn fed_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("fed")
}

fn state_file(state_dir: &Path) -> PathBuf {
    fed_dir(state_dir).join("fed.json")
}

fn load(state_dir: &Path) -> anyhow::Result<Option<FedState>> {
    match std::fs::read_to_string(state_file(state_dir)) {
        Ok(t) => Ok(Some(serde_json::from_str(&t).context("reading fed.json")?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context("reading fed.json"),
    }
}

fn running(pid: i32) -> bool {
    fs_client::local::running_pid_of(pid)
}

/// Run `renkei-bench wan fed ...`.
pub fn run(args: FedArgs) -> anyhow::Result<()> {
    match args.command {
        FedCommand::Up(a) => up(a),
        FedCommand::Exec(a) => exec(a),
        FedCommand::Status(a) => status(a.path()),
        FedCommand::Down(a) => down(a.path()),
    }
}

fn live_wan(state_dir: &Path) -> anyhow::Result<RunState> {
    let st = RunState::load(state_dir)?
        .with_context(|| format!("no WAN up in {}: run `renkei-bench wan up` first", state_dir.display()))?;
    if !st.alive() {
        bail!("the WAN daemon (run {}) is gone; run `renkei-bench wan up` again", st.run_id);
    }
    Ok(st)
}

/// A command for `program` inside `site`.
fn command_at(site: &SiteState, program: impl AsRef<std::ffi::OsStr>) -> anyhow::Result<Command> {
    let fd = netns::Netns::named(&site.netns).open()?;
    Ok(site::command_in(Arc::new(fd), &site.name, site.addr, program))
}

fn up(a: UpArgs) -> anyhow::Result<()> {
    let state_dir = a.dir.path();
    let wan = live_wan(state_dir)?;
    if let Some(old) = load(state_dir)? {
        if old.procs.iter().any(|p| running(p.pid)) {
            bail!("a federation is already up on this WAN; run `renkei-bench wan fed down` first");
        }
    }
    let dir = fed_dir(state_dir);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let bin_dir = fs_client::local::bin_dir(a.bin_dir.as_deref());
    for b in ["renkei", "renkei-meta", "renkei-server"] {
        if !bin_dir.join(b).exists() {
            bail!(
                "{} missing: build the workspace (cargo build --release) or pass --bin-dir",
                bin_dir.join(b).display()
            );
        }
    }
    let meta_site = a.meta.clone().unwrap_or_else(|| wan.sites[0].name.clone());
    wan.site(&meta_site)?;
    let servers: Vec<String> =
        if a.servers.is_empty() { wan.sites.iter().map(|s| s.name.clone()).collect() } else { a.servers.clone() };
    for s in &servers {
        wan.site(s)?;
    }
    let spec = WanFedSpec {
        meta_site: meta_site.clone(),
        server_sites: servers.clone(),
        bin_dir: bin_dir.clone(),
        heartbeat_ms: 1000,
    };
    let (ca, meta, procs) = wanfed::prepare(&dir, &spec, &|s| Ok(wan.site(s)?.addr))?;
    let mut started = Vec::new();
    let result = (|| {
        for p in &procs {
            let log = std::fs::File::create(dir.join("logs").join(format!("{}.log", p.name)))?;
            let child = command_at(wan.site(&p.site)?, &p.bin)?
                .arg("--config")
                .arg(&p.config)
                .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info,quinn=warn".into()))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                // Its own process group: a Ctrl-C in the shell that ran
                // `up` does not reach it.
                .process_group(0)
                .spawn()
                .with_context(|| format!("starting {} in site {}", p.name, p.site))?;
            started.push(FedProcState { name: p.name.clone(), site: p.site.clone(), pid: child.id() as i32 });
        }
        let st =
            FedState { run_id: wan.run_id.clone(), meta: meta.clone(), bin_dir: bin_dir.clone(), procs: Vec::new() };
        std::fs::write(
            state_file(state_dir),
            serde_json::to_string_pretty(&FedState { procs: started.iter().map(clone_proc).collect(), ..st })?,
        )?;
        for s in &wan.sites {
            wanfed::client_config(&ca, &meta, &dir, &s.name, &a.user)?;
        }
        wait_alive(&wan, &dir, &servers, &a.user, &bin_dir, Duration::from_secs(60))
    })();
    if let Err(e) = result {
        let _ = down(state_dir);
        return Err(e);
    }
    println!("federation up on WAN run {}: meta server at {meta_site} ({})", wan.run_id, meta.addr);
    for p in &started {
        println!("  {:<12} site {:<10} pid {}", p.name, p.site, p.pid);
    }
    println!("files (certificates, configs, spools, logs) in {}", dir.display());
    let first = servers.first().cloned().unwrap_or(meta_site);
    let sd = if state_dir == Path::new(bench::wan::state::DEFAULT_STATE_DIR) {
        String::new()
    } else {
        format!(" --state-dir {}", state_dir.display())
    };
    println!(
        "try:  renkei-bench wan fed exec{sd} {first} -- bash   (RENKEI_CONFIG is set there; e.g. `renkei mount /tmp/m-{first}`)"
    );
    println!("stop: renkei-bench wan fed down{sd}   (or `renkei-bench wan down{sd}`, which stops it too)");
    Ok(())
}

fn clone_proc(p: &FedProcState) -> FedProcState {
    FedProcState { name: p.name.clone(), site: p.site.clone(), pid: p.pid }
}

/// Wait (bounded) until every file server is alive, asking with the CLI
/// from the first server site, as a person would.
fn wait_alive(
    wan: &RunState,
    dir: &Path,
    servers: &[String],
    user: &str,
    bin_dir: &Path,
    bound: Duration,
) -> anyhow::Result<()> {
    let site = wan.site(servers.first().map(String::as_str).unwrap_or(&wan.sites[0].name))?;
    let cfg = dir.join(format!("client-{}-{user}.toml", site.name));
    let want: Vec<String> = servers.iter().map(|s| wanfed::WanFederation::server_name(s)).collect();
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < bound {
        let out = command_at(site, bin_dir.join("renkei"))?
            .env("RENKEI_CONFIG", &cfg)
            .args(["hosts", "--json"])
            .stdin(Stdio::null())
            .output()?;
        if out.status.success() {
            let hosts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let alive: Vec<&str> = hosts
                .as_array()
                .map(|a| a.iter().filter(|h| h["alive"] == true).filter_map(|h| h["host"].as_str()).collect::<Vec<_>>())
                .unwrap_or_default();
            if want.iter().all(|w| alive.contains(&w.as_str())) {
                return Ok(());
            }
            last = format!("alive: {alive:?}");
        } else {
            last = String::from_utf8_lossy(&out.stderr).trim().to_string();
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("the federation was not up within {bound:?} ({last}); logs in {}", dir.join("logs").display())
}

fn exec(a: ExecArgs) -> anyhow::Result<()> {
    let state_dir = a.dir.path();
    let wan = live_wan(state_dir)?;
    let st = load(state_dir)?.context("no federation up: run `renkei-bench wan fed up` first")?;
    let site = wan.site(&a.site)?;
    let dir = fed_dir(state_dir);
    let ca = CaDir::new(dir.join("ca"));
    let (_, cfg) = wanfed::client_config(&ca, &st.meta, &dir, &a.site, &a.user)?;
    let path = match std::env::var_os("PATH") {
        Some(p) => std::env::join_paths(std::iter::once(st.bin_dir.clone()).chain(std::env::split_paths(&p)))?,
        None => st.bin_dir.clone().into_os_string(),
    };
    let (program, rest) = a.command.split_first().context("no command given")?;
    let err = command_at(site, program)?.args(rest).env("RENKEI_CONFIG", &cfg).env("PATH", path).exec();
    Err(err).with_context(|| format!("running {program:?} in site {}", site.name))
}

fn status(state_dir: &Path) -> anyhow::Result<()> {
    match load(state_dir)? {
        None => println!("no federation up in {}", fed_dir(state_dir).display()),
        Some(st) => {
            println!("federation on WAN run {}, meta server {}", st.run_id, st.meta.addr);
            for p in &st.procs {
                let s = if running(p.pid) { "running" } else { "not running" };
                println!("  {:<12} site {:<10} pid {:<8} {s}", p.name, p.site, p.pid);
            }
        }
    }
    Ok(())
}

/// Stop the federation's processes (SIGTERM, then SIGKILL after 10 s) and
/// remove its files. Nothing up is not an error.
pub fn down(state_dir: &Path) -> anyhow::Result<()> {
    let Some(st) = load(state_dir)? else {
        let _ = std::fs::remove_dir_all(fed_dir(state_dir));
        return Ok(());
    };
    let mut stopped = 0;
    for p in &st.procs {
        if !running(p.pid) {
            continue;
        }
        let _ = kill(Pid::from_raw(p.pid), Signal::SIGTERM);
        if !fs_client::local::wait_pid_gone(p.pid, Duration::from_secs(10)).unwrap_or(false) {
            let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
            let _ = fs_client::local::wait_pid_gone(p.pid, Duration::from_secs(5));
        }
        stopped += 1;
    }
    std::fs::remove_dir_all(fed_dir(state_dir))
        .with_context(|| format!("removing {}", fed_dir(state_dir).display()))?;
    println!("stopped {stopped} process(es) of the federation; removed its files");
    Ok(())
}
