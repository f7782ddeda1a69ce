//! `renkei-bench wan up|down|exec|status|sweep`: drive the WAN test bed from a shell. `up` leaves a
//! daemon (see [`super::wan_serve`]) holding the router until `down`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bench::wan::state::{self, RunState, DEFAULT_STATE_DIR};
use bench::wan::{netns, preset, site, sweep, Topology};
use clap::{Args, Subcommand};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::wan_serve;

/// Arguments of `renkei-bench wan`.
#[derive(Debug, Args)]
pub struct WanArgs {
    #[command(subcommand)]
    command: WanCommand,
}

#[derive(Debug, Subcommand)]
enum WanCommand {
    /// Bring a topology up and leave a daemon forwarding its packets until `wan down`.
    Up(UpArgs),
    /// Tear down what `wan up` started, and sweep leftovers of dead runs.
    Down(DirArgs),
    /// Run a command inside a site: `wan exec SITE -- CMD ARGS...`.
    Exec(ExecArgs),
    /// Show the running topology and its link counters.
    Status(DirArgs),
    /// Remove namespaces and processes of dead runs (also done by every `up`).
    Sweep,
    /// Print a topology (a preset or a file) as a table, or as TOML with `--toml`, without running it.
    Show(ShowArgs),
    /// Measure the emulator's own forwarding limit: one iperf3 TCP stream
    /// through an unlimited, zero-delay link at MTU 1500, 9000 and 65535.
    Limit {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 10)]
        secs: u32,
    },
    /// A renkei federation on the running WAN: `wan fed up|exec|status|down`.
    Fed(super::wan_fed::FedArgs),
    /// The daemon itself (started by `up`).
    #[command(hide = true)]
    Serve(ServeArgs),
}

/// Which topology to run.
#[derive(Debug, Args)]
pub struct TopologyArgs {
    /// TOML topology file (see bench/topologies/).
    #[arg(long, conflicts_with = "preset", required_unless_present = "preset")]
    topology: Option<PathBuf>,
    /// Built-in topology: `pair`, `renkei2011` (the paper's Table 4 after tuning, plus nii2 and hkd)
    /// or `renkei2011-before` (Table 4 before tuning).
    #[arg(long)]
    preset: Option<String>,
    /// `pair`: round-trip time, ms.
    #[arg(long, default_value_t = 10.0)]
    rtt_ms: f64,
    /// `pair`: rate of each direction, Mbit/s (omit for unlimited).
    #[arg(long)]
    rate_mbit: Option<f64>,
    /// `pair`: random loss of each direction, percent.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Multiply every rate by this (default: 1, or 0.125 for the `renkei2011` presets, whose real
    /// rates exceed what a 2-core machine forwards).
    #[arg(long)]
    scale: Option<f64>,
    /// MTU of the sites' interfaces (576..=65535); larger MTUs reach higher rates.
    #[arg(long)]
    mtu: Option<u32>,
    /// Seed of the random loss.
    #[arg(long)]
    seed: Option<u64>,
}

impl TopologyArgs {
    fn build(&self) -> anyhow::Result<Topology> {
        let mut topo = match (&self.topology, &self.preset) {
            (Some(path), _) => {
                let mut t = Topology::load(path)?;
                if let Some(s) = self.scale {
                    t.scale_rates(s);
                }
                t
            }
            (None, Some(name)) => {
                let scale = self.scale.unwrap_or_else(|| preset::default_scale(name));
                preset::by_name(name, self.rtt_ms, self.rate_mbit, self.loss, scale)?
            }
            (None, None) => bail!("give --topology FILE or --preset NAME"),
        };
        if let Some(mtu) = self.mtu {
            topo.mtu = mtu;
        }
        if self.seed.is_some() {
            topo.seed = self.seed;
        }
        topo.resolve()?;
        Ok(topo)
    }
}

/// Where the daemon's files are.
#[derive(Debug, Args)]
pub struct DirArgs {
    /// Directory of the daemon's state files.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

#[derive(Debug, Args)]
struct UpArgs {
    #[command(flatten)]
    topology: TopologyArgs,
    #[command(flatten)]
    dir: DirArgs,
    /// Run the router in this process instead of a daemon (stop it with Ctrl-C).
    #[arg(long)]
    foreground: bool,
    /// Tear down by itself after this many seconds if nobody ran `wan down`.
    #[arg(long, default_value_t = 12 * 3600)]
    ttl_secs: u64,
}

#[derive(Debug, Args)]
struct ShowArgs {
    #[command(flatten)]
    topology: TopologyArgs,
    /// Print TOML that `wan up --topology` reads back.
    #[arg(long)]
    toml: bool,
}

#[derive(Debug, Args)]
struct ExecArgs {
    /// Site to run in.
    site: String,
    /// Command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
    #[command(flatten)]
    dir: DirArgs,
}

/// Arguments of the hidden `serve` subcommand.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub dir: DirArgs,
    /// Seconds until the daemon tears down by itself.
    #[arg(long)]
    pub ttl_secs: u64,
}

impl DirArgs {
    /// The state directory.
    pub fn path(&self) -> &Path {
        &self.state_dir
    }
}

/// Run `renkei-bench wan ...`.
pub fn run(args: WanArgs) -> anyhow::Result<()> {
    match args.command {
        WanCommand::Up(a) => up(a),
        WanCommand::Down(a) => down(a.path()),
        WanCommand::Exec(a) => exec(a),
        WanCommand::Status(a) => status(a.path()),
        WanCommand::Sweep => {
            let r = sweep::sweep_stale()?;
            println!("swept {} namespace(s), {} process(es)", r.namespaces.len(), r.processes);
            Ok(())
        }
        WanCommand::Show(a) => {
            let topo = a.topology.build()?;
            if a.toml {
                print!("{}", topo.to_toml_string()?);
            } else {
                print!("{}", describe(&topo)?);
            }
            Ok(())
        }
        WanCommand::Limit { secs } => {
            for (mtu, bps) in bench::wan::iperf::forwarding_limit(&[1500, 9000, 65535], secs)? {
                println!("MTU {mtu:>5}: {:.2} Gbit/s (one TCP stream, no delay, no rate limit)", bps / 1e9);
            }
            Ok(())
        }
        WanCommand::Fed(a) => super::wan_fed::run(a),
        WanCommand::Serve(a) => wan_serve::serve(a.dir.path(), Duration::from_secs(a.ttl_secs)),
    }
}

fn up(args: UpArgs) -> anyhow::Result<()> {
    let dir = args.dir.path();
    if let Some(st) = RunState::load(dir)? {
        if st.alive() {
            bail!("a WAN is already up (run {}, pid {}); run `renkei-bench wan down` first", st.run_id, st.pid);
        }
        RunState::remove(dir);
    }
    let topo = args.topology.build()?;
    print!("{}", describe(&topo)?);
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(wan_serve::topology_path(dir), topo.to_toml_string()?)
        .with_context(|| format!("writing topology into {}", dir.display()))?;
    let ttl = Duration::from_secs(args.ttl_secs);
    if args.foreground {
        return wan_serve::serve(dir, ttl);
    }
    let st = wan_serve::spawn_daemon(dir, ttl)?;
    println!("WAN up: run {}, daemon pid {}, state in {}", st.run_id, st.pid, dir.display());
    for s in &st.sites {
        println!("  {:<10} {:<15} netns {}", s.name, s.addr, s.netns);
    }
    println!("run commands with `renkei-bench wan exec SITE -- CMD`; stop with `renkei-bench wan down`");
    Ok(())
}

/// A human-readable table of a topology.
pub fn describe(topo: &Topology) -> anyhow::Result<String> {
    let r = topo.resolve()?;
    let mut out = format!("topology: {} sites, MTU {}", r.names.len(), r.mtu);
    if topo.rate_scale != 1.0 {
        out += &format!(", every rate scaled by {} (real rate = shown / {})", topo.rate_scale, topo.rate_scale);
    }
    out += "\n";
    for (a, row) in r.links.iter().enumerate() {
        for (b, p) in row.iter().enumerate() {
            let Some(p) = p else { continue };
            let rate = p.rate_mbit.map_or("unlimited".to_string(), |m| format!("{m:.1} Mbit/s"));
            out += &format!(
                "  {:>8} -> {:<8} delay {:>7.3} ms  rate {:>16}  loss {}%\n",
                r.names[a], r.names[b], p.delay_ms, rate, p.loss_percent
            );
        }
    }
    Ok(out)
}

fn down(dir: &Path) -> anyhow::Result<()> {
    // A federation on it goes first (its processes would outlive the
    // namespaces, cut off).
    super::wan_fed::down(dir)?;
    if let Some(st) = RunState::load(dir)? {
        if st.alive() {
            let pid = Pid::from_raw(i32::try_from(st.pid).context("pid out of range")?);
            kill(pid, Signal::SIGTERM).with_context(|| format!("signalling daemon {pid}"))?;
            if !wait_dead(&st, Duration::from_secs(15)) {
                tracing::warn!(pid = st.pid, "daemon ignored SIGTERM; killing it");
                let _ = kill(pid, Signal::SIGKILL);
                wait_dead(&st, Duration::from_secs(5));
            }
            println!("stopped WAN run {} (pid {})", st.run_id, st.pid);
        } else {
            println!("WAN run {} was no longer running", st.run_id);
        }
        RunState::remove(dir);
    } else {
        println!("no WAN up in {}", dir.display());
    }
    let r = sweep::sweep_stale()?;
    if !r.namespaces.is_empty() {
        println!("swept {} leftover namespace(s), {} process(es)", r.namespaces.len(), r.processes);
    }
    Ok(())
}

fn wait_dead(st: &RunState, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if !st.alive() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !st.alive()
}

fn exec(args: ExecArgs) -> anyhow::Result<()> {
    let dir = args.dir.path();
    let st = RunState::load(dir)?.with_context(|| format!("no WAN up in {}", dir.display()))?;
    if !st.alive() {
        bail!("the WAN daemon (run {}) is gone; run `renkei-bench wan up` again", st.run_id);
    }
    let site = st.site(&args.site)?;
    let fd = netns::Netns::named(&site.netns).open()?;
    let (program, rest) = args.command.split_first().context("no command given")?;
    let err = site::command_in(Arc::new(fd), &site.name, site.addr, program).args(rest).exec();
    Err(err).with_context(|| format!("running {program:?} in site {}", site.name))
}

fn status(dir: &Path) -> anyhow::Result<()> {
    let leftovers: Vec<String> = netns::list()?
        .into_iter()
        .filter(|n| sweep::run_of_netns(n).is_some_and(|r| !sweep::run_is_alive(r)))
        .collect();
    match RunState::load(dir)? {
        None => println!("no WAN up in {}", dir.display()),
        Some(st) => {
            let alive = if st.alive() { "running" } else { "DEAD" };
            println!(
                "run {} ({alive}), daemon pid {}, MTU {}, rate scale {}",
                st.run_id, st.pid, st.mtu, st.rate_scale
            );
            for s in &st.sites {
                println!("  {:<10} {:<15} netns {}", s.name, s.addr, s.netns);
            }
            if let Some(stats) = state::load_stats(dir)? {
                println!(
                    "  {:>8}    {:<8} {:>10} {:>14} {:>9} {:>9} {:>9}",
                    "from", "to", "packets", "bytes", "q-drop", "loss", "overflow"
                );
                for l in stats {
                    println!(
                        "  {:>8} -> {:<8} {:>10} {:>14} {:>9} {:>9} {:>9}",
                        l.from, l.to, l.packets, l.bytes, l.drop_queue, l.drop_loss, l.drop_overflow
                    );
                }
            }
        }
    }
    if !leftovers.is_empty() {
        println!("leftovers of dead runs (removed by the next `up`, `down` or `sweep`): {}", leftovers.join(" "));
    }
    Ok(())
}
