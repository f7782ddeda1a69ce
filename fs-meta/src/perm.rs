//! POSIX permission checks against the identity a certificate proved (or, for
//! admin identities, the credentials they assert). Pure functions.

use crate::record::InodeRecord;
use fs_proto::{ErrorCode, FileKind, RemoteError};

/// Read permission bit.
pub const R: u32 = 4;
/// Write permission bit.
pub const W: u32 = 2;
/// Execute/search permission bit.
pub const X: u32 = 1;

pub use fs_proto::mode::{S_ISGID, S_ISUID, S_ISVTX};

/// The principal an operation runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Certificate name (for capabilities and logs).
    pub name: String,
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Caller {
    /// uid 0 bypasses permission bits, as root does.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Member of `gid` (primary or supplementary).
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    /// Whether `mask` (a combination of R, W, X) is granted on `inode`.
    pub fn may(&self, inode: &InodeRecord, mask: u32) -> bool {
        if self.is_root() {
            // Root may read and write anything, and execute what anyone may.
            return mask & X == 0 || inode.kind == FileKind::Directory || inode.perm & 0o111 != 0;
        }
        let bits = if self.uid == inode.uid {
            (inode.perm >> 6) & 7
        } else if self.in_group(inode.gid) {
            (inode.perm >> 3) & 7
        } else {
            inode.perm & 7
        };
        bits & mask == mask
    }

    /// `may`, as an error naming what was refused.
    pub fn check(&self, inode: &InodeRecord, mask: u32, what: &str) -> Result<(), RemoteError> {
        if self.may(inode, mask) {
            Ok(())
        } else {
            Err(RemoteError::new(ErrorCode::PermissionDenied, what.to_string()))
        }
    }

    /// Owner of the inode, or root.
    pub fn owns(&self, inode: &InodeRecord) -> bool {
        self.is_root() || self.uid == inode.uid
    }

    /// Sticky-directory rule: in a sticky directory only the owner of the
    /// entry, the owner of the directory or root may remove or rename it.
    pub fn may_delete_in(&self, dir: &InodeRecord, child: &InodeRecord) -> bool {
        dir.perm & S_ISVTX == 0 || self.is_root() || self.uid == dir.uid || self.uid == child.uid
    }
}

impl fs_proto::mode::Who for Caller {
    fn is_root(&self) -> bool {
        Caller::is_root(self)
    }
    fn in_group(&self, gid: u32) -> bool {
        Caller::in_group(self, gid)
    }
    fn gid(&self) -> u32 {
        self.gid
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fs_proto::Timestamp;

    fn inode(kind: FileKind, perm: u32, uid: u32, gid: u32) -> InodeRecord {
        InodeRecord {
            kind,
            perm,
            uid,
            gid,
            nlink: 1,
            size: 0,
            atime: Timestamp::default(),
            mtime: Timestamp::default(),
            ctime: Timestamp::default(),
            crtime: Timestamp::default(),
            rdev: 0,
            gen: 0,
            next_gen: 0,
            hash: None,
            target: None,
            ncopy: 0,
            parent: 0,
        }
    }

    fn caller(uid: u32, gid: u32) -> Caller {
        Caller { name: "u".into(), uid, gid, groups: vec![] }
    }

    #[test]
    fn owner_group_other() {
        let f = inode(FileKind::Regular, 0o640, 1000, 100);
        assert!(caller(1000, 1).may(&f, R | W));
        assert!(caller(2000, 100).may(&f, R));
        assert!(!caller(2000, 100).may(&f, W));
        assert!(!caller(3000, 3000).may(&f, R));
        assert!(caller(0, 0).may(&f, R | W));
        assert!(!caller(0, 0).may(&f, X));
        let d = inode(FileKind::Directory, 0o700, 1000, 1000);
        assert!(caller(0, 0).may(&d, X));
    }

    #[test]
    fn sticky() {
        let dir = inode(FileKind::Directory, 0o1777, 0, 0);
        let child = inode(FileKind::Regular, 0o644, 1000, 1000);
        assert!(caller(1000, 1000).may_delete_in(&dir, &child));
        assert!(!caller(2000, 2000).may_delete_in(&dir, &child));
    }
}
