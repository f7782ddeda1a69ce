//! Small-file bundling: directory write leases, leased inode numbers, and
//! bundles that carry many new files in one data stream and one metadata
//! commit.
//!
//! A caching client (one with a callback subscription, see
//! [`crate::callback`]) asks for a write lease on a directory with
//! [`crate::meta::MetaRequest::LeaseDir`]. While it holds the lease it
//! answers lookups and listings of that directory itself and acknowledges
//! creates, small writes and closes in it locally, giving new files inode
//! numbers from a range the meta server leased to it ([`InoRange`]; the meta
//! server never allocates them to anyone else). A directory the holder
//! creates under a lease is leased to it too as soon as it exists.
//!
//! Pending entries travel in bundles: one [`crate::server::ServerRequest::WriteBundle`]
//! stream to a file server at the client's site carries the [`BundleEntry`]s
//! followed by the bytes of every regular file in order. The file server
//! writes each file as a complete, hashed replica, makes them durable, and
//! forwards one [`crate::meta::MetaRequest::CommitBundle`] that creates every
//! name and inode and registers every replica in one atomic transaction: a
//! name never appears without its data. Each entry gets its own result
//! ([`EntryResult`], e.g. `Exists` when the name was taken).
//!
//! Before any other client may see or change a leased directory, the meta
//! server sends the holder [`crate::callback::Invalidation::Recall`]; the
//! holder sends what is pending there and answers
//! [`crate::meta::MetaRequest::ReleaseDirs`]. A lease ends with its callback
//! session. Other caching clients are told [`crate::callback::Invalidation::Leased`]
//! when a lease is granted, so they forget the directory's names and ask
//! (which recalls the lease) instead of trusting what they cached.

use crate::capability::SignedCapability;
use crate::error::RemoteError;
use crate::types::{Attr, FileKind, Hash, Ino, ServerLoc, Timestamp};
use serde::{Deserialize, Serialize};

/// Most inode numbers one [`crate::meta::MetaRequest::LeaseDir`] hands out.
pub const MAX_INOS_PER_GRANT: u32 = 65_536;

/// A range of inode numbers leased to one principal: `first..first + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InoRange {
    /// First number.
    pub first: Ino,
    /// How many.
    pub count: u64,
}

impl InoRange {
    /// Whether `ino` is in the range.
    pub fn contains(&self, ino: Ino) -> bool {
        ino >= self.first && ino - self.first < self.count
    }
}

/// What a client asks for with [`crate::meta::MetaRequest::LeaseDir`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// Directory to hold a write lease on (None: only inode numbers and a
    /// fresh bundle capability). Needs write and search permission on it and
    /// a callback subscription on the connection.
    pub dir: Option<Ino>,
    /// Inode numbers wanted (0: none).
    pub inos: u32,
    /// The caller's site: bundles go to a file server there.
    pub site: String,
    /// Ranges from earlier grants whose numbers the caller still uses (at
    /// most [`MAX_HELD_RANGES`]): the new capability covers them too, so one
    /// capability covers every entry of a bundle.
    pub held: Vec<InoRange>,
}

/// Most earlier ranges one capability covers.
pub const MAX_HELD_RANGES: usize = 64;

/// The answer to [`crate::meta::MetaRequest::LeaseDir`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    /// The directory's attributes when the write lease was granted (None:
    /// not granted, e.g. the connection has no callback subscription or
    /// another request on the directory is being served; create through the
    /// meta server instead).
    pub dir: Option<Attr>,
    /// Inode numbers now leased to the caller.
    pub inos: Option<InoRange>,
    /// The file server that takes the caller's bundles.
    pub target: ServerLoc,
    /// A [`crate::Access::Bundle`] capability for the caller, covering the
    /// new range and the `held` ones the meta server confirmed.
    pub cap: SignedCapability,
}

/// One new name in a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleEntry {
    /// Directory (may be created earlier in the same or a committed bundle).
    pub parent: Ino,
    /// Name; must not exist.
    pub name: String,
    /// Inode number, from a range leased to the bundle's principal.
    pub ino: Ino,
    /// `Regular`, `Directory` or `Symlink`.
    pub kind: FileKind,
    /// Permission bits (umask applied).
    pub perm: u32,
    /// Access time.
    pub atime: Timestamp,
    /// Modification time.
    pub mtime: Timestamp,
    /// Status change (and creation) time.
    pub ctime: Timestamp,
    /// Regular files: bytes that follow on the bundle stream (in entry
    /// order). Zero for other kinds.
    pub size: u64,
    /// Symlink target.
    pub target: Option<String>,
}

/// An entry as the file server forwards it: with the hash of the replica it
/// stored (regular files with bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEntry {
    /// The entry.
    pub entry: BundleEntry,
    /// BLAKE3 of the stored replica (generation 1 on the forwarding server).
    pub hash: Option<Hash>,
}

/// What a file server forwards with [`crate::meta::MetaRequest::CommitBundle`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleCommit {
    /// The client's bundle capability.
    pub cap: SignedCapability,
    /// Entries, in order; every regular file with bytes is durable on the
    /// forwarding server.
    pub entries: Vec<StoredEntry>,
}

/// The result of one entry: the attributes as committed, or why not.
pub type EntryResult = Result<Attr, RemoteError>;

/// Disk space a file of `size` bytes takes on a file server, for
/// reservations: replica bytes (data, chunk table, footer) rounded up to
/// 4 KiB blocks, plus one block for the file system's own records.
pub fn stored_cost(size: u64) -> u64 {
    const CHUNK: u64 = 256 * 1024;
    let replica = size + size.div_ceil(CHUNK) * 32 + 64;
    replica.div_ceil(4096) * 4096 + 4096
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_costs() {
        let r = InoRange { first: 100, count: 10 };
        assert!(r.contains(100) && r.contains(109));
        assert!(!r.contains(99) && !r.contains(110));
        assert_eq!(stored_cost(0), 8192);
        assert_eq!(stored_cost(4000), 8192);
        assert_eq!(stored_cost(4096), 12288);
        assert!(stored_cost(1 << 20) >= (1 << 20) + 128 + 64);
    }
}
