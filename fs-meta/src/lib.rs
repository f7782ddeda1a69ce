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
}

/// Load identity, bind the endpoint, open the database and serve until
/// `shutdown` completes: the whole meta server.
pub async fn run(config: MetaConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<(), MetaError> {
    let tls = fs_proto::endpoint::TlsIdentity::load(&config.tls)?;
    let endpoint = fs_proto::endpoint::server_endpoint(config.listen, &tls, &config.transport)?;
    let node = MetaNode::open(config, &tls)?;
    node.serve(endpoint, shutdown).await
}
