//! What the meta server stores, and how each value is versioned on disk.
//!
//! Every value in sled starts with a one-byte [`VERSION_MARKER`] followed by
//! postcard. A layout change adds `mod v2`, a `From<v1::X> for v2::X`, and
//! switches `pub use`; [`decode`] upgrades old values as it reads them.

use fs_proto::{Attr, FileKind, Gen, Hash, Ino, Timestamp};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Layout version written in front of every stored value.
pub const VERSION_MARKER: u8 = 1;

/// First on-disk layout.
pub mod v1 {
    use super::*;

    /// An inode.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct InodeRecord {
        /// Kind.
        pub kind: FileKind,
        /// Permission bits.
        pub perm: u32,
        /// Owner.
        pub uid: u32,
        /// Group.
        pub gid: u32,
        /// Link count.
        pub nlink: u32,
        /// Size.
        pub size: u64,
        /// Access time.
        pub atime: Timestamp,
        /// Modification time.
        pub mtime: Timestamp,
        /// Status change time.
        pub ctime: Timestamp,
        /// Creation time.
        pub crtime: Timestamp,
        /// Device number.
        pub rdev: u32,
        /// Current generation (0: never written).
        pub gen: Gen,
        /// Highest generation handed out to a writer.
        pub next_gen: Gen,
        /// BLAKE3 of the current generation's bytes (None when empty).
        pub hash: Option<Hash>,
        /// Symlink target.
        pub target: Option<String>,
        /// Wanted replica count (0: default).
        pub ncopy: u32,
        /// Parent directory (directories only; files may have many names).
        pub parent: Ino,
    }

    /// A directory entry.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    pub struct DentryRecord {
        /// Child.
        pub ino: Ino,
        /// Child kind (so readdir needs no inode reads).
        pub kind: FileKind,
    }

    /// One replica of one file on one host.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct ReplicaRecord {
        /// Generation held.
        pub gen: Gen,
        /// Size.
        pub size: u64,
        /// BLAKE3.
        pub hash: Hash,
        /// Failed verification: never hand it out.
        pub bad: bool,
        /// When it was registered (ms since the epoch).
        pub registered_ms: u64,
    }

    /// A replica the host must delete.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct GcRecord {
        /// When it became garbage (ms since the epoch).
        pub since_ms: u64,
    }

    /// A file server.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct HostRecord {
        /// Site.
        pub site: String,
        /// Address clients dial.
        pub addr: SocketAddr,
        /// Capacity.
        pub capacity: u64,
        /// Free bytes.
        pub free: u64,
        /// Load average.
        pub load: f32,
        /// Last heartbeat (ms since the epoch).
        pub last_heartbeat_ms: u64,
        /// Self-reported problems.
        pub problems: Vec<String>,
        /// Bytes received.
        pub bytes_in: u64,
        /// Bytes sent.
        pub bytes_out: u64,
    }

    /// Inode numbers leased to a principal for bundles; the allocator has
    /// moved past them.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct InoLeaseRecord {
        /// How many, from the key's first number.
        pub count: u64,
        /// Certificate name of the principal.
        pub principal: String,
        /// When they were leased (ms since the epoch).
        pub granted_ms: u64,
    }

    /// A federation user.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct UserRecord {
        /// uid.
        pub uid: u32,
        /// Primary gid.
        pub gid: u32,
        /// Supplementary groups.
        pub groups: Vec<u32>,
        /// May assert other credentials (root-equivalent).
        pub admin: bool,
    }

    /// A named group.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct GroupRecord {
        /// gid.
        pub gid: u32,
    }

    /// A user an admin removed: refused until added again; their ids are
    /// never given to a new user (their files keep them).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct RemovedUserRecord {
        /// The uid they had.
        pub uid: u32,
        /// The primary gid they had.
        pub gid: u32,
        /// When (ms since the epoch).
        pub since_ms: u64,
    }

    /// A host being drained.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct DrainRecord {
        /// Since when (ms since the epoch).
        pub since_ms: u64,
    }

    /// What one uid holds (see [`crate::quota`]).
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct UsageRecord {
        /// Inodes owned.
        pub files: u64,
        /// Bytes of every replica of the files owned.
        pub bytes: u64,
        /// Since when files have been above the soft limit (ms).
        pub files_over_since_ms: Option<u64>,
        /// Since when bytes have been above the soft limit (ms).
        pub bytes_over_since_ms: Option<u64>,
    }
}

pub use v1::*;

impl InodeRecord {
    /// Attributes for the wire.
    pub fn attr(&self, ino: Ino) -> Attr {
        Attr {
            ino,
            kind: self.kind,
            perm: self.perm,
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            size: self.size,
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            crtime: self.crtime,
            rdev: self.rdev,
            gen: self.gen,
            hash: self.hash,
            ncopy: self.ncopy,
        }
    }
}

/// Error reading a stored value.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Written by a newer (or unknown) layout.
    #[error("stored value has layout version {0}, this build reads {VERSION_MARKER}")]
    Version(u8),
    /// Empty value.
    #[error("stored value is empty")]
    Empty,
    /// Undecodable.
    #[error("stored value does not decode: {0}")]
    Decode(#[from] postcard::Error),
}

/// Encode a value with the version marker.
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_extend(v, vec![VERSION_MARKER]).expect("postcard encode into Vec")
}

/// Decode a value written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RecordError> {
    match bytes.split_first() {
        None => Err(RecordError::Empty),
        Some((&VERSION_MARKER, rest)) => Ok(postcard::from_bytes(rest)?),
        Some((&v, _)) => Err(RecordError::Version(v)),
    }
}
