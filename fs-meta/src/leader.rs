//! Leader election among meta servers sharing one etcd prefix: only the
//! leader serves.
//!
//! Each `renkei-meta` with `[store] kind = "etcd"` grants itself an etcd
//! lease of `leader_ttl_secs`, keeps it alive, and campaigns (etcd's
//! election API) under `PREFIX leader` with its listen address as value.
//! The one elected opens the store (which takes the prefix over and fences
//! any earlier writer, see [`crate::store`]) and serves; the others are
//! standbys: they hold their QUIC port but refuse every connection at once
//! (clients listing several meta servers move on to the next address), and
//! log that they wait. When the leader dies its lease lapses within the TTL
//! and a standby is elected.
//!
//! A process that cannot renew its lease for the TTL (counted from the
//! sending of the last renewal etcd acknowledged, so before etcd itself
//! lets the lease lapse) has lost leadership: [`Leadership::lost`]
//! completes and the meta server exits with an error (a supervisor starts
//! it again, as a standby). Even if it went on, the fence would refuse its
//! next commit once a standby took over.
//!
//! This module owns the lease, its keep-alive task and the campaign; it
//! does not touch the metadata.

use crate::store::StoreConfig;
use crate::MetaError;
use etcd_client::{Client, ConnectOptions};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{info, warn};

/// Bound on connecting and on one lease request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest pause between campaigns that failed (etcd unreachable).
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The election key of a prefix.
pub fn election_name(prefix: &str) -> String {
    format!("{prefix}leader")
}

/// Leadership won: the lease behind it is kept alive until dropped.
pub struct Leadership {
    client: Client,
    lease: i64,
    lost: watch::Receiver<Option<String>>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Completes when the lease is lost (why).
    pub async fn lost(&mut self) -> String {
        match self.lost.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            Err(_) => "the lease keeper stopped".into(),
        }
    }

    /// Give leadership up at once (revoke the lease), so a standby need
    /// not wait out the TTL: on a clean shutdown.
    pub async fn resign(mut self) {
        self.keeper.abort();
        match tokio::time::timeout(REQUEST_TIMEOUT, self.client.lease_revoke(self.lease)).await {
            Ok(Ok(_)) => info!("leadership given up"),
            Ok(Err(e)) => warn!("giving leadership up: {e} (a standby takes over when the lease lapses)"),
            Err(_) => warn!("giving leadership up: no answer (a standby takes over when the lease lapses)"),
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

fn etcd_err(what: &str) -> impl FnOnce(etcd_client::Error) -> MetaError + '_ {
    move |e| MetaError::Leader(format!("{what}: {e}"))
}

/// Campaign until elected, as `me` (the listen address, shown to
/// operators); retries while etcd is unreachable. Never returns while
/// another meta server leads.
pub async fn campaign(config: &StoreConfig, me: &str) -> Leadership {
    let mut backoff = Duration::from_millis(100);
    for attempt in 0usize.. {
        match campaign_once(config, me, attempt).await {
            Ok(l) => return l,
            Err(e) => {
                warn!("campaign for leadership failed, trying again: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    unreachable!("the campaign loop ends only when elected")
}

/// A client of one member, `endpoints[at % len]`: each attempt talks to
/// one member, the next attempt to the next (a client of several members
/// kept choosing a dead one), so a member lost costs one attempt.
async fn connect(endpoints: &[String], at: usize) -> Result<Client, MetaError> {
    let endpoint = &endpoints[at % endpoints.len()];
    // No per-request timeout on this client: a campaign waits as long as
    // another leads. Keep-alives find a member that died under it.
    let options = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2))
        .with_keep_alive_while_idle(true);
    tokio::time::timeout(REQUEST_TIMEOUT, Client::connect([endpoint], Some(options)))
        .await
        .map_err(|_| MetaError::Leader(format!("{endpoint}: no answer")))?
        .map_err(etcd_err("connect"))
}

async fn campaign_once(config: &StoreConfig, me: &str, attempt: usize) -> Result<Leadership, MetaError> {
    let mut client = connect(&config.endpoints, attempt).await?;
    let ttl = config.leader_ttl_secs as i64;
    let lease = tokio::time::timeout(REQUEST_TIMEOUT, client.lease_grant(ttl, None))
        .await
        .map_err(|_| MetaError::Leader("lease grant: no answer".into()))?
        .map_err(etcd_err("lease grant"))?
        .id();
    let (tx, mut lost) = watch::channel(None);
    let keeper = tokio::spawn(keep_alive(
        config.endpoints.clone(),
        attempt,
        client.clone(),
        lease,
        Duration::from_secs(config.leader_ttl_secs),
        tx,
    ));
    let name = election_name(&config.prefix);
    match tokio::time::timeout(REQUEST_TIMEOUT, client.leader(name.clone())).await {
        Ok(Ok(r)) => {
            if let Some(kv) = r.kv() {
                info!(leader = %String::from_utf8_lossy(kv.value()), "standby: another meta server leads; waiting for its lease to lapse");
            }
        }
        Ok(Err(e)) if e.to_string().contains("no leader") => {}
        Ok(Err(e)) => warn!("asking who leads: {e}"),
        Err(_) => warn!("asking who leads: no answer"),
    }
    tokio::select! {
        r = client.campaign(name, me, lease) => {
            r.map_err(etcd_err("campaign"))?;
        }
        why = lost.wait_for(Option::is_some) => {
            keeper.abort();
            let why = why.map(|w| w.clone().unwrap_or_default()).unwrap_or_default();
            return Err(MetaError::Leader(format!("lease lost while waiting: {why}")));
        }
    }
    info!(lease, "elected leader");
    Ok(Leadership { client, lease, lost, keeper })
}

/// Renew `lease` every third of `ttl`; report it lost when no renewal was
/// acknowledged within `ttl` of its sending, or etcd says it expired. A
/// renewal that fails moves to the next member (`endpoints`, from `at`).
async fn keep_alive(
    endpoints: Vec<String>,
    mut at: usize,
    mut client: Client,
    lease: i64,
    ttl: Duration,
    lost: watch::Sender<Option<String>>,
) {
    let every = ttl / 3;
    // Sending time of the last renewal etcd acknowledged (the grant first).
    let mut renewed = Instant::now();
    let mut stream = None;
    loop {
        let deadline = renewed + ttl;
        if Instant::now() >= deadline {
            let why = format!("no renewal of the etcd lease acknowledged within {} s", ttl.as_secs());
            warn!("leadership lost: {why}");
            let _ = lost.send(Some(why));
            return;
        }
        if stream.is_none() {
            match tokio::time::timeout(every, client.lease_keep_alive(lease)).await {
                Ok(Ok(s)) => stream = Some(s),
                Ok(Err(e)) => warn!("lease keep-alive: {e}"),
                Err(_) => warn!("lease keep-alive: no answer"),
            }
            if stream.is_none() {
                // Through the next member from now on.
                at += 1;
                if let Ok(Ok(c)) = tokio::time::timeout(every, connect(&endpoints, at)).await {
                    client = c;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        let tick = tokio::time::sleep(every);
        if let Some((keeper, responses)) = stream.as_mut() {
            let sent = Instant::now();
            let answer = tokio::time::timeout(every, async {
                keeper.keep_alive().await?;
                responses.message().await
            })
            .await;
            match answer {
                Ok(Ok(Some(r))) if r.ttl() > 0 => renewed = sent,
                Ok(Ok(Some(_))) => {
                    let why = "etcd says the lease expired".to_string();
                    warn!("leadership lost: {why}");
                    let _ = lost.send(Some(why));
                    return;
                }
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                    stream = None;
                    continue;
                }
            }
        }
        tick.await;
    }
}
