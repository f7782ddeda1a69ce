//! Plain data shared by several services: inode attributes, file kinds,
//! directory entries, host and replica descriptions.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Inode number. The root directory is [`ROOT_INO`].
pub type Ino = u64;
/// Generation of a file's contents; every completed write makes a new one.
pub type Gen = u64;
/// A BLAKE3 hash.
pub type Hash = [u8; 32];

/// Inode number of the namespace root.
pub const ROOT_INO: Ino = 1;

/// Longest name of one directory entry, in bytes.
pub const MAX_NAME: usize = 255;
/// Longest symlink target (PATH_MAX - 1): a target is only a string, its
/// components may be longer than a name.
pub const MAX_TARGET: usize = 4095;

/// What kind of object an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FileKind {
    /// A regular file whose bytes live in replicas on file servers.
    Regular,
    /// A directory.
    Directory,
    /// A symbolic link (target kept in metadata).
    Symlink,
    /// A named pipe (metadata only).
    Fifo,
    /// A unix socket (metadata only).
    Socket,
    /// A character device node (metadata only).
    CharDevice,
    /// A block device node (metadata only).
    BlockDevice,
}

impl FileKind {
    /// The `S_IFMT` bits of this kind.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileKind::Regular => 0o100000,
            FileKind::Directory => 0o040000,
            FileKind::Symlink => 0o120000,
            FileKind::Fifo => 0o010000,
            FileKind::Socket => 0o140000,
            FileKind::CharDevice => 0o020000,
            FileKind::BlockDevice => 0o060000,
        }
    }

    /// A one-letter tag as `ls -l` prints it.
    pub fn ls_char(self) -> char {
        match self {
            FileKind::Regular => '-',
            FileKind::Directory => 'd',
            FileKind::Symlink => 'l',
            FileKind::Fifo => 'p',
            FileKind::Socket => 's',
            FileKind::CharDevice => 'c',
            FileKind::BlockDevice => 'b',
        }
    }
}

/// A point in time: seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z (may be negative).
    pub secs: i64,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        Self::from_system(std::time::SystemTime::now())
    }

    /// Convert from a `SystemTime`.
    pub fn from_system(t: std::time::SystemTime) -> Self {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Timestamp { secs: d.as_secs() as i64, nanos: d.subsec_nanos() },
            Err(e) => {
                let d = e.duration();
                if d.subsec_nanos() == 0 {
                    Timestamp { secs: -(d.as_secs() as i64), nanos: 0 }
                } else {
                    Timestamp { secs: -(d.as_secs() as i64) - 1, nanos: 1_000_000_000 - d.subsec_nanos() }
                }
            }
        }
    }

    /// Convert to a `SystemTime`.
    pub fn to_system(self) -> std::time::SystemTime {
        let base = std::time::UNIX_EPOCH;
        if self.secs >= 0 {
            base + std::time::Duration::new(self.secs as u64, self.nanos)
        } else {
            base - std::time::Duration::from_secs((-self.secs) as u64)
                + std::time::Duration::from_nanos(self.nanos as u64)
        }
    }

    /// Milliseconds since the epoch (saturating at zero for earlier times).
    pub fn as_millis(self) -> u64 {
        if self.secs < 0 {
            0
        } else {
            self.secs as u64 * 1000 + (self.nanos / 1_000_000) as u64
        }
    }
}

/// Attributes of an inode, as the meta server reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attr {
    /// Inode number.
    pub ino: Ino,
    /// Object kind.
    pub kind: FileKind,
    /// Permission bits including setuid/setgid/sticky (no `S_IFMT`).
    pub perm: u32,
    /// Number of hard links (directories: 2 + subdirectories).
    pub nlink: u32,
    /// Owner (federation uid).
    pub uid: u32,
    /// Group (federation gid).
    pub gid: u32,
    /// Size in bytes (for symlinks, the target length).
    pub size: u64,
    /// Last access.
    pub atime: Timestamp,
    /// Last content modification.
    pub mtime: Timestamp,
    /// Last status change.
    pub ctime: Timestamp,
    /// Creation time.
    pub crtime: Timestamp,
    /// Device number for device nodes.
    pub rdev: u32,
    /// Current generation of the contents (regular files).
    pub gen: Gen,
    /// BLAKE3 of the current contents, when the file has any replica.
    pub hash: Option<Hash>,
    /// Wanted number of replicas (0 = federation default).
    pub ncopy: u32,
}

impl Attr {
    /// Attributes of a new `kind` inode with `perm`: one link, owner and
    /// group 0, empty, times at the epoch, generation 0, no contents yet.
    pub fn new(ino: Ino, kind: FileKind, perm: u32) -> Attr {
        let t = Timestamp::default();
        Attr {
            ino,
            kind,
            perm,
            nlink: 1,
            uid: 0,
            gid: 0,
            size: 0,
            atime: t,
            mtime: t,
            ctime: t,
            crtime: t,
            rdev: 0,
            gen: 0,
            hash: None,
            ncopy: 0,
        }
    }

    /// `st_mode`: kind bits plus permission bits.
    pub fn mode(&self) -> u32 {
        self.kind.mode_bits() | (self.perm & 0o7777)
    }
}

/// One directory entry, optionally with the child's attributes (readdir-plus).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    /// Entry name (one path component).
    pub name: String,
    /// Child inode.
    pub ino: Ino,
    /// Child kind.
    pub kind: FileKind,
    /// Child attributes when requested.
    pub attr: Option<Attr>,
    /// With the attributes: the names of the child's extended attributes,
    /// so a caching client answers xattr probes (`ls -l` asks every entry
    /// for `security.selinux`) without a round trip per entry.
    pub xattrs: Option<Vec<String>>,
}

/// Where a file server can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServerLoc {
    /// Host name (the certificate's name; also the TLS server name).
    pub host: String,
    /// Site the host belongs to.
    pub site: String,
    /// UDP address of its QUIC endpoint.
    pub addr: SocketAddr,
}

/// A host as the registry knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostInfo {
    /// Host name.
    pub host: String,
    /// Site.
    pub site: String,
    /// Advertised address.
    pub addr: SocketAddr,
    /// Spool capacity in bytes.
    pub capacity: u64,
    /// Free bytes in the spool.
    pub free: u64,
    /// One-minute load average.
    pub load: f32,
    /// Last heartbeat, milliseconds since the epoch.
    pub last_heartbeat_ms: u64,
    /// Whether the meta server considers it alive (heartbeat within the bound).
    pub alive: bool,
    /// Number of replicas held.
    pub replicas: u64,
    /// Problems the host reported about itself (e.g. spool not writable).
    pub problems: Vec<String>,
    /// Bytes the host received from the network since it started.
    pub bytes_in: u64,
    /// Bytes the host sent since it started.
    pub bytes_out: u64,
    /// Being drained (`renkei host drain`): gets no new data, and its
    /// replicas are being moved to other servers.
    pub draining: bool,
}

/// One replica of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaInfo {
    /// Where it is.
    pub server: ServerLoc,
    /// Generation it holds.
    pub gen: Gen,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the bytes.
    pub hash: Hash,
    /// Whether its host is currently alive.
    pub alive: bool,
}

/// Credentials a privileged (admin) client may assert for the local user on
/// whose behalf it acts, e.g. a FUSE mount shared by several local users. The
/// meta server ignores them for every other identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cred {
    /// User id to act as.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// Render a hash as lowercase hex.
pub fn hash_hex(h: &Hash) -> String {
    blake3::Hash::from_bytes(*h).to_hex().to_string()
}
