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
use crate::meta::{MetaRequest, RenameFlags, SetAttr};
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// More directories to hold along with `dir` (a tree being walked:
    /// `rm -rf`, `chmod -R` take a lease per directory), each granted under
    /// the rules of `dir` or skipped, and answered with its listing so the
    /// walk asks nothing more. At most [`MAX_ALSO`] are considered, and
    /// listings of at most [`MAX_ALSO_ENTRIES`] entries in all.
    pub also: Vec<Ino>,
}

/// Most directories one lease request holds besides its own.
pub const MAX_ALSO: usize = 256;
/// Most entries the listings of a grant's other directories carry in all.
pub const MAX_ALSO_ENTRIES: usize = 20_000;

/// A directory granted along with a lease's own (see [`LeaseRequest::also`]):
/// its attributes and its whole listing, attributes included, true while
/// the lease is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlsoDir {
    /// The directory's attributes.
    pub attr: Attr,
    /// Every entry, with attributes and xattr names.
    pub entries: Vec<crate::types::DirEntry>,
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
    /// The other directories granted (a subset of [`LeaseRequest::also`]).
    pub also: Vec<AlsoDir>,
    /// What the caller's quota left when this was granted. A mount
    /// acknowledges creates and closes locally only within it (counting its
    /// uncommitted entries against it), so the meta server's refusal of
    /// what would pass a limit reaches the syscall as EDQUOT instead of
    /// an acknowledged entry being refused later.
    pub room: QuotaRoom,
}

/// What a user may still add before a limit (None: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaRoom {
    /// Files (inodes).
    pub files: Option<u64>,
    /// Bytes (every replica).
    pub bytes: Option<u64>,
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
    /// Owner to give the new inode (None: the principal); another than the
    /// principal's follows chown's rules (root only).
    pub uid: Option<u32>,
    /// Group to give it (None: the principal's, or the directory's when it
    /// is set-group-id); another follows chown's rules.
    pub gid: Option<u32>,
}

/// One operation of a bundle: what a mount did under its directory write
/// leases (write-back), applied at the meta server in order, each with the
/// same checks as the request it stands for, each succeeding or failing
/// alone. Every name an operation changes is in a directory the bundle's
/// principal leased; `ino` fields say what the holder saw a name name, and
/// an operation whose name names something else fails (`Stale`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BundleOp {
    /// A new name with a new inode (regular file, directory, symlink); a
    /// regular file's bytes follow on the bundle stream.
    Create(BundleEntry),
    /// Another name for an existing inode.
    Link {
        /// The inode.
        ino: Ino,
        /// Directory of the new name.
        parent: Ino,
        /// The new name.
        name: String,
    },
    /// Remove a name of a non-directory.
    Unlink {
        /// Directory.
        parent: Ino,
        /// Name.
        name: String,
        /// What it named.
        ino: Ino,
    },
    /// Remove an empty directory.
    Rmdir {
        /// Directory holding it.
        parent: Ino,
        /// Its name.
        name: String,
        /// Its inode.
        ino: Ino,
    },
    /// Move a name (replacing the target as rename(2) does).
    Rename {
        /// Source directory.
        parent: Ino,
        /// Source name.
        name: String,
        /// Target directory.
        new_parent: Ino,
        /// Target name.
        new_name: String,
        /// RENAME_NOREPLACE / RENAME_EXCHANGE.
        flags: RenameFlags,
        /// What the source named.
        ino: Ino,
    },
    /// Change attributes (mode, owner, times; no size: a size travels as a
    /// new generation).
    SetAttr {
        /// The inode.
        ino: Ino,
        /// The change.
        set: SetAttr,
    },
}

impl BundleOp {
    /// The request this operation stands for (the meta server checks and
    /// describes it as that request).
    pub fn as_request(&self) -> MetaRequest {
        match self {
            BundleOp::Create(e) => match e.kind {
                FileKind::Directory => MetaRequest::Mkdir { parent: e.parent, name: e.name.clone(), perm: e.perm },
                FileKind::Symlink => MetaRequest::Symlink {
                    parent: e.parent,
                    name: e.name.clone(),
                    target: e.target.clone().unwrap_or_default(),
                },
                kind => MetaRequest::Create {
                    parent: e.parent,
                    name: e.name.clone(),
                    kind,
                    perm: e.perm,
                    rdev: 0,
                    exclusive: true,
                },
            },
            BundleOp::Link { ino, parent, name } => {
                MetaRequest::Link { ino: *ino, new_parent: *parent, new_name: name.clone() }
            }
            BundleOp::Unlink { parent, name, .. } => MetaRequest::Unlink { parent: *parent, name: name.clone() },
            BundleOp::Rmdir { parent, name, .. } => MetaRequest::Rmdir { parent: *parent, name: name.clone() },
            BundleOp::Rename { parent, name, new_parent, new_name, flags, .. } => MetaRequest::Rename {
                parent: *parent,
                name: name.clone(),
                new_parent: *new_parent,
                new_name: new_name.clone(),
                flags: *flags,
            },
            BundleOp::SetAttr { ino, set } => MetaRequest::SetAttr { ino: *ino, set: set.clone() },
        }
    }

    /// Bytes that follow this operation on the bundle stream.
    pub fn data_len(&self) -> u64 {
        match self {
            BundleOp::Create(e) if e.kind == FileKind::Regular => e.size,
            _ => 0,
        }
    }

    /// The new inode a `Create` makes.
    pub fn created(&self) -> Option<Ino> {
        match self {
            BundleOp::Create(e) => Some(e.ino),
            _ => None,
        }
    }
}

/// An operation as the file server forwards it: with the hash of the
/// replica it stored (a `Create` of a regular file with bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredOp {
    /// The operation.
    pub op: BundleOp,
    /// BLAKE3 of the stored replica (generation 1 on the forwarding server).
    pub hash: Option<Hash>,
}

/// What a file server forwards with [`crate::meta::MetaRequest::CommitBundle`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleCommit {
    /// The client's bundle capability.
    pub cap: SignedCapability,
    /// Operations, in order; every regular file with bytes is durable on
    /// the forwarding server.
    pub ops: Vec<StoredOp>,
}

/// The result of one operation: the attributes of what it created or
/// changed (for a removal, of the directory), or why not.
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
