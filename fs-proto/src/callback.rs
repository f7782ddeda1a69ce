//! Callbacks: how the meta server tells a caching client that something it
//! may have cached changed, and how it knows the client heard.
//!
//! A client that wants to cache metadata opens one long-lived bidirectional
//! stream on its connection to the meta server and sends
//! [`crate::meta::MetaRequest::Subscribe`] in a normal [`crate::meta::MetaCall`]
//! frame, keeping its side of the stream open. The meta server answers with
//! one [`CallbackFrame::Subscribed`] and from then on writes
//! [`CallbackFrame::Invalidate`] frames on that stream for as long as the
//! connection lives, and [`CallbackFrame::Alive`] whenever it has written
//! nothing for [`ALIVE_EVERY_MS`]. The *session* is the QUIC connection:
//! every metadata reply the client receives on that same connection grants
//! it a lease of [`CallbackFrame::Subscribed::lease_ms`] on what the reply
//! described (the inodes whose attributes it carried, and for lookups and
//! directory listings the directory whose entries it showed). Until the
//! lease runs out, the meta server pushes an [`Invalidation`] before it
//! answers any request that changes those objects. Requests a session makes
//! itself do not come back to it as invalidations: the reply already says
//! what changed.
//!
//! **Acknowledged.** The client applies each `Invalidate` batch and answers
//! [`CallbackAck`] with its sequence number on its side of the stream. The
//! meta server answers the change only once every session it told has
//! acknowledged, its peer closed the connection, or [`ACK_BOUND_MS`] passed
//! (then it drops the session). A client that has heard nothing on the
//! stream for [`SILENT_MS`] (shorter than the bound) forgets what it cached
//! and subscribes again. So when a writer's close returns, no other client
//! still trusts what the close changed: a client may open a file it holds
//! under an unexpired lease without asking (close-to-open still holds).
//!
//! When the stream ends (the meta server restarted, dropped the session as too
//! slow, or the connection died) the client must forget everything it cached
//! under the session and subscribe again.

use crate::types::Ino;
use serde::{Deserialize, Serialize};

/// One change a caching client must apply.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Invalidation {
    /// Attributes of `ino` changed (mode, owner, size, times, link count,
    /// contents generation, extended attributes).
    Attr {
        /// The inode.
        ino: Ino,
    },
    /// The entry `name` in directory `parent` appeared, disappeared or now
    /// names another inode; any listing of `parent` is stale.
    Entry {
        /// The directory.
        parent: Ino,
        /// The name.
        name: String,
    },
    /// The server dropped every lease of this session (too many cached
    /// objects): forget everything cached.
    Reset,
    /// To the holder of the write lease on `dir` (see [`crate::bundle`]):
    /// another client wants it. Send what is pending in `dir`, then release
    /// it ([`crate::meta::MetaRequest::ReleaseDirs`]).
    Recall {
        /// The directory.
        dir: Ino,
    },
    /// Another client now holds the write lease on `dir`: forget every name
    /// and listing cached for it (asking again recalls the lease).
    Leased {
        /// The directory.
        dir: Ino,
    },
}

impl Invalidation {
    /// The inode whose lease holders must hear about this change.
    pub fn lease_key(&self) -> Option<Ino> {
        match self {
            Invalidation::Attr { ino } => Some(*ino),
            Invalidation::Entry { parent, .. } => Some(*parent),
            Invalidation::Leased { dir } => Some(*dir),
            Invalidation::Reset | Invalidation::Recall { .. } => None,
        }
    }
}

/// A frame the meta server writes on a subscription stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallbackFrame {
    /// The subscription is active: from now on replies on this connection
    /// carry leases of `lease_ms`.
    Subscribed {
        /// How long (ms) a lease lasts from the moment the request was sent.
        lease_ms: u64,
    },
    /// Changes, in the order the meta server committed them; the client
    /// answers [`CallbackAck`] with `seq` once it applied them.
    Invalidate {
        /// Sequence number within the session (increasing).
        seq: u64,
        /// The changes.
        list: Vec<Invalidation>,
    },
    /// Nothing else was written for [`ALIVE_EVERY_MS`]: the session lives.
    Alive,
    /// No subscription for now (the first and only frame): this principal
    /// recently held other clients up (did not acknowledge invalidations or
    /// give back a recalled directory). The client runs without a cache and
    /// asks again after `retry_after_ms`.
    Refused {
        /// Why, for the client's log.
        reason: String,
        /// When to ask again (ms).
        retry_after_ms: u64,
    },
}

/// What a subscribed client writes on its side of the stream: the batches
/// up to `seq` are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackAck {
    /// The highest sequence number applied.
    pub seq: u64,
}

/// The meta server writes [`CallbackFrame::Alive`] after this long (ms)
/// without another frame.
pub const ALIVE_EVERY_MS: u64 = 500;
/// A client that has read nothing on its subscription for this long (ms)
/// stops trusting its cache and subscribes again.
pub const SILENT_MS: u64 = 2_000;
/// A change waits this long (ms) for the acknowledgements of the sessions
/// it was pushed to; a session that has not acknowledged by then is
/// dropped. Longer than [`SILENT_MS`] plus a one-way delay, so a client cut
/// off before acknowledging has stopped trusting its cache by then; shorter
/// than any caller's bound on one request (the mount's is 5 s).
pub const ACK_BOUND_MS: u64 = 3_000;

// A client misses several `Alive` frames before it gives up, and gives up
// (plus a generous one-way delay) before the meta server stops waiting for it.
const _: () = assert!(SILENT_MS >= 3 * ALIVE_EVERY_MS && ACK_BOUND_MS >= SILENT_MS + 1_000);
