//! `renkei local`: a whole federation on this machine.

use super::output::print_json;
use crate::local::{self, LocalSpec};
use clap::Subcommand;
use std::path::PathBuf;
use std::time::Duration;

/// Local federation commands.
#[derive(Subcommand, Debug)]
pub enum LocalCommand {
    /// Create (first time) and start a federation under DIR: a CA, one meta
    /// server and one file server per site, as real processes on loopback.
    /// Running it again restarts whatever is not running.
    Up {
        /// Directory for certificates, configs, spools, logs.
        #[arg(long)]
        dir: PathBuf,
        /// Number of sites.
        #[arg(long, default_value_t = 3)]
        sites: usize,
        /// File servers per site.
        #[arg(long, default_value_t = 1)]
        servers_per_site: usize,
        /// Federation user to issue a certificate for [default: $USER].
        #[arg(long)]
        user: Option<String>,
        /// Directory of renkei-meta and renkei-server [default: next to this binary].
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Seconds to wait for every server to be alive.
        #[arg(long, default_value_t = 30)]
        wait: u64,
        /// High availability: three etcd members and two meta servers on
        /// them (one leads, the other stands by and takes over when the
        /// leader dies; `renkei local status` shows which leads). Needs
        /// etcd (Debian package etcd-server). Only when creating.
        #[arg(long)]
        ha: bool,
    },
    /// Stop every process of the federation under DIR.
    Down {
        /// The federation's directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Show which processes of the federation under DIR are running.
    Status {
        /// The federation's directory.
        #[arg(long)]
        dir: PathBuf,
    },
}

pub(crate) async fn run(cmd: &LocalCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        LocalCommand::Up { dir, sites, servers_per_site, user, bin_dir, wait, ha } => {
            let user = user
                .clone()
                .or_else(|| std::env::var("USER").ok())
                .filter(|u| fs_proto::identity::valid_name(u))
                .unwrap_or_else(|| "user".into());
            let dir = std::path::absolute(dir)?;
            let spec = LocalSpec {
                dir: dir.clone(),
                sites: *sites,
                servers_per_site: *servers_per_site,
                user,
                bin_dir: bin_dir.clone(),
                env: Vec::new(),
                meta_toml: String::new(),
                ha: *ha,
            };
            let state = local::up(&spec, Duration::from_secs(*wait)).await?;
            if json {
                return print_json(&state);
            }
            println!(
                "renkei federation up in {} ({} site(s): {})",
                dir.display(),
                state.sites.len(),
                state.sites.join(", ")
            );
            for p in &state.procs {
                println!(
                    "  {:<8} {:<8} at {:<8} {}  log {}/logs/{}.log",
                    p.role,
                    p.name,
                    p.site,
                    p.addr,
                    dir.display(),
                    p.name
                );
            }
            if let Some(web) = &state.web {
                println!("Status page: {web}  (Prometheus metrics: {web}metrics)");
            }
            println!("Use it as user {:?}:", state.user);
            println!("  export RENKEI_CONFIG={}", state.client_config.display());
            println!("  renkei hosts; renkei put FILE /; renkei ls -l /; renkei where /FILE");
            println!("A client at another site: RENKEI_CONFIG={}/client-<site>.toml", dir.display());
            println!("Stop it with: renkei local down --dir {}", dir.display());
        }
        LocalCommand::Down { dir } => {
            let n = local::down(dir)?;
            if json {
                return print_json(&serde_json::json!({"stopped": n}));
            }
            println!("stopped {n} process(es) of the federation in {}", dir.display());
        }
        LocalCommand::Status { dir } => {
            let st = local::status(dir)?;
            let state = local::load_state(dir)?;
            let metas = st.iter().filter(|(p, _)| p.role == "meta").count();
            let mut shown = Vec::new();
            for (p, pid) in &st {
                // With several meta servers: which one leads (answers).
                let lead = match pid {
                    Some(_) if p.role == "meta" && metas > 1 => {
                        Some(if local::meta_answers(&state, p).await { "leader" } else { "standby" })
                    }
                    _ => None,
                };
                shown.push((p, *pid, lead));
            }
            if json {
                let v: Vec<_> = shown.iter().map(|(p, pid, lead)| serde_json::json!({"name": p.name, "role": p.role, "site": p.site, "addr": p.addr, "pid": pid, "leads": lead.map(|l| l == "leader")})).collect();
                return print_json(&v);
            }
            for (p, pid, lead) in shown {
                println!(
                    "{:<8} {:<8} {:<8} {:<22} {}{}",
                    p.role,
                    p.name,
                    p.site,
                    p.addr,
                    pid.map(|p| format!("running (pid {p})")).unwrap_or_else(|| "stopped".into()),
                    lead.map(|l| format!(", {l}")).unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}
