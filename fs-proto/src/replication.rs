//! Replication and integrity checking on the wire: what the meta server
//! plans and signs, what a destination file server is ordered to copy, and
//! what servers report back while they copy or verify.
//!
//! A replication hop by hop: a client (`renkei rep`) or the meta server's
//! own worker obtains a [`ReplicationPlan`] (per destination host, the files
//! to copy, each with a [`crate::Access::Replicate`] capability issued to
//! that destination and the hosts holding a good replica). It sends each
//! [`CopyOrder`]'s items to the destination as
//! [`crate::server::ServerRequest::Replicate`]; the destination pulls the
//! bytes from the nearest source with
//! [`crate::server::ServerRequest::ReadMany`] (many files on one stream),
//! checks every file's BLAKE3 against the capability, makes it durable and
//! registers it at the meta server (batched), then reports a
//! [`ReplicateEvent`] per file. No file byte passes through whoever gave
//! the order.

use crate::capability::SignedCapability;
use crate::error::RemoteError;
use crate::types::{Gen, Hash, Ino, ServerLoc};
use serde::{Deserialize, Serialize};

/// A host or a site named on the command line (`-S`/`-D`): the meta server
/// matches a host name first, then a site name.
pub type Place = String;

/// How many good replicas a file should end up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CopyGoal {
    /// At least this many good replicas on hosts matching the destination
    /// (every host when no destination is given).
    Copies(u32),
    /// As many good replicas as the file has registered (good or bad), and
    /// at least its copy count: restores what a check found bad or missing.
    Repair,
}

/// A request for a replication plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationQuery {
    /// Files to consider (regular files; others are skipped).
    pub inos: Vec<Ino>,
    /// What to reach.
    pub goal: CopyGoal,
    /// Read only from replicas on this host or site.
    pub from: Option<Place>,
    /// Create new replicas only on this host or site; with
    /// [`CopyGoal::Copies`] only replicas there count.
    pub to: Option<Place>,
    /// Plan only: sign no capabilities.
    pub dry_run: bool,
}

/// One file to copy to a destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyItem {
    /// File.
    pub ino: Ino,
    /// Generation to copy (the current one when planned).
    pub gen: Gen,
    /// Its size.
    pub size: u64,
    /// Its BLAKE3.
    pub hash: Hash,
    /// `Replicate` capability whose principal is the destination host: lets
    /// it read this generation from the sources and register its copy.
    /// Empty (unsigned) in a dry-run plan.
    pub cap: SignedCapability,
    /// Live hosts holding a good replica, the planner's preference first
    /// (same site as the destination first); the destination re-orders by
    /// its measured round-trip time.
    pub sources: Vec<ServerLoc>,
}

/// The files one destination host should copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyOrder {
    /// The destination.
    pub target: ServerLoc,
    /// Files to copy there.
    pub items: Vec<CopyItem>,
}

/// Why a file was left out of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SkipReason {
    /// Not a regular file.
    NotAFile,
    /// Empty: there are no bytes to replicate.
    Empty,
    /// No live, good replica to read from (at the requested source).
    NoSource,
    /// Not enough live hosts with room (at the requested destination).
    NoTarget,
}

/// A file the plan does not (fully) serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// File.
    pub ino: Ino,
    /// Why.
    pub reason: SkipReason,
    /// Copies still missing after the plan (0 for files with nothing to do).
    pub missing: u32,
}

/// The answer to a [`ReplicationQuery`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationPlan {
    /// Copies to make, grouped by destination.
    pub orders: Vec<CopyOrder>,
    /// Files that already meet the goal.
    pub satisfied: Vec<Ino>,
    /// Files the plan cannot serve, or only partly.
    pub skipped: Vec<Skipped>,
    /// Errors about single files (not found, permission denied).
    pub refused: Vec<(Ino, RemoteError)>,
}

/// What a destination server reports for each file of a `Replicate` order,
/// one frame per file, in completion order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicateEvent {
    /// The replica is durable, verified and registered.
    Copied {
        /// File.
        ino: Ino,
        /// Generation.
        gen: Gen,
        /// Bytes moved over the network for it (0 when a good copy was
        /// already on the destination's disk).
        bytes: u64,
        /// The host it was read from (empty when nothing was moved).
        from: String,
    },
    /// No replica was made (nothing is registered, no partial file kept).
    Failed {
        /// File.
        ino: Ino,
        /// Generation.
        gen: Gen,
        /// Why (the last source's failure).
        error: RemoteError,
    },
}

/// One replica a server is asked to verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckItem {
    /// File.
    pub ino: Ino,
    /// Generation.
    pub gen: Gen,
    /// Read capability for the caller, with the registered size and hash.
    pub cap: SignedCapability,
}

/// The replicas one host should verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOrder {
    /// The host.
    pub target: ServerLoc,
    /// What to verify there.
    pub items: Vec<CheckItem>,
}

/// A registered replica a check cannot reach or need not verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaNote {
    /// File.
    pub ino: Ino,
    /// Host.
    pub host: String,
    /// Site.
    pub site: String,
}

/// The answer to a check request: which host verifies what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckPlan {
    /// Verifications to run, grouped by host.
    pub orders: Vec<CheckOrder>,
    /// Replicas already known bad (not verified again).
    pub known_bad: Vec<ReplicaNote>,
    /// Replicas on hosts that are down.
    pub unreachable: Vec<ReplicaNote>,
    /// Files with contents but no registered replica at all.
    pub lost: Vec<Ino>,
    /// Errors about single files (not found, permission denied).
    pub refused: Vec<(Ino, RemoteError)>,
}

/// What a server reports for each replica of a `Verify` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyEvent {
    /// File.
    pub ino: Ino,
    /// Generation.
    pub gen: Gen,
    /// Bytes read and hashed.
    pub bytes: u64,
    /// Ok, or why the replica is bad (`Corrupt`, or `NotFound` when it is
    /// missing from the spool). A bad replica has been reported to the meta
    /// server, which no longer hands it out.
    pub result: Result<(), RemoteError>,
}

/// The meta server's background replication, as `renkei ncopy --status`
/// shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationStatus {
    /// Whether the worker runs at all.
    pub enabled: bool,
    /// Passes over the namespace since start.
    pub passes: u64,
    /// End of the last pass (ms since the epoch; 0: none yet).
    pub last_pass_ms: u64,
    /// Files with replicas looked at in the last pass.
    pub files_checked: u64,
    /// Files still short of their copy count.
    pub backlog_files: u64,
    /// Bytes still to copy for them.
    pub backlog_bytes: u64,
    /// Files with more replicas than wanted, still to trim.
    pub surplus_files: u64,
    /// Files that cannot reach their copy count now (no live source or no
    /// host to copy to).
    pub stuck_files: u64,
    /// Copies being made right now.
    pub in_flight: u64,
    /// Copies made since start.
    pub copies_done: u64,
    /// Bytes copied since start.
    pub bytes_copied: u64,
    /// Copies that failed since start.
    pub copies_failed: u64,
    /// Surplus replicas removed since start.
    pub removed: u64,
    /// Hosts down for longer than the grace period: their replicas are
    /// being replaced elsewhere.
    pub hosts_lost: Vec<String>,
    /// The most recent failure, for operators.
    pub last_error: Option<String>,
}
