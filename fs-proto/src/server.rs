//! The data service of a file server: requests clients and other servers
//! send to `renkei-server`, and its responses.
//!
//! One request per QUIC bidirectional stream. A read is one
//! [`ServerRequest::Read`] frame answered by a [`ServerResponse::Reading`]
//! frame followed by exactly `len` raw bytes. A write is one
//! [`ServerRequest::Write`] frame followed by [`WriteFrame`]s (each `Data`
//! frame followed by its raw bytes) up to `Commit`, answered by one
//! `Stored` frame once the replica is durable and registered. If the server
//! detects corruption in the middle of a read it resets the stream with
//! [`crate::error::quic_codes::CORRUPT`] instead of sending bad bytes.
//! Replication (`Replicate`, `ReadMany`) and checking (`Verify`) are
//! described in [`crate::replication`].

use crate::bundle::{BundleOp, EntryResult};
use crate::capability::SignedCapability;
use crate::error::RemoteError;
use crate::meta::BaseGrant;
use crate::monitor::{ProbeRequest, ProbeResponse};
use crate::replication::CopyItem;
use crate::types::{Gen, Hash};
use serde::{Deserialize, Serialize};

/// The requests of the data service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerRequest {
    /// Read `len` bytes at `offset` of the replica the capability names
    /// (`len` is clipped at end of file).
    Read {
        /// Read capability.
        cap: SignedCapability,
        /// Start.
        offset: u64,
        /// Length.
        len: u64,
    },
    /// Write a new generation. If `base` is given the new replica starts as a
    /// copy of that generation (fetched from a peer if not held locally).
    Write {
        /// Write capability.
        cap: SignedCapability,
        /// Where the current bytes are.
        base: Option<BaseGrant>,
    },
    /// Liveness and identity check.
    Ping,
    /// Make replicas of existing generations on this server by pulling them
    /// from peers (see [`crate::replication`]). Answered by
    /// [`ServerResponse::Replicating`], then one
    /// [`crate::replication::ReplicateEvent`] frame per item as each
    /// finishes; the stream ends after the last.
    Replicate {
        /// What to copy, each with a capability issued to this server.
        items: Vec<CopyItem>,
    },
    /// Several whole replicas on one stream, in order (a peer pulling them
    /// for replication). For each capability the answer is one
    /// [`ServerReply`] frame: `Reading{len, size}` followed by exactly `len`
    /// raw bytes, or an error for that file alone. A chunk failing its hash
    /// mid-file resets the stream with [`crate::error::quic_codes::CORRUPT`].
    ReadMany {
        /// Read or replicate capabilities whose principal is the caller.
        caps: Vec<SignedCapability>,
    },
    /// Verify replicas against their registered hash on this server's disk,
    /// moving no data. Answered by [`ServerResponse::Verifying`], then one
    /// [`crate::replication::VerifyEvent`] frame per capability.
    Verify {
        /// Read capabilities whose principal is the caller.
        caps: Vec<SignedCapability>,
    },
    /// Monitoring: measure paths for `renkei netcheck`, or send probe bytes
    /// (see [`crate::monitor`]).
    Probe(ProbeRequest),
    /// Store a bundle of new files and commit it at the meta server (see
    /// [`crate::bundle`]): the bytes of every regular entry follow raw, in
    /// order, each exactly its `size`; then the caller finishes its side.
    /// Answered by [`ServerResponse::BundleStored`] once committed.
    WriteBundle {
        /// The caller's [`crate::Access::Bundle`] capability.
        cap: SignedCapability,
        /// The operations, in order (bytes follow for each
        /// [`crate::bundle::BundleOp::data_len`]).
        ops: Vec<BundleOp>,
    },
    /// Reserve disk space for bundles sent later on this connection; refused
    /// with `NoSpace` if the spool cannot back it. Reservations end with the
    /// connection; bundles consume them.
    Reserve {
        /// The caller's [`crate::Access::Bundle`] capability.
        cap: SignedCapability,
        /// Bytes wanted (see [`crate::bundle::stored_cost`]).
        bytes: u64,
    },
}

/// One step of a write session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteFrame {
    /// `len` raw bytes follow, to be written at `offset`.
    Data {
        /// Offset.
        offset: u64,
        /// Number of raw bytes that follow this frame.
        len: u64,
    },
    /// Set the file length (truncate or extend with zeros).
    SetLen {
        /// New length.
        size: u64,
    },
    /// Finish: make the replica durable, verify, register it.
    Commit,
}

/// The responses of the data service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerResponse {
    /// `len` raw bytes follow.
    Reading {
        /// Bytes that follow.
        len: u64,
        /// Size of the whole replica.
        size: u64,
    },
    /// The new generation is durable and registered.
    Stored {
        /// Generation.
        gen: Gen,
        /// Size.
        size: u64,
        /// BLAKE3 of the whole replica.
        hash: Hash,
    },
    /// A `Replicate` order was accepted; this many events follow.
    Replicating {
        /// Items.
        items: u32,
    },
    /// A `Verify` request was accepted; this many events follow.
    Verifying {
        /// Items.
        items: u32,
    },
    /// Answer to `Ping`.
    Pong {
        /// Host name.
        host: String,
        /// Site.
        site: String,
    },
    /// Answer to `Probe`.
    Probe(ProbeResponse),
    /// Answer to `WriteBundle`: one result per entry, in order.
    BundleStored(Vec<EntryResult>),
    /// Answer to `Reserve`: bytes this connection now has reserved.
    Reserved {
        /// Total reserved.
        bytes: u64,
    },
}

/// A data service reply frame.
pub type ServerReply = Result<ServerResponse, RemoteError>;
