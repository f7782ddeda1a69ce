//! The VM service in a local federation: when the `vpe` binary sits next to
//! `renkei-meta` and `renkei-server`, `renkei local up` also runs the VM
//! manager (`vpe serve`) and one PoP agent (`vpe agent`) per file server,
//! with the file server's host certificate, and adds a `[vpe]` table to
//! the client configurations. `renkei local down` stops them with the rest;
//! the agents are configured to stop their VMs when they exit.
//!
//! Files: `vpe/manager.toml`, `vpe/<pop>.toml`, state in `vpe/manager/` and
//! `vpe/<pop>/`. The agents share the host's KVM-or-TCG decision, which is
//! valid for one host boot: in `/run/renkei-vpe-accel.toml` when `/run` is
//! writable (so only the first federation of a boot runs the 5 s probe),
//! else in `vpe/accel.toml`. The federation directory is made traversable by
//! others (`o+x`, no read) because qemu runs as its own user and must reach
//! the VMs' disks. The local user may run 4 VMs at every site, with static
//! addresses 10.10.0.11-14/24 on segment `lab` and 10.20.0.11-14/24 on
//! `data`, and their `~/.ssh/*.pub` keys.

use super::{free_udp_port, local_err, LocalProc, LocalState, Result};
use crate::error::ClientError;
use fs_proto::identity::{CaDir, IssueRequest, Role};
use fs_proto::rpc::PeerAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Role of the manager in `federation.json`.
const MANAGER: &str = "vpe-manager";
/// Role of an agent.
const AGENT: &str = "vpe-agent";

/// Whether the VM service can be set up (the `vpe` binary is there).
pub(super) fn available(bins: &Path) -> bool {
    bins.join("vpe").is_file()
}

/// For a vpe process: the binary and the subcommand before `--config`.
pub(super) fn command(role: &str, bins: &Path) -> Option<(PathBuf, &'static str)> {
    match role {
        MANAGER => Some((bins.join("vpe"), "serve")),
        AGENT => Some((bins.join("vpe"), "agent")),
        _ => None,
    }
}

fn q(s: impl std::fmt::Display) -> String {
    format!("\"{}\"", s.to_string().replace('\\', "\\\\").replace('"', "\\\""))
}

fn tls(ca: &CaDir, cert: &Path, key: &Path) -> String {
    format!("[tls]\nca = {}\ncert = {}\nkey = {}\n", q(ca.cert_path().display()), q(cert.display()), q(key.display()))
}

fn user_keys() -> Vec<String> {
    let Some(home) = std::env::var_os("HOME") else { return Vec::new() };
    let mut keys = Vec::new();
    for name in ["id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"] {
        if let Ok(text) = std::fs::read_to_string(Path::new(&home).join(".ssh").join(name)) {
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| l.starts_with("ssh-") || l.starts_with("ecdsa-"))
                    .map(String::from),
            );
        }
    }
    keys
}

/// Where the agents cache the host's KVM-or-TCG decision (see the module docs).
fn accel_cache(vdir: &Path) -> PathBuf {
    let run = Path::new("/run");
    // SAFETY: access(2) only reads the path.
    let writable = unsafe { libc::access(c"/run".as_ptr(), libc::W_OK) } == 0;
    if run.is_dir() && writable {
        run.join("renkei-vpe-accel.toml")
    } else {
        vdir.join("accel.toml")
    }
}

/// Writes the manager's and agents' configurations and adds them to `procs`.
pub(super) fn create(
    dir: &Path,
    ca: &CaDir,
    sites: &[String],
    procs: &mut Vec<LocalProc>,
    meta: &PeerAddr,
    user: &str,
) -> Result<()> {
    let vdir = dir.join("vpe");
    std::fs::create_dir_all(&vdir).map_err(|e| local_err(&vdir, e))?;
    for (d, mode) in [(dir, None), (vdir.as_path(), Some(0o755))] {
        let meta = std::fs::metadata(d).map_err(|e| local_err(d, e))?;
        let mode = mode.unwrap_or(meta.permissions().mode() | 0o001);
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode)).map_err(|e| local_err(d, e))?;
    }
    let files = ca
        .issue(&IssueRequest {
            name: "vpe".into(),
            role: Role::Host,
            site: Some(sites[0].clone()),
            not_before: None,
            valid_days: fs_proto::identity::DEFAULT_VALID_DAYS,
        })
        .map_err(|e| ClientError::Config(e.to_string()))?;
    let addr = free_udp_port()?;
    let keys: Vec<String> = user_keys().iter().map(q).collect();
    // The PoPs' agents use the PoPs' host certificates: only those are agents.
    let agents: Vec<String> = procs.iter().filter(|p| p.role == "server").map(|p| q(&p.name)).collect();
    let addrs = |net: u8| (11..=14).map(|h| q(format!("10.{net}.0.{h}/24"))).collect::<Vec<_>>().join(", ");
    let text = format!(
        "# vpe serve configuration written by `renkei local up`; see vpe/manager.toml.\n\
         listen = {}\nstate_dir = {}\nsite = {}\nstrategy = \"least-loaded\"\nagents = [{}]\n\n\
         [meta]\naddr = {}\nname = {}\n\n{}\n\
         [users.{user}]\nmax_vms = 4\nssh_keys = [{}]\n\n[users.{user}.addresses]\nlab = [{}]\ndata = [{}]\n",
        q(addr),
        q(vdir.join("manager").display()),
        q(&sites[0]),
        agents.join(", "),
        q(meta.addr),
        q(&meta.name),
        tls(ca, &files.cert, &files.key),
        keys.join(", "),
        addrs(10),
        addrs(20),
    );
    let path = vdir.join("manager.toml");
    std::fs::write(&path, text).map_err(|e| local_err(&path, e))?;
    let manager = PeerAddr { addr, name: "vpe".into() };
    let accel_cache = accel_cache(&vdir);
    let servers: Vec<LocalProc> = procs.iter().filter(|p| p.role == "server").cloned().collect();
    procs.push(LocalProc { name: "vpe".into(), site: sites[0].clone(), role: MANAGER.into(), config: path, addr });
    for s in servers {
        // The agent is the PoP's VM side: it uses the PoP's host certificate.
        let pop = ca.issued_paths(Role::Host, &s.name);
        let text = format!(
            "# vpe agent configuration written by `renkei local up`; see vpe/agent.toml.\n\
             max_vms = 4\nheartbeat_ms = 1000\nstop_vms_on_exit = true\n\n\
             [manager]\naddr = {}\nname = \"vpe\"\n\n[meta]\naddr = {}\nname = {}\n\n{}\n\
             [host]\nstate_dir = {}\nscope = {}\naccel_cache_file = {}\nboot_timeout_secs = 120\n",
            q(addr),
            q(meta.addr),
            q(&meta.name),
            tls(ca, &pop.cert, &pop.key),
            q(vdir.join(&s.name).display()),
            q(&s.name),
            q(accel_cache.display()),
        );
        let path = vdir.join(format!("{}.toml", s.name));
        std::fs::write(&path, text).map_err(|e| local_err(&path, e))?;
        procs.push(LocalProc { name: format!("vpe-{}", s.name), site: s.site, role: AGENT.into(), config: path, addr });
    }
    // Users find the manager through their client configuration.
    let table = format!("\n[vpe]\nmanager = {{ addr = {}, name = \"vpe\" }}\n", q(manager.addr));
    let clients = std::iter::once("client.toml".to_string()).chain(sites.iter().map(|s| format!("client-{s}.toml")));
    for name in clients {
        let path = dir.join(name);
        let mut text = std::fs::read_to_string(&path).map_err(|e| local_err(&path, e))?;
        text.push_str(&table);
        std::fs::write(&path, text).map_err(|e| local_err(&path, e))?;
    }
    Ok(())
}

/// Waits until every agent registered with the manager (asked through `vpe pops --wait`).
pub(super) async fn wait_ready(state: &LocalState, bins: &Path, wait: Duration) -> Result<()> {
    let agents = state.procs.iter().filter(|p| p.role == AGENT).count();
    if agents == 0 {
        return Ok(());
    }
    let out = tokio::process::Command::new(bins.join("vpe"))
        .arg("--config")
        .arg(&state.client_config)
        .args(["pops", "--wait", &agents.to_string(), "--timeout", &wait.as_secs().max(1).to_string()])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(wait + Duration::from_secs(10), out)
        .await
        .map_err(|_| ClientError::Config(format!("vpe agents did not register within {} s", wait.as_secs())))?
        .map_err(|e| local_err(&bins.join("vpe"), e))?;
    if !out.status.success() {
        return Err(ClientError::Config(format!(
            "vpe agents did not all register with the manager: {}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout)
        )));
    }
    Ok(())
}
