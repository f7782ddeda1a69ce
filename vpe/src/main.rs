//! The `vpe` binary: today, direct control of this PoP's VMs (the manager,
//! agent and user CLI over QUIC come with the fs-client integration).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vpe::{HostConfig, Libvirt, LocalDirSource, NicSpec, SeedFile, VmHost, VmSpec};

#[derive(Parser)]
#[command(name = "vpe", about = "renkei VM hosting")]
struct Cli {
    /// Agent configuration (TOML); defaults apply when absent.
    #[arg(long, env = "VPE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Seal an image directory: write sizes and BLAKE3 hashes into its image.toml.
    Seal {
        /// The image directory (as written by scripts/vm-image/build.sh).
        dir: PathBuf,
    },
    /// Show whether VMs here run with KVM or TCG, and why.
    Accel {
        /// A kernel to boot for the probe.
        #[arg(long)]
        kernel: PathBuf,
    },
    /// Run a VM on this PoP from a local image directory and wait for it to boot.
    Run {
        /// The VM name.
        #[arg(long)]
        name: String,
        /// The sealed image directory.
        #[arg(long)]
        image: PathBuf,
        /// Virtual CPUs.
        #[arg(long, default_value_t = 1)]
        cpus: u32,
        /// Memory in MiB.
        #[arg(long, default_value_t = 256)]
        mem: u64,
        /// A NIC as SEGMENT=ADDRESS/PREFIX (repeatable).
        #[arg(long = "net")]
        nets: Vec<String>,
        /// A file holding SSH public keys to inject.
        #[arg(long)]
        ssh_key: Option<PathBuf>,
        /// Ask the test image to write NAME=CONTENT into its disk's marker directory.
        #[arg(long)]
        write: Option<String>,
    },
    /// List this PoP's VMs.
    Ls,
    /// Print a VM's serial console log path.
    Console {
        /// The VM name.
        name: String,
    },
    /// Save a VM's disk as a new image directory.
    Save {
        /// The VM name.
        name: String,
        /// The destination directory.
        dest: PathBuf,
    },
    /// Stop a VM and remove every local file it had.
    Stop {
        /// The VM name.
        name: String,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = match &cli.config {
        Some(path) => {
            HostConfig::from_toml(&std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?)?
        }
        None => HostConfig::default(),
    };
    match cli.command {
        Command::Seal { dir } => {
            let manifest = vpe::image::seal(&dir)?;
            println!("{} {}", manifest.id().map(|i| i.to_string()).unwrap_or_default(), dir.display());
        }
        Command::Accel { kernel } => {
            let mut probe = vpe::accel::AccelProbe::new(kernel);
            probe.qemu = config.qemu.clone();
            let d = vpe::accel::detect(&probe);
            println!("{:?}: {}", d.accel, d.reason);
        }
        Command::Run { name, image, cpus, mem, nets, ssh_key, write } => {
            let mut spec = VmSpec::new(name);
            spec.cpus = cpus;
            spec.memory_mib = mem;
            for net in nets {
                let (segment, addr) = net.split_once('=').context("--net wants SEGMENT=ADDRESS/PREFIX")?;
                spec.nics.push(NicSpec { segment: segment.to_string(), address: addr.parse()? });
            }
            if let Some(path) = ssh_key {
                spec.ssh_keys =
                    std::fs::read_to_string(&path)?.lines().map(str::to_string).filter(|l| !l.is_empty()).collect();
            }
            if let Some(w) = write {
                let (name, content) = w.split_once('=').context("--write wants NAME=CONTENT")?;
                spec.write_file = Some(SeedFile { name: name.into(), content: content.into() });
            }
            let mut host = VmHost::open(config.clone(), Libvirt::connect(&config.libvirt_uri)?)?;
            let report = host.run(&spec, &LocalDirSource::open(image)?)?;
            let t = report.record.timings;
            println!(
                "{} running ({:?}): prepare {:?} (fetch {:?}, {} bytes), boot {:?}, guest boot {:?}; console {}",
                spec.name,
                report.record.accel,
                t.prepare,
                t.fetch,
                t.fetched_bytes,
                t.boot,
                t.guest_boot,
                report.record.console_log.display()
            );
        }
        Command::Ls => {
            let host = VmHost::open(config.clone(), Libvirt::connect(&config.libvirt_uri)?)?;
            for r in host.list() {
                println!("{}\t{}\t{}\t{:?}", r.spec.name, r.state, r.image, r.timings);
            }
        }
        Command::Console { name } => {
            let host = VmHost::open(config.clone(), Libvirt::connect(&config.libvirt_uri)?)?;
            println!("{}", host.console_log(&name)?.display());
        }
        Command::Save { name, dest } => {
            let mut host = VmHost::open(config.clone(), Libvirt::connect(&config.libvirt_uri)?)?;
            let m = host.save(&name, &dest)?;
            println!("{} {}", m.id().map(|i| i.to_string()).unwrap_or_default(), dest.display());
        }
        Command::Stop { name } => {
            let mut host = VmHost::open(config.clone(), Libvirt::connect(&config.libvirt_uri)?)?;
            host.stop(&name)?;
        }
    }
    Ok(())
}
