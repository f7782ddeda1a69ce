//! Issue 12, finding 10: any host certificate with a site used to be
//! accepted as a PoP agent, so any host (the meta server's, a new one)
//! could take VM placements of its site and the users' SSH keys with them.
//! Now only the hosts the manager's `agents` lists are agents: another host
//! dials the manager as an agent, is refused with the reason, and the
//! manager's PoPs stay what they were. No VM is booted, so this needs no
//! libvirt and always runs.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use fs_client::ClientConfig;
use fs_proto::endpoint::{client_endpoint, explain_connection_error, TlsIdentity, Tuning};
use fs_proto::identity::{CaDir, IssueRequest, Role};
use fs_proto::rpc::{Dialer, PeerAddr};
use fs_proto::vpe::{AgentRequest, AgentResponse, PopReport};
use vpe::client::VpeClient;

use crate::bounded;
use crate::harness::{serial, Setup, Stack};

/// Dial the manager with host `host`'s certificate and heartbeat as a PoP
/// agent, as `vpe agent` does; the reason the manager closed the
/// connection.
async fn pose_as_agent(s: &Stack, host: &str, manager: &PeerAddr) -> Result<String> {
    let ca = CaDir::new(s.fed().join("ca"));
    let files = ca.issued_paths(Role::Host, host);
    if !files.cert.exists() {
        ca.issue(&IssueRequest {
            name: host.into(),
            role: Role::Host,
            site: Some("site1".into()),
            not_before: None,
            valid_days: 1,
        })?;
    }
    let mut cfg = ClientConfig::load(&s.client_config("alice"))?;
    cfg.tls.cert = files.cert;
    cfg.tls.key = files.key;
    let tls = TlsIdentity::load(&cfg.tls)?;
    let endpoint = client_endpoint("127.0.0.1:0".parse()?, &tls, &Tuning::default())?;
    let conn = Dialer::new(endpoint, Duration::from_secs(10)).connect(manager).await?;
    let report = PopReport {
        max_vms: 64,
        vms: vec![],
        accel: None,
        cached_images: vec![],
        image_bytes_fetched: 0,
        problems: vec![],
    };
    let req = AgentRequest::Heartbeat(report);
    let answer = fs_proto::rpc::call::<_, AgentResponse>(&conn, &manager.name, &req, Duration::from_secs(10)).await;
    ensure!(answer.is_err(), "{host} was answered as an agent: {answer:?}");
    let why = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .context("the manager kept a non-agent's connection open")?;
    Ok(explain_connection_error(&why))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_hosts_are_accepted_as_pop_agents() -> Result<()> {
    let lock = serial().await;
    bounded(300, async {
        let s = Stack::start_without_vms(lock, Setup::new(1, 1)).await?;
        let alice = VpeClient::from_config_file(&s.client_config("alice")).await?;
        let text = std::fs::read_to_string(s.client_config("alice"))?;
        let manager: PeerAddr = toml::from_str::<toml::Value>(&text)?
            .get("vpe")
            .and_then(|v| v.get("manager"))
            .context("no [vpe] manager in the client configuration")?
            .clone()
            .try_into()?;
        let before: Vec<String> = alice.pops().await?.into_iter().map(|p| p.name).collect();
        ensure!(before == s.pops(), "PoPs before: {before:?}");

        // The meta server's host certificate (it names a site), and a new
        // host certificate of site1: neither is a listed agent.
        for host in ["meta", "rogue"] {
            let why = pose_as_agent(&s, host, &manager).await?;
            ensure!(why.contains("is not a vpe agent") && why.contains(host), "{host}: {why}");
        }

        // The manager's PoPs are what they were, and it still serves.
        let after: Vec<String> = alice.pops().await?.into_iter().map(|p| p.name).collect();
        ensure!(after == before, "PoPs after: {after:?}");
        alice.whoami().await?;
        Ok(())
    })
    .await
}
