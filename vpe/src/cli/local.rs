//! `vpe local`: one PoP's VMs through libvirt directly, for operators (no
//! manager, no agent): list, stop, reap what a crashed agent left, and show
//! the KVM-or-TCG decision.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::agent::AgentConfig;
use crate::{Libvirt, VmHost};

/// `vpe local` arguments.
#[derive(Args, Debug)]
pub(super) struct LocalArgs {
    /// The PoP's agent configuration (its [host] table is used).
    #[arg(long, env = "VPE_AGENT_CONFIG")]
    config: PathBuf,
    #[command(subcommand)]
    command: LocalCommand,
}

#[derive(Subcommand, Debug)]
enum LocalCommand {
    /// VMs on this PoP.
    Ls,
    /// Stop a VM and remove every local file it had.
    Stop {
        /// Its name on the PoP.
        name: String,
    },
    /// Remove domains, files and networks a crashed agent left.
    Reap,
    /// Whether VMs here run with KVM or TCG, and why.
    Accel {
        /// Kernel to boot for the probe [default: the agent's probe kernel].
        #[arg(long)]
        kernel: Option<PathBuf>,
    },
}

pub(super) fn run(args: &LocalArgs) -> anyhow::Result<()> {
    let config = AgentConfig::load(&args.config).map_err(anyhow::Error::msg)?;
    let host_config = config.host.clone();
    if let LocalCommand::Accel { kernel } = &args.command {
        let kernel = kernel
            .clone()
            .or_else(|| config.probe_kernel())
            .ok_or_else(|| anyhow::anyhow!("no kernel: give --kernel"))?;
        let mut probe = crate::accel::AccelProbe::new(kernel);
        probe.qemu = host_config.qemu.clone();
        probe.cache_file = Some(host_config.accel_cache());
        let d = crate::accel::detect(&probe);
        println!("{:?}: {}", d.accel, d.reason);
        return Ok(());
    }
    let mut host = VmHost::open(host_config.clone(), Libvirt::connect(&host_config.libvirt_uri)?)?;
    match &args.command {
        LocalCommand::Ls => {
            for r in host.list() {
                println!("{}\t{}\t{}\t{}", r.spec.name, r.state, r.image, r.console_log.display());
            }
        }
        LocalCommand::Stop { name } => host.stop(name)?,
        LocalCommand::Reap => {
            for removed in host.reap_orphans()? {
                println!("removed {removed}");
            }
        }
        LocalCommand::Accel { .. } => {}
    }
    Ok(())
}
