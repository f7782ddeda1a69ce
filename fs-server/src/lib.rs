//! `renkei-server`: the file server of one PoP.
//!
//! It keeps whole-file replicas in a local spool, serves streamed reads and
//! writes authorised by capabilities the meta server signed, verifies every
//! byte against BLAKE3 chunk hashes before sending it, registers each new
//! replica at the meta server only once it is durable, and heartbeats its
//! capacity and load. File bytes travel raw on QUIC streams.
//!
//! Read [`node::serve`] first, then [`data`] (the read and write paths) and
//! [`replica`] (the on-disk format).
//!
//! # Layout
//! - [`config`]: the TOML configuration.
//! - [`node`]: joining the federation, heartbeats, accept loop.
//! - [`data`]: read and write sessions.
//! - [`bundle`]: bundles of new files (one stream, one commit) and space
//!   reservations for them.
//! - [`replica`] and [`tree_hash`]: replica files and their verification.
//! - [`spool`]: where replicas live on disk.
//! - [`metalink`]: calls to the meta server and the capability verifier;
//!   [`voids`]: the user capabilities changes of mode or owner voided.
//! - [`replicate`], [`pull`], [`read_many`]: server-to-server replication
//!   (copy orders, the pulling side, the serving side); [`pins`] keeps
//!   fresh copies from concurrent deletion.
//! - [`verify`]: checking replicas in place for `renkei fsck`.
//! - [`checks`]: service checks (write, read back, serve, reach meta).
//! - [`probe`]: measuring paths between servers for `renkei netcheck`.
//! - [`streams`]: idle bounds and per-connection and per-user limits on
//!   streams, so no peer can stall the server for the others.

pub mod bundle;
pub mod checks;
pub mod config;
pub mod data;
pub mod metalink;
pub mod node;
pub mod pins;
pub mod probe;
pub mod pull;
pub mod read_many;
pub mod replica;
pub mod replicate;
pub mod spool;
pub mod streams;
pub mod tree_hash;
pub mod verify;
pub mod voids;

pub use config::ServerConfig;

use std::path::PathBuf;

/// Failures starting or running a file server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The spool (or another path) is unusable.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// The configuration is inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// TLS or QUIC setup failed.
    #[error(transparent)]
    Endpoint(#[from] fs_proto::endpoint::EndpointError),
}

/// Load identity, bind and serve until `shutdown` completes.
pub async fn run(config: ServerConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<(), ServerError> {
    let tls = fs_proto::endpoint::TlsIdentity::load(&config.tls)?;
    let endpoint = fs_proto::endpoint::server_endpoint(config.listen, &tls, &config.transport)?;
    node::serve(config, tls.identity.clone(), endpoint, shutdown).await
}
