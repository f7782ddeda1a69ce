//! Callbacks: how the meta server tells a caching client that something it
//! may have cached changed.
//!
//! A client that wants to cache metadata opens one long-lived bidirectional
//! stream on its connection to the meta server and sends
//! [`crate::meta::MetaRequest::Subscribe`] in a normal [`crate::meta::MetaCall`]
//! frame. The meta server answers with one [`CallbackFrame::Subscribed`] and
//! from then on writes [`CallbackFrame::Invalidate`] frames on that stream for
//! as long as the connection lives. The *session* is the QUIC connection:
//! every metadata reply the client receives on that same connection grants it
//! a lease of [`CallbackFrame::Subscribed::lease_ms`] on what the reply
//! described (the inodes whose attributes it carried, and for lookups and
//! directory listings the directory whose entries it showed). Until the lease
//! runs out, the meta server pushes an [`Invalidation`] before it answers any
//! request that changes those objects. Requests a session makes itself do not
//! come back to it as invalidations: the reply already says what changed.
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
    /// Changes, in the order the meta server committed them.
    Invalidate(Vec<Invalidation>),
}
