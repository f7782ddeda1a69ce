//! The metadata service: requests a client, file server or agent sends to
//! `renkei-meta`, and its responses.
//!
//! One request per QUIC bidirectional stream: the caller writes one
//! [`MetaCall`] frame and finishes its side; the meta server answers with one
//! [`MetaReply`] frame. Identity comes from the TLS certificate, never from
//! the request.

use crate::admin::{AdminRequest, GroupInfo, UserInfo};
use crate::bundle::{BundleCommit, EntryResult, LeaseGrant, LeaseRequest};
use crate::capability::SignedCapability;
use crate::error::RemoteError;
use crate::monitor::{MonitorRequest, MonitorResponse};
use crate::replication::{CheckPlan, ReplicationPlan, ReplicationQuery, ReplicationStatus};
use crate::types::{Attr, Cred, DirEntry, FileKind, Gen, Hash, HostInfo, Ino, ReplicaInfo, ServerLoc, Timestamp};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Most entries a [`MetaRequest::ReadDir`] page may hold.
pub const READDIR_MAX_ENTRIES: u32 = 100_000;
/// Encoded bytes of entries after which a [`MetaRequest::ReadDir`] page
/// ends (a quarter of [`crate::version::MAX_FRAME`]: an estimate per entry
/// decides, so the real frame stays well below the limit).
pub const READDIR_PAGE_BYTES: usize = crate::version::MAX_FRAME / 4;

/// Entries per page of a [`MetaRequest::ListDir`] stream: small enough
/// that the first page leaves the meta server within a couple of
/// milliseconds, large enough to compress well.
pub const LISTDIR_PAGE: u32 = 1_000;

/// Most requests one [`MetaRequest::Batch`] may hold; a longer batch is a
/// protocol violation, refused while it is decoded. Clients split their
/// batches at this size (the mount's attribute batches use all of it).
pub const MAX_BATCH: usize = 4096;

fn batch_of<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<MetaRequest>, D::Error> {
    crate::bounded::seq(d, MAX_BATCH, "a batch")
}

/// Take one page of a [`MetaRequest::ListDir`] stream into `out`; whether
/// more pages follow. Anything but `Entries` is refused.
pub fn listing_page(page: MetaResponse, out: &mut Vec<DirEntry>) -> Result<bool, crate::rpc::CallError> {
    match page {
        MetaResponse::Entries { entries, more } => {
            out.extend(entries);
            Ok(more)
        }
        other => Err(crate::rpc::CallError::Remote(crate::RemoteError::new(
            crate::ErrorCode::Internal,
            format!("a listing page was {}", format!("{other:?}").chars().take(80).collect::<String>()),
        ))),
    }
}

/// The frame a caller sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetaCall {
    /// Credentials to act as; honoured only for admin identities (e.g. a
    /// mount serving several local users), ignored otherwise.
    pub cred: Option<Cred>,
    /// The request.
    pub req: MetaRequest,
}

/// The frame the meta server answers with.
pub type MetaReply = Result<MetaResponse, RemoteError>;

/// How to set a timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeSet {
    /// The meta server's current time.
    Now,
    /// A given time.
    At(Timestamp),
}

/// Attribute changes; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetAttr {
    /// New permission bits.
    pub perm: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New size: only 0 (truncate) or the current size are accepted here;
    /// other sizes are written through a file server as a new generation.
    pub size: Option<u64>,
    /// New access time.
    pub atime: Option<TimeSet>,
    /// New modification time.
    pub mtime: Option<TimeSet>,
    /// A write or truncation by someone without CAP_FSETID: clear the
    /// file's set-user-id bit, and its set-group-id bit when it is group
    /// executable, as a local file system does (the mount's kernel leaves
    /// this to the file system). Needs only write permission on the file.
    pub kill_priv: bool,
}

/// Flags of a rename.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenameFlags {
    /// Fail with `Exists` if the target exists.
    pub noreplace: bool,
    /// Swap source and target atomically (both must exist).
    pub exchange: bool,
}

/// Flags of an xattr set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XattrFlags {
    /// Fail if the attribute exists.
    pub create: bool,
    /// Fail if the attribute does not exist.
    pub replace: bool,
}

/// What a file server reports every heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatReport {
    /// Address clients should dial.
    pub addr: SocketAddr,
    /// Spool capacity in bytes.
    pub capacity: u64,
    /// Free bytes.
    pub free: u64,
    /// One-minute load average.
    pub load: f32,
    /// Replicas removed since the last heartbeat (acknowledging deletions).
    pub deleted: Vec<(Ino, Gen)>,
    /// Problems the server found with itself, for operators.
    pub problems: Vec<String>,
    /// Bytes received from the network since start.
    pub bytes_in: u64,
    /// Bytes sent since start.
    pub bytes_out: u64,
    /// The stamp up to which this server has the meta server's capability
    /// voidings ([`crate::capability::CapVoids::upto`]; 0 at start).
    pub voids_seen: u64,
}

/// Totals over the live file servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatFs {
    /// Sum of capacities.
    pub capacity: u64,
    /// Sum of free space.
    pub free: u64,
    /// Number of inodes in use.
    pub files: u64,
    /// Live servers.
    pub servers: u32,
}

/// Permission to read a file's current generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadGrant {
    /// Attributes (size, generation, hash).
    pub attr: Attr,
    /// Live, good replicas of the current generation.
    pub replicas: Vec<ServerLoc>,
    /// Read capability for the caller; None when the file is empty.
    pub cap: Option<SignedCapability>,
}

/// Permission to write a new generation of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteGrant {
    /// Attributes before the write.
    pub attr: Attr,
    /// The generation the write will create.
    pub gen: Gen,
    /// File server to send the bytes to (at the caller's site when possible).
    pub target: ServerLoc,
    /// Write capability for the caller.
    pub cap: SignedCapability,
    /// When the file has contents: the current generation as a base the
    /// target server may copy from, with a read capability issued to the
    /// target server and the replicas that hold it.
    pub base: Option<BaseGrant>,
}

/// Where the bytes of a base generation can be fetched, and the permission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseGrant {
    /// Generation.
    pub gen: Gen,
    /// Read capability whose principal is the target server.
    pub cap: SignedCapability,
    /// Replicas holding it.
    pub replicas: Vec<ServerLoc>,
}

/// The requests of the metadata service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetaRequest {
    /// Who am I (identity, uid, gid, groups, admin).
    WhoAmI,
    /// Look up one name in a directory.
    Lookup {
        /// Directory.
        parent: Ino,
        /// Name.
        name: String,
    },
    /// Like [`MetaRequest::Lookup`], answered with [`MetaResponse::Entry`]:
    /// the attributes and the names of the inode's extended attributes, so a
    /// caching client answers the xattr probes that follow a lookup (`ls -l
    /// DIR` asks DIR for `security.selinux` before listing it) locally.
    LookupPlus {
        /// Directory.
        parent: Ino,
        /// Name.
        name: String,
    },
    /// Attributes of an inode.
    GetAttr {
        /// Inode.
        ino: Ino,
    },
    /// Resolve an absolute path in one round trip (no symlinks followed).
    Resolve {
        /// `/a/b/c`.
        path: String,
    },
    /// A page of directory entries after `after`, optionally with attributes
    /// (and xattr names). A page ends at `limit` entries or at
    /// [`READDIR_PAGE_BYTES`] of entries, whichever comes first, so one
    /// exchange lists tens of thousands of entries and never outgrows a frame.
    ReadDir {
        /// Directory.
        ino: Ino,
        /// Resume after this name (None: from the start).
        after: Option<String>,
        /// Maximum entries in this page.
        limit: u32,
        /// Include each child's attributes (readdir-plus).
        plus: bool,
    },
    /// Every entry of a directory, answered as a stream of `Entries`
    /// frames (pages of up to [`LISTDIR_PAGE`] entries; the last has
    /// `more: false`, an error ends the stream), each built and leased like
    /// a [`MetaRequest::ReadDir`] page. The meta server sends the first page
    /// while it still reads the rest and the client decodes pages as they
    /// arrive, so a large listing costs one round trip plus its bytes on
    /// the wire. Not allowed inside a [`MetaRequest::Batch`].
    ListDir {
        /// Directory.
        ino: Ino,
        /// Include each child's attributes (readdir-plus).
        plus: bool,
    },
    /// Target of a symlink.
    ReadLink {
        /// Inode.
        ino: Ino,
    },
    /// Create a non-directory node (regular file, fifo, socket, device).
    Create {
        /// Directory.
        parent: Ino,
        /// Name.
        name: String,
        /// Kind (not Directory or Symlink).
        kind: FileKind,
        /// Permission bits (umask already applied).
        perm: u32,
        /// Device number for device nodes.
        rdev: u32,
        /// Fail with `Exists` if the name exists; otherwise return it.
        exclusive: bool,
    },
    /// Create a directory.
    Mkdir {
        /// Parent.
        parent: Ino,
        /// Name.
        name: String,
        /// Permission bits.
        perm: u32,
    },
    /// Create a symlink.
    Symlink {
        /// Directory.
        parent: Ino,
        /// Name.
        name: String,
        /// Target path (stored verbatim).
        target: String,
    },
    /// Create a hard link.
    Link {
        /// Existing inode.
        ino: Ino,
        /// Directory of the new name.
        new_parent: Ino,
        /// New name.
        new_name: String,
    },
    /// Remove a non-directory name.
    Unlink {
        /// Directory.
        parent: Ino,
        /// Name.
        name: String,
    },
    /// Remove an empty directory.
    Rmdir {
        /// Parent.
        parent: Ino,
        /// Name.
        name: String,
    },
    /// Rename (atomically).
    Rename {
        /// Source directory.
        parent: Ino,
        /// Source name.
        name: String,
        /// Target directory.
        new_parent: Ino,
        /// Target name.
        new_name: String,
        /// Flags.
        flags: RenameFlags,
    },
    /// Change attributes.
    SetAttr {
        /// Inode.
        ino: Ino,
        /// Changes.
        set: SetAttr,
    },
    /// Read an extended attribute.
    GetXattr {
        /// Inode.
        ino: Ino,
        /// Name (e.g. `user.comment`).
        name: String,
    },
    /// Set an extended attribute.
    SetXattr {
        /// Inode.
        ino: Ino,
        /// Name.
        name: String,
        /// Value.
        value: Vec<u8>,
        /// Create/replace flags.
        flags: XattrFlags,
    },
    /// List extended attribute names.
    ListXattr {
        /// Inode.
        ino: Ino,
    },
    /// Remove an extended attribute.
    RemoveXattr {
        /// Inode.
        ino: Ino,
        /// Name.
        name: String,
    },
    /// Open the current generation for reading.
    OpenRead {
        /// Inode.
        ino: Ino,
    },
    /// Open for writing a new generation, on a server at `site` if possible.
    OpenWrite {
        /// Inode.
        ino: Ino,
        /// The caller's site.
        site: String,
    },
    /// Replicas of a file and their hosts.
    Where {
        /// Inode.
        ino: Ino,
    },
    /// Set the wanted copy count of a file or directory (inherited by new
    /// files in a directory).
    SetNcopy {
        /// Inode.
        ino: Ino,
        /// Copies (0 = federation default).
        ncopy: u32,
    },
    /// Capacity and usage totals.
    StatFs,
    /// The host registry.
    ListHosts,
    /// File server: periodic report; the answer lists replicas to delete.
    Heartbeat(HeartbeatReport),
    /// File server: a replica is complete, fsynced and verified.
    RegisterReplica {
        /// The write capability the client presented.
        cap: SignedCapability,
        /// Bytes stored.
        size: u64,
        /// Their BLAKE3.
        hash: Hash,
    },
    /// File server: a replica failed verification; stop handing it out.
    ReportBadReplica {
        /// Inode.
        ino: Ino,
        /// Generation.
        gen: Gen,
        /// What was wrong.
        reason: String,
    },
    /// File server at start: the replicas in its spool (paged). The answer
    /// lists those the meta server does not know (to delete); after the last
    /// page (`done`), registrations of this host that were not listed are
    /// dropped.
    Inventory {
        /// `(ino, gen)` of replicas on disk.
        replicas: Vec<(Ino, Gen)>,
        /// This is the last page.
        done: bool,
    },
    /// Several requests in one round trip, executed in order; each gets its
    /// own result. At most [`MAX_BATCH`] requests.
    Batch(#[serde(deserialize_with = "batch_of")] Vec<MetaRequest>),
    /// Plan copies (for `renkei rep` or `fsck --repair`): which file goes
    /// to which host from where, with capabilities for the destinations.
    /// Needs read permission on every file.
    PlanReplication(ReplicationQuery),
    /// Plan a check: which host verifies which replica, with read
    /// capabilities for the caller. Needs read permission on every file.
    PlanCheck {
        /// Files.
        inos: Vec<Ino>,
    },
    /// State and backlog of the background replication worker.
    ReplicationStatus,
    /// Open a callback subscription for this connection: the stream stays
    /// open and carries [`crate::callback::CallbackFrame`]s instead of one
    /// reply (see [`crate::callback`]).
    Subscribe,
    /// Monitoring: check reports, VM reports, netcheck, the status page's
    /// data (see [`crate::monitor`]).
    Monitor(MonitorRequest),
    /// A write lease on a directory, leased inode numbers and a bundle
    /// capability (see [`crate::bundle`]); not batchable.
    LeaseDir(LeaseRequest),
    /// Give back write leases on directories (after a recall, or when done).
    ReleaseDirs {
        /// The directories.
        dirs: Vec<Ino>,
    },
    /// File server: a bundle of new entries whose bytes it stored; create
    /// them all in one transaction (see [`crate::bundle`]).
    CommitBundle(BundleCommit),
    /// Take, change or give back a POSIX byte-range lock (see
    /// [`LockRequest`]); answered `Done`, or [`MetaResponse::LockHeld`] when
    /// a conflicting lock stands and `wait` is false, or
    /// [`MetaResponse::LockWaiting`] when `wait` is true and the lock did not
    /// come free within [`LOCK_WAIT_MS`] (ask again). Needs the caller's
    /// callback session: its locks end with it. Not batchable.
    Lock(LockRequest),
    /// Which lock would stand in the way of this one (`F_GETLK`): answered
    /// [`MetaResponse::LockHeld`] (None: nothing would).
    TestLock(LockRequest),
    /// Quota usage and limits: the caller's own (`user` None), another
    /// user's (admins only), or every user's with a quota or usage (`all`,
    /// admins only). Answered [`MetaResponse::Quota`].
    GetQuota {
        /// A user name; None: the caller.
        user: Option<String>,
        /// Every user (admins only).
        all: bool,
    },
    /// Set a user's limits (admins only); answered [`MetaResponse::Quota`]
    /// with the user's report.
    SetQuota {
        /// The user name.
        user: String,
        /// The new limits (all zero: no quota).
        limits: QuotaLimits,
    },
    /// Drop one replica of a file (`renkei rm --replica HOST PATH`, like
    /// `gfrm -h`): the file's owner or an admin; refused when no other good
    /// replica of the current generation is on a live server. The server
    /// deletes the file after the GC grace. Answered
    /// [`MetaResponse::Replicas`] with what is left.
    DropReplica {
        /// The file.
        ino: Ino,
        /// The host whose replica to drop.
        host: String,
    },
    /// Site administration: users, groups, hosts (admins only; see
    /// [`crate::admin`]).
    Admin(AdminRequest),
}

/// A user's quota limits (see the README's security model). Usage counts
/// every inode the user owns as one file and every replica of their files
/// as its size (a file with two replicas counts twice, as Gfarm's physical
/// quota does). Zero means no limit. Above a soft limit the user may keep
/// adding for `grace_s` seconds; a hard limit is never passed by a request
/// that adds, except by what a writing-back mount already holds (see
/// `fs_meta::quota`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaLimits {
    /// Files (inodes) soft limit.
    pub files_soft: u64,
    /// Files (inodes) hard limit.
    pub files_hard: u64,
    /// Bytes (all replicas) soft limit.
    pub bytes_soft: u64,
    /// Bytes (all replicas) hard limit.
    pub bytes_hard: u64,
    /// How long usage may stay above a soft limit, in seconds (0: the
    /// default of 7 days).
    pub grace_s: u64,
}

/// Default grace period above a soft limit.
pub const QUOTA_DEFAULT_GRACE_S: u64 = 7 * 24 * 3600;

impl QuotaLimits {
    /// Whether any limit is set.
    pub fn is_set(&self) -> bool {
        self.files_soft | self.files_hard | self.bytes_soft | self.bytes_hard != 0
    }

    /// The grace period in effect, in seconds.
    pub fn grace(&self) -> u64 {
        if self.grace_s == 0 {
            QUOTA_DEFAULT_GRACE_S
        } else {
            self.grace_s
        }
    }
}

/// One user's quota: usage, limits, and since when usage is above a soft
/// limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaReport {
    /// User name (empty when the uid has no registered name).
    pub user: String,
    /// uid.
    pub uid: u32,
    /// Inodes owned.
    pub files: u64,
    /// Bytes of every replica of the user's files.
    pub bytes: u64,
    /// Limits (all zero: none).
    pub limits: QuotaLimits,
    /// Since when (ms since the epoch) files have been above the soft limit.
    pub files_over_since_ms: Option<u64>,
    /// Since when (ms since the epoch) bytes have been above the soft limit.
    pub bytes_over_since_ms: Option<u64>,
}

/// How long the meta server holds a waiting lock request before answering
/// [`MetaResponse::LockWaiting`] (below every client's call timeout).
pub const LOCK_WAIT_MS: u64 = 2_000;

/// Kinds of lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockKind {
    /// Shared (`F_RDLCK`).
    Read,
    /// Exclusive (`F_WRLCK`).
    Write,
    /// Give back (`F_UNLCK`).
    Unlock,
}

/// One lock operation on a byte range of a file, by one lock owner of the
/// caller's session (a process's lock table, an open file description, or
/// a `flock`ed file: the kernel says which). `flock` locks arrive as locks
/// of the whole file, as NFS does them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRequest {
    /// The file.
    pub ino: Ino,
    /// Lock owner, within the caller's session.
    pub owner: u64,
    /// What to do.
    pub kind: LockKind,
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive; `u64::MAX`: to the end, however far).
    pub end: u64,
    /// The process asking (reported to `F_GETLK` callers elsewhere).
    pub pid: u32,
    /// Wait for a conflicting lock to go (`F_SETLKW`).
    pub wait: bool,
}

/// A lock that stands in the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    /// Read or write.
    pub kind: LockKind,
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive).
    pub end: u64,
    /// The holding process, as its mount reported it (a pid on another
    /// machine means nothing here but is what POSIX asks for).
    pub pid: u32,
}

impl MetaRequest {
    /// A stable name per variant, for request counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            MetaRequest::WhoAmI => "whoami",
            MetaRequest::Lookup { .. } => "lookup",
            MetaRequest::LookupPlus { .. } => "lookup",
            MetaRequest::GetAttr { .. } => "getattr",
            MetaRequest::Resolve { .. } => "resolve",
            MetaRequest::ReadDir { .. } => "readdir",
            MetaRequest::ListDir { .. } => "listdir",
            MetaRequest::ReadLink { .. } => "readlink",
            MetaRequest::Create { .. } => "create",
            MetaRequest::Mkdir { .. } => "mkdir",
            MetaRequest::Symlink { .. } => "symlink",
            MetaRequest::Link { .. } => "link",
            MetaRequest::Unlink { .. } => "unlink",
            MetaRequest::Rmdir { .. } => "rmdir",
            MetaRequest::Rename { .. } => "rename",
            MetaRequest::SetAttr { .. } => "setattr",
            MetaRequest::GetXattr { .. } => "getxattr",
            MetaRequest::SetXattr { .. } => "setxattr",
            MetaRequest::ListXattr { .. } => "listxattr",
            MetaRequest::RemoveXattr { .. } => "removexattr",
            MetaRequest::OpenRead { .. } => "open_read",
            MetaRequest::OpenWrite { .. } => "open_write",
            MetaRequest::Where { .. } => "where",
            MetaRequest::SetNcopy { .. } => "set_ncopy",
            MetaRequest::StatFs => "statfs",
            MetaRequest::ListHosts => "list_hosts",
            MetaRequest::Heartbeat(_) => "heartbeat",
            MetaRequest::RegisterReplica { .. } => "register_replica",
            MetaRequest::ReportBadReplica { .. } => "report_bad_replica",
            MetaRequest::Inventory { .. } => "inventory",
            MetaRequest::Batch(_) => "batch",
            MetaRequest::PlanReplication(_) => "plan_replication",
            MetaRequest::PlanCheck { .. } => "plan_check",
            MetaRequest::ReplicationStatus => "replication_status",
            MetaRequest::Subscribe => "subscribe",
            MetaRequest::Monitor(m) => m.kind(),
            MetaRequest::LeaseDir(_) => "lease_dir",
            MetaRequest::ReleaseDirs { .. } => "release_dirs",
            MetaRequest::CommitBundle(_) => "commit_bundle",
            MetaRequest::Lock(_) => "lock",
            MetaRequest::TestLock(_) => "test_lock",
            MetaRequest::GetQuota { .. } => "get_quota",
            MetaRequest::SetQuota { .. } => "set_quota",
            MetaRequest::DropReplica { .. } => "drop_replica",
            MetaRequest::Admin(a) => a.kind(),
        }
    }

    /// Every existing inode a request names by number (not the new ones it
    /// creates), so the meta server can apply the inode-number rule in one
    /// place: a user may address an inode by number only if it could reach
    /// it by path (search permission on every directory above it). Requests
    /// reserved to hosts name none here; their role is checked instead.
    /// Exhaustive on purpose: a new variant must say what it names.
    pub fn named_inos(&self) -> Vec<Ino> {
        use MetaRequest as Q;
        match self {
            Q::WhoAmI
            | Q::Resolve { .. }
            | Q::StatFs
            | Q::ListHosts
            | Q::ReplicationStatus
            | Q::Subscribe
            | Q::Monitor(_)
            | Q::Heartbeat(_)
            | Q::RegisterReplica { .. }
            | Q::ReportBadReplica { .. }
            | Q::Inventory { .. }
            | Q::GetQuota { .. }
            | Q::SetQuota { .. }
            | Q::Admin(_)
            | Q::ReleaseDirs { .. } => Vec::new(),
            Q::Lookup { parent, .. }
            | Q::LookupPlus { parent, .. }
            | Q::Create { parent, .. }
            | Q::Mkdir { parent, .. }
            | Q::Symlink { parent, .. }
            | Q::Unlink { parent, .. }
            | Q::Rmdir { parent, .. } => vec![*parent],
            Q::Lock(l) | Q::TestLock(l) => vec![l.ino],
            Q::GetAttr { ino }
            | Q::ReadDir { ino, .. }
            | Q::ListDir { ino, .. }
            | Q::ReadLink { ino }
            | Q::SetAttr { ino, .. }
            | Q::GetXattr { ino, .. }
            | Q::SetXattr { ino, .. }
            | Q::ListXattr { ino }
            | Q::RemoveXattr { ino, .. }
            | Q::OpenRead { ino }
            | Q::OpenWrite { ino, .. }
            | Q::Where { ino }
            | Q::SetNcopy { ino, .. }
            | Q::DropReplica { ino, .. } => vec![*ino],
            Q::Link { ino, new_parent, .. } => vec![*ino, *new_parent],
            Q::Rename { parent, new_parent, .. } => vec![*parent, *new_parent],
            Q::Batch(reqs) => reqs.iter().flat_map(MetaRequest::named_inos).collect(),
            Q::PlanReplication(q) => q.inos.clone(),
            Q::PlanCheck { inos } => inos.clone(),
            Q::LeaseDir(r) => r.dir.into_iter().collect(),
            Q::CommitBundle(b) => {
                // Inodes the bundle itself creates are reached through their
                // parents.
                let new: std::collections::HashSet<Ino> = b.ops.iter().filter_map(|o| o.op.created()).collect();
                let mut v: Vec<Ino> =
                    b.ops.iter().flat_map(|o| o.op.as_request().named_inos()).filter(|i| !new.contains(i)).collect();
                v.sort_unstable();
                v.dedup();
                v
            }
        }
    }

    /// Whether only an admin (a user the meta server marks admin, or a host
    /// `admin_hosts` lists) may make the request: the one list the meta
    /// server checks, before anything else, in one place. Exhaustive on
    /// purpose: a new variant must say.
    pub fn admin_only(&self) -> bool {
        use MetaRequest as Q;
        match self {
            Q::SetQuota { .. } => true,
            Q::Admin(a) => a.admin_only(),
            Q::Batch(reqs) => reqs.iter().any(MetaRequest::admin_only),
            Q::WhoAmI
            | Q::Lookup { .. }
            | Q::LookupPlus { .. }
            | Q::GetAttr { .. }
            | Q::Resolve { .. }
            | Q::ReadDir { .. }
            | Q::ListDir { .. }
            | Q::ReadLink { .. }
            | Q::Create { .. }
            | Q::Mkdir { .. }
            | Q::Symlink { .. }
            | Q::Link { .. }
            | Q::Unlink { .. }
            | Q::Rmdir { .. }
            | Q::Rename { .. }
            | Q::SetAttr { .. }
            | Q::GetXattr { .. }
            | Q::SetXattr { .. }
            | Q::ListXattr { .. }
            | Q::RemoveXattr { .. }
            | Q::OpenRead { .. }
            | Q::OpenWrite { .. }
            | Q::Where { .. }
            | Q::SetNcopy { .. }
            | Q::StatFs
            | Q::ListHosts
            | Q::Heartbeat(_)
            | Q::RegisterReplica { .. }
            | Q::ReportBadReplica { .. }
            | Q::Inventory { .. }
            | Q::PlanReplication(_)
            | Q::PlanCheck { .. }
            | Q::ReplicationStatus
            | Q::Subscribe
            | Q::Monitor(_)
            | Q::LeaseDir(_)
            | Q::ReleaseDirs { .. }
            | Q::CommitBundle(_)
            | Q::Lock(_)
            | Q::TestLock(_)
            | Q::GetQuota { .. }
            | Q::DropReplica { .. } => false,
        }
    }

    /// Whether the request changes persistent state (and so must be durable
    /// before it is acknowledged).
    pub fn is_mutation(&self) -> bool {
        if let MetaRequest::Batch(reqs) = self {
            // A batch of reads is a read: it takes no write ordering and
            // may be sent again.
            return reqs.iter().any(MetaRequest::is_mutation);
        }
        if let MetaRequest::Admin(a) = self {
            return a.is_mutation();
        }
        !matches!(
            self,
            MetaRequest::WhoAmI
                | MetaRequest::Lookup { .. }
                | MetaRequest::LookupPlus { .. }
                | MetaRequest::GetAttr { .. }
                | MetaRequest::Resolve { .. }
                | MetaRequest::ReadDir { .. }
                | MetaRequest::ListDir { .. }
                | MetaRequest::ReadLink { .. }
                | MetaRequest::GetXattr { .. }
                | MetaRequest::ListXattr { .. }
                | MetaRequest::OpenRead { .. }
                | MetaRequest::Where { .. }
                | MetaRequest::StatFs
                | MetaRequest::ListHosts
                | MetaRequest::PlanReplication(_)
                | MetaRequest::PlanCheck { .. }
                | MetaRequest::ReplicationStatus
                | MetaRequest::Subscribe
                | MetaRequest::Monitor(_)
                | MetaRequest::ReleaseDirs { .. }
                | MetaRequest::TestLock(_)
                | MetaRequest::GetQuota { .. }
        )
    }
}

/// Who the caller is, as the meta server sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    /// Federation user or host name.
    pub name: String,
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// May act as other uids (root-equivalent in the namespace).
    pub admin: bool,
}

/// The responses of the metadata service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetaResponse {
    /// Success with nothing to return.
    Done,
    /// The lock in the way of a [`MetaRequest::Lock`] or
    /// [`MetaRequest::TestLock`] (None: none).
    LockHeld(Option<LockInfo>),
    /// A waiting [`MetaRequest::Lock`] is still blocked: ask again.
    LockWaiting,
    /// Who the caller is.
    WhoAmI(WhoAmI),
    /// Attributes of one inode.
    Attr(Attr),
    /// One entry with its attributes and xattr names
    /// ([`MetaRequest::LookupPlus`]).
    Entry(DirEntry),
    /// A page of entries; `more` when another page follows.
    Entries {
        /// Entries, sorted by name.
        entries: Vec<DirEntry>,
        /// Whether more entries follow.
        more: bool,
    },
    /// A symlink target.
    Target(String),
    /// Permission to read.
    Read(ReadGrant),
    /// Permission to write.
    Write(WriteGrant),
    /// Replicas of a file.
    Replicas {
        /// Attributes.
        attr: Attr,
        /// Every registered replica, of every host, alive or not.
        replicas: Vec<ReplicaInfo>,
    },
    /// An xattr value.
    Xattr(Vec<u8>),
    /// xattr names.
    XattrNames(Vec<String>),
    /// Totals.
    StatFs(StatFs),
    /// The host registry.
    Hosts(Vec<HostInfo>),
    /// Heartbeat answer.
    HeartbeatAck {
        /// Replicas this server must delete.
        delete: Vec<(Ino, Gen)>,
        /// Meta server time (ms since the epoch), for clock-skew checks.
        now_ms: u64,
        /// The namespace this meta server serves (a random id made with its
        /// database): a file server keeps the replicas of one namespace and
        /// never deletes another's as "unknown".
        namespace_id: u128,
        /// Capabilities voided by changes of mode or owner since
        /// `voids_seen`.
        voids: crate::capability::CapVoids,
    },
    /// Inventory answer: replicas the meta server does not know.
    Unknown(Vec<(Ino, Gen)>),
    /// Batch answer, one result per request.
    Batch(Vec<MetaReply>),
    /// Answer to `PlanReplication`.
    ReplicationPlan(ReplicationPlan),
    /// Answer to `PlanCheck`.
    CheckPlan(CheckPlan),
    /// Answer to `ReplicationStatus`.
    ReplicationStatus(ReplicationStatus),
    /// Answer to `Monitor`.
    Monitor(MonitorResponse),
    /// Answer to `LeaseDir`.
    Lease(LeaseGrant),
    /// Answer to `CommitBundle`: one result per entry, in order.
    Bundle(Vec<EntryResult>),
    /// Answer to `GetQuota` and `SetQuota`.
    Quota(Vec<QuotaReport>),
    /// Federation users (administration).
    Users(Vec<UserInfo>),
    /// Named groups (administration).
    Groups(Vec<GroupInfo>),
}
