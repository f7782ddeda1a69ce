//! Key layout of the namespace tree. One sled tree holds every namespace
//! record so that each operation commits as one atomic batch; a one-byte
//! prefix says what a key is, integers are big-endian so scans are ordered.

use fs_proto::{Gen, Ino};

/// Name of the sled tree holding inodes, entries, replicas, xattrs and GC.
pub const TREE_NAMESPACE: &str = "namespace.v1";
/// Name of the sled tree holding the host registry.
pub const TREE_HOSTS: &str = "hosts.v1";
/// Name of the sled tree holding users.
pub const TREE_USERS: &str = "users.v1";
/// Name of the sled tree holding users removed by an admin (name ->
/// [`crate::record::RemovedUserRecord`]): never registered again on contact.
pub const TREE_REMOVED_USERS: &str = "users_removed.v1";
/// Name of the sled tree holding named groups (name ->
/// [`crate::record::GroupRecord`]).
pub const TREE_GROUPS: &str = "groups.v1";
/// Name of the sled tree holding the hosts being drained (name ->
/// [`crate::record::DrainRecord`]).
pub const TREE_DRAINING: &str = "hosts_draining.v1";

const INODE: u8 = b'i';
const DENTRY: u8 = b'd';
const REPLICA: u8 = b'r';
const XATTR: u8 = b'x';
const GC: u8 = b'g';
const INO_LEASE: u8 = b'l';
const BACKLINK: u8 = b'b';
const USAGE: u8 = b'q';
const LIMITS: u8 = b'Q';
/// Present once usage is counted for every user (databases made before
/// quotas existed are counted when opened).
pub const USAGE_DONE: &[u8] = b"c:usage.v1";
/// Present once every non-directory's names have backlinks (databases made
/// before backlinks existed are migrated when opened).
pub const BACKLINKS_DONE: &[u8] = b"c:backlinks.v1";
/// Key of the namespace's random id (16 bytes, made with the database).
pub const NAMESPACE_ID: &[u8] = b"c:namespace_id";
/// Key of the inode allocation counter.
pub const NEXT_INO: &[u8] = b"c:next_ino";

/// `i` + ino.
pub fn inode(ino: Ino) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(INODE);
    k.extend_from_slice(&ino.to_be_bytes());
    k
}

/// `d` + parent: prefix of all entries of a directory.
pub fn dentry_prefix(parent: Ino) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(DENTRY);
    k.extend_from_slice(&parent.to_be_bytes());
    k
}

/// Prefix of every directory entry.
pub fn all_dentries() -> Vec<u8> {
    vec![DENTRY]
}

/// `d` + parent + name.
pub fn dentry(parent: Ino, name: &str) -> Vec<u8> {
    let mut k = dentry_prefix(parent);
    k.extend_from_slice(name.as_bytes());
    k
}

/// The name part of a dentry key.
pub fn dentry_name(key: &[u8]) -> Option<&str> {
    key.get(9..).and_then(|b| std::str::from_utf8(b).ok())
}

/// `b` + ino: prefix of the names (parent, name) of a non-directory.
pub fn backlink_prefix(ino: Ino) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(BACKLINK);
    k.extend_from_slice(&ino.to_be_bytes());
    k
}

/// `b` + ino + parent + name: one name of a non-directory, so the
/// directories holding a file can be found from the file.
pub fn backlink(ino: Ino, parent: Ino, name: &str) -> Vec<u8> {
    let mut k = backlink_prefix(ino);
    k.extend_from_slice(&parent.to_be_bytes());
    k.extend_from_slice(name.as_bytes());
    k
}

/// The parent of a backlink key.
pub fn backlink_parent(key: &[u8]) -> Option<Ino> {
    Some(Ino::from_be_bytes(key.get(9..17)?.try_into().ok()?))
}

/// `r` + ino: prefix of all replicas of a file.
pub fn replica_prefix(ino: Ino) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(REPLICA);
    k.extend_from_slice(&ino.to_be_bytes());
    k
}

/// `r` + ino + host.
pub fn replica(ino: Ino, host: &str) -> Vec<u8> {
    let mut k = replica_prefix(ino);
    k.extend_from_slice(host.as_bytes());
    k
}

/// Prefix of every replica record.
pub fn all_replicas() -> Vec<u8> {
    vec![REPLICA]
}

/// `(ino, host)` of a replica key.
pub fn replica_parts(key: &[u8]) -> Option<(Ino, &str)> {
    let ino = Ino::from_be_bytes(key.get(1..9)?.try_into().ok()?);
    let host = std::str::from_utf8(key.get(9..)?).ok()?;
    Some((ino, host))
}

/// `x` + ino: prefix of a file's xattrs.
pub fn xattr_prefix(ino: Ino) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(XATTR);
    k.extend_from_slice(&ino.to_be_bytes());
    k
}

/// `x` + ino + name.
pub fn xattr(ino: Ino, name: &str) -> Vec<u8> {
    let mut k = xattr_prefix(ino);
    k.extend_from_slice(name.as_bytes());
    k
}

/// `g` + host + 0: prefix of a host's pending deletions.
pub fn gc_prefix(host: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + host.len());
    k.push(GC);
    k.extend_from_slice(host.as_bytes());
    k.push(0);
    k
}

/// `g` + host + 0 + ino + gen.
pub fn gc(host: &str, ino: Ino, gen: Gen) -> Vec<u8> {
    let mut k = gc_prefix(host);
    k.extend_from_slice(&ino.to_be_bytes());
    k.extend_from_slice(&gen.to_be_bytes());
    k
}

/// `(ino, gen)` of a GC key.
pub fn gc_parts(key: &[u8]) -> Option<(Ino, Gen)> {
    let n = key.len();
    if n < 17 {
        return None;
    }
    let ino = Ino::from_be_bytes(key[n - 16..n - 8].try_into().ok()?);
    let gen = Gen::from_be_bytes(key[n - 8..].try_into().ok()?);
    Some((ino, gen))
}

/// `l` + first ino: a range of inode numbers leased to a principal for
/// bundles (see [`crate::record::InoLeaseRecord`]).
pub fn ino_lease(first: Ino) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(INO_LEASE);
    k.extend_from_slice(&first.to_be_bytes());
    k
}

/// The first ino of an inode-lease key.
pub fn ino_lease_first(key: &[u8]) -> Option<Ino> {
    (key.len() == 9 && key[0] == INO_LEASE).then(|| Ino::from_be_bytes(key[1..9].try_into().unwrap_or_default()))
}

/// `q` + uid: what a user holds (see [`crate::quota`]).
pub fn usage(uid: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(5);
    k.push(USAGE);
    k.extend_from_slice(&uid.to_be_bytes());
    k
}

/// Prefix of every usage record.
pub fn all_usage() -> Vec<u8> {
    vec![USAGE]
}

/// `Q` + uid: a user's quota limits.
pub fn limits(uid: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(5);
    k.push(LIMITS);
    k.extend_from_slice(&uid.to_be_bytes());
    k
}

/// Prefix of every limits record.
pub fn all_limits() -> Vec<u8> {
    vec![LIMITS]
}

/// The uid of a usage or limits key.
pub fn quota_uid(key: &[u8]) -> Option<u32> {
    (key.len() == 5 && (key[0] == USAGE || key[0] == LIMITS))
        .then(|| u32::from_be_bytes([key[1], key[2], key[3], key[4]]))
}

/// The inode whose quota usage a written key may change: an inode record
/// or one of its replicas.
pub fn usage_ino(key: &[u8]) -> Option<Ino> {
    match key.first() {
        Some(&INODE) | Some(&REPLICA) if key.len() >= 9 => Some(Ino::from_be_bytes(key[1..9].try_into().ok()?)),
        _ => None,
    }
}
