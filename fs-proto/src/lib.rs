//! The one crate that knows what renkei puts on the wire.
//!
//! Every process of a federation (meta server, file servers, clients, VM
//! agents) talks QUIC with mutual TLS. This crate owns everything the two ends
//! of such a connection must agree on: the protocol version (carried as the
//! ALPN string), the framing of messages, every request and response type,
//! the closed set of [`ErrorCode`]s that may cross the network, the signed
//! [`Capability`] a file server checks before touching a replica, and the
//! federation identities (a CA made with rcgen, host and user certificates)
//! with the rustls/quinn configuration built from them.
//!
//! Start with [`meta::MetaRequest`], [`server::ServerRequest`] and
//! [`identity::Identity`].
//!
//! # Layout
//! - [`version`]: ALPN and protocol constants.
//! - [`frame`]: length-prefixed postcard messages on QUIC streams.
//! - [`error`]: [`ErrorCode`], [`RemoteError`] and local framing errors.
//! - [`types`]: attributes, file kinds, host and replica descriptions.
//! - [`meta`] and [`server`]: the two services' requests and responses.
//! - [`admin`]: site administration (users, groups, draining hosts).
//! - [`callback`]: invalidations the meta server pushes to caching clients.
//! - [`bundle`]: directory write leases, leased inode numbers, bundles of
//!   new files.
//! - [`capability`]: what the meta server signs and file servers verify.
//! - [`replication`]: replication plans, copy orders, checks and their events.
//! - [`monitor`]: service checks, netcheck, VM reports, the status page's data.
//! - [`identity`]: the federation CA and certificates.
//! - [`endpoint`]: rustls + quinn configuration with WAN-sized windows.
//! - [`rpc`]: connection cache and the request/reply exchange.
//! - [`serve`]: authenticating incoming connections, reading requests.
//! - [`vpe`]: the VM service (users, manager, PoP agents).
//! - [`config`]: reading the TOML configurations, errors naming line and field.
//! - [`clidoc`]: shell completions and man pages of every binary.
#![warn(missing_docs, unreachable_pub)]

pub mod admin;
pub mod bounded;
pub mod bundle;
pub mod callback;
pub mod capability;
pub mod clidoc;
pub mod config;
pub mod endpoint;
pub mod error;
pub mod footprint;
pub mod frame;
pub mod identity;
pub mod meta;
pub mod mode;
pub mod monitor;
pub mod process;
pub mod replication;
pub mod revocation;
pub mod rpc;
pub mod serve;
pub mod server;
pub mod types;
mod udp;
pub mod version;
pub mod vpe;

pub use capability::{
    Access, CapVoid, CapVoids, Capability, CapabilitySigner, CapabilityVerifier, Principal, SignedCapability,
};
pub use error::{ErrorCode, ProtoError, RemoteError};
pub use identity::{Identity, Role};
pub use types::*;
