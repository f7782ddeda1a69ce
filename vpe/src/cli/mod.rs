//! The `vpe` command line: the user's commands (talking to the manager),
//! the two services (`vpe serve`, `vpe agent`), direct control of one PoP
//! (`vpe local`), and the benchmark (`vpe bench`).

mod bench;
mod images;
mod local;
mod output;
mod templates;
mod vms;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::agent::AgentConfig;
use crate::client::VpeClient;
use crate::manager::ManagerConfig;

/// renkei VM hosting: VMs booted on the PoPs from images in the namespace.
#[derive(Parser, Debug)]
#[command(name = "vpe", version, about, long_about = None)]
pub struct Cli {
    /// Your renkei client configuration with a [vpe] table naming the manager
    /// [default: $RENKEI_CONFIG, else ~/.config/renkei/client.toml].
    #[arg(long, env = "RENKEI_CONFIG")]
    config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Who the manager thinks you are, and your limits and addresses.
    Whoami,
    /// The PoPs: site, liveness, VMs, capacity, cache, problems.
    Pops {
        /// Wait until at least this many PoPs are alive.
        #[arg(long)]
        wait: Option<usize>,
        /// Seconds to wait.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Images: register, ls, show, tag, rm (and seal a local directory).
    #[command(subcommand)]
    Image(images::ImageCommand),
    /// Start a VM at a site and wait until it booted.
    Run(vms::RunArgs),
    /// Your VMs.
    Ls,
    /// One of your VMs: state, site, PoP, addresses, timings.
    Show {
        /// VM name.
        vm: String,
    },
    /// A VM's serial console.
    Console {
        /// VM name.
        vm: String,
        /// Show at most the last this many bytes.
        #[arg(long, default_value_t = 1 << 20)]
        bytes: u64,
    },
    /// Write a VM's disk back to the namespace as a new image generation.
    Save {
        /// VM name.
        vm: String,
        /// Image to add the generation to [default: the VM's image].
        #[arg(long = "as")]
        as_name: Option<String>,
    },
    /// Destroy a VM; nothing of it stays on its PoP.
    Stop {
        /// VM name.
        vm: String,
    },
    /// Templates: create, ls, rm.
    #[command(subcommand)]
    Template(templates::TemplateCommand),
    /// Run the manager.
    Serve {
        /// Manager configuration (see vpe/manager.toml).
        #[arg(long, env = "VPE_MANAGER_CONFIG")]
        config: PathBuf,
        /// Check the configuration and exit: 0 if it is valid, else 1 with
        /// the line and field at fault.
        #[arg(long)]
        check: bool,
    },
    /// Run a PoP agent.
    Agent {
        /// Agent configuration (see vpe/agent.toml).
        #[arg(long, env = "VPE_AGENT_CONFIG")]
        config: PathBuf,
        /// Check the configuration and exit: 0 if it is valid, else 1 with
        /// the line and field at fault.
        #[arg(long)]
        check: bool,
    },
    /// Control this PoP's VMs directly through libvirt (operators; no manager).
    Local(local::LocalArgs),
    /// Measure cached vs uncached boots (prepare, fetch, run to booted, guest boot).
    Bench(bench::BenchArgs),
    #[command(flatten)]
    Doc(fs_proto::clidoc::DocCommand),
}

/// Parses the command line and runs it.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Doc(doc) => {
            use clap::CommandFactory;
            return Ok(fs_proto::clidoc::run(doc, Cli::command(), &[])?);
        }
        Command::Serve { config, check: true } => {
            ManagerConfig::load(config).map_err(anyhow::Error::msg)?;
            println!("{}: valid vpe manager configuration", config.display());
            return Ok(());
        }
        Command::Agent { config, check: true } => {
            AgentConfig::load(config).map_err(anyhow::Error::msg)?;
            println!("{}: valid vpe agent configuration", config.display());
            return Ok(());
        }
        Command::Local(args) => {
            fs_proto::process::init_tracing("warn");
            return local::run(args);
        }
        Command::Serve { .. } | Command::Agent { .. } => fs_proto::process::init_tracing("info,quinn=warn"),
        _ => fs_proto::process::init_tracing("warn,quinn=error"),
    }
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, .. } => {
            let config = ManagerConfig::load(&config).map_err(anyhow::Error::msg)?;
            let tls = fs_proto::endpoint::TlsIdentity::load(&config.tls)?;
            let endpoint = fs_proto::endpoint::server_endpoint(config.listen, &tls, &config.transport)?;
            crate::manager::run(config, endpoint, fs_proto::process::shutdown_signal()).await?;
            return Ok(());
        }
        Command::Agent { config, .. } => {
            let config = AgentConfig::load(&config).map_err(anyhow::Error::msg)?;
            crate::agent::run(config, fs_proto::process::shutdown_signal()).await?;
            return Ok(());
        }
        Command::Image(images::ImageCommand::Seal { dir }) => return images::seal(&dir),
        _ => {}
    }
    let path = cli.config.clone().unwrap_or_else(fs_client::ClientConfig::default_path);
    let client = VpeClient::from_config_file(&path).await?;
    let json = cli.json;
    match cli.command {
        Command::Whoami => output::whoami(&client.whoami().await?, json),
        Command::Pops { wait, timeout } => {
            let start = Instant::now();
            loop {
                let pops = client.pops().await?;
                let alive = pops.iter().filter(|p| p.alive).count();
                match wait {
                    Some(n) if alive < n && start.elapsed() < Duration::from_secs(timeout) => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Some(n) if alive < n => {
                        output::pops(&pops, json)?;
                        anyhow::bail!("only {alive} of {n} PoPs alive after {timeout} s");
                    }
                    _ => return output::pops(&pops, json),
                }
            }
        }
        Command::Image(cmd) => images::run(&client, cmd, json).await,
        Command::Run(args) => vms::run(&client, args, json).await,
        Command::Ls => output::vms(&client.list().await?, json),
        Command::Show { vm } => output::vm(&client.show(&vm).await?, json),
        Command::Console { vm, bytes } => {
            let c = client.console(&vm, bytes).await?;
            if json {
                return output::json(&c);
            }
            if c.skipped > 0 {
                eprintln!("[... {} earlier bytes not shown]", c.skipped);
            }
            print!("{}", c.text);
            Ok(())
        }
        Command::Save { vm, as_name } => output::image(&client.save(&vm, as_name).await?, json),
        Command::Stop { vm } => {
            client.stop(&vm).await?;
            if !json {
                println!("{vm} stopped; nothing of it is left on its PoP");
            }
            Ok(())
        }
        Command::Template(cmd) => templates::run(&client, cmd, json).await,
        Command::Bench(args) => bench::run(&client, args, json).await,
        Command::Serve { .. } | Command::Agent { .. } | Command::Local(_) | Command::Doc(_) => Ok(()),
    }
}
