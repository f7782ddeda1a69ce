//! The renkei client: a library (used by the `renkei` command, the FUSE
//! mount, VM agents, benchmarks and tests) and the `renkei` binary.
//!
//! [`Client`] is the entry point: connect with a [`ClientConfig`], then work
//! by path. Underneath, [`meta_client::MetaClient`] makes typed, counted
//! metadata calls and [`data::DataPlane`] streams file bytes to and from file
//! servers, verifying BLAKE3 end to end. [`to_errno`] is the one place a
//! remote error code becomes an errno.
//!
//! # Layout
//! - [`config`]: client configuration.
//! - [`client`]: path-level operations.
//! - [`bundle`]: bundles of new files (planner, sending, `put -r`).
//! - [`meta_client`]: metadata calls.
//! - [`data`]: reads and writes against file servers.
//! - [`counters`]: requests sent per kind.
//! - [`local`]: a whole federation on loopback (`renkei local up`).
//! - [`monitor`]: `renkei netcheck` and the federation status.
//! - [`mount`]: the FUSE mount (`renkei mount`).
//! - [`error`]: errors and errno mapping.
//! - [`path`]: remote path handling.
//! - [`replicate`] (`renkei rep`), [`check`] (`renkei fsck`), [`ncopy`]
//!   (copy counts): orchestrating server-to-server replication and checks;
//!   [`walk`] lists the files under remote paths.
//! - [`cli`]: the command line.

pub mod bundle;
pub mod check;
pub mod cli;
pub mod client;
pub mod config;
pub mod counters;
pub mod data;
pub mod error;
pub mod local;
pub mod meta_client;
pub mod monitor;
pub mod mount;
pub mod ncopy;
pub mod path;
pub mod replicate;
pub mod walk;

pub use client::Client;
pub use config::ClientConfig;
pub use error::{to_errno, ClientError};
