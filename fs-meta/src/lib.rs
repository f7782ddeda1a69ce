//! `renkei-meta`: the metadata server of a renkei federation.
//!
//! One per federation. It owns the namespace (inodes, directory entries,
//! attributes, xattrs), the replica locations of every file generation with
//! their BLAKE3 hashes, the host registry with liveness, and the user table.
//! It enforces permissions against the identity each peer's certificate
//! proves, and signs the short-lived [`fs_proto::Capability`]s that file
//! servers check. It never touches file bytes.
//!
//! Read [`MetaNode`] (open + serve), then [`service::MetaService`] (request
//! dispatch) and [`namespace::Namespace`] (the POSIX semantics).
//!
//! # Layout
//! - [`config`]: the TOML configuration.
//! - [`node`]: QUIC accept loop, one request per stream, durability.
//! - [`service`]: dispatch and capability issuing.
//! - [`callbacks`]: leases of caching clients and pushed invalidations.
//! - [`dirlease`], [`bundle`]: directory write leases of bundling clients
//!   (recalled before anyone else uses the directory) and bundle commits.
//! - [`namespace`]: namespace operations as atomic transactions.
//! - [`perm`]: permission checks.
//! - [`hosts`]: host registry and write placement.
//! - [`users`]: certificate name to uid/gid; users and groups admins manage.
//! - [`admin`]: site administration requests (users, groups, draining hosts).
//! - [`voids`]: the capability clock and the capabilities changes of mode
//!   or owner voided, for file servers.
//! - [`store`]: the key-value engine (sled, or etcd replicated).
//! - [`leader`]: leader election among meta servers on one etcd prefix
//!   (only the leader serves; standbys refuse connections and wait).
//! - [`record`], [`keys`], [`txn`]: on-disk layout and transactions.
//! - [`replication`]: copy planning, capabilities for copies and checks,
//!   and the background worker keeping copy counts.
//! - [`worker`]: the shape of background work and its driver.
//! - [`monitor`]: service-check reports, netcheck, rates, history, events,
//!   and the web role (status page and `/metrics` over HTTP).

pub mod admin;
pub mod bundle;
pub mod callbacks;
pub mod config;
pub mod dirlease;
pub mod hosts;
pub mod keys;
pub mod leader;
pub mod locks;
pub mod monitor;
pub mod namespace;
pub mod node;
pub mod penalty;
pub mod perm;
pub mod quota;
pub mod record;
pub mod replication;
pub mod service;
pub mod store;
pub mod txn;
pub mod users;
pub mod voids;
pub mod worker;

pub use config::MetaConfig;
pub use node::MetaNode;

use std::path::PathBuf;

/// Failures starting or running the meta server.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The database could not be opened or flushed.
    #[error("metadata database: {0}")]
    Db(crate::store::StoreError),
    /// A directory could not be created.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// Setting up the namespace failed.
    #[error("{0}")]
    Remote(fs_proto::RemoteError),
    /// TLS or QUIC setup failed.
    #[error(transparent)]
    Endpoint(#[from] fs_proto::endpoint::EndpointError),
    /// The status page cannot be served as configured.
    #[error("{0}")]
    Web(String),
    /// Leader election on etcd failed, or leadership was lost.
    #[error("leadership: {0}")]
    Leader(String),
}

/// Load identity, bind the endpoint, open the database and serve until
/// `shutdown` completes: the whole meta server.
///
/// With the etcd store the server first wins the election ([`leader`]):
/// until then it holds its port but refuses every connection, and it stops
/// (returns an error) as soon as it loses its lease.
pub async fn run(config: MetaConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<(), MetaError> {
    let tls = fs_proto::endpoint::TlsIdentity::load(&config.tls)?;
    let endpoint = fs_proto::endpoint::server_endpoint(config.listen, &tls, &config.transport)?;
    if config.store.kind != store::StoreKind::Etcd {
        let node = MetaNode::open(config, &tls)?;
        return node.serve(endpoint, shutdown).await;
    }
    tokio::pin!(shutdown);
    let me = endpoint.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| config.listen.to_string());
    // A standby refuses connections at once: a client listing several
    // meta servers tries the next without waiting out a timeout.
    let refuser = tokio::spawn({
        let endpoint = endpoint.clone();
        async move {
            while let Some(incoming) = endpoint.accept().await {
                incoming.refuse();
            }
        }
    });
    tracing::info!(%me, "standby: campaigning for leadership");
    let elected = tokio::select! {
        l = leader::campaign(&config.store, &me) => Some(l),
        _ = &mut shutdown => None,
    };
    refuser.abort();
    let _ = refuser.await;
    let Some(mut leadership) = elected else { return Ok(()) };
    let node = MetaNode::open(config, &tls)?;
    tokio::select! {
        r = node.serve(endpoint, &mut shutdown) => {
            leadership.resign().await;
            r
        }
        why = leadership.lost() => Err(MetaError::Leader(format!(
            "lost the leader lease ({why}); stopped serving (started again, this server waits as a standby)"
        ))),
    }
}
