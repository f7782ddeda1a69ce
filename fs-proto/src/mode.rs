//! The POSIX rules for mode bits and group ownership that both sides
//! apply: the meta server when it creates or changes an inode, and the
//! mount when it creates or changes one under a directory write lease
//! (acknowledged locally, committed later). One copy, so the mount never
//! acknowledges a mode the meta server would have made differently.
//!
//! Pure functions over permission bits; who acts is given by [`Who`].

use crate::FileKind;

/// Set-user-id bit.
pub const S_ISUID: u32 = 0o4000;
/// Set-group-id bit.
pub const S_ISGID: u32 = 0o2000;
/// Sticky bit.
pub const S_ISVTX: u32 = 0o1000;
/// Group execute bit.
const S_IXGRP: u32 = 0o010;

/// Who acts, as far as the mode rules care.
pub trait Who {
    /// Root in the namespace (CAP_FOWNER and CAP_FSETID).
    fn is_root(&self) -> bool;
    /// Member of `gid` (primary or supplementary).
    fn in_group(&self, gid: u32) -> bool;
    /// Primary gid: the group of what it creates outside set-group-id
    /// directories.
    fn gid(&self) -> u32;
}

/// The group of a new inode: the directory's when the directory is
/// set-group-id (BSD semantics), else the creator's primary group.
pub fn new_gid(who: &impl Who, dir_perm: u32, dir_gid: u32) -> u32 {
    if dir_perm & S_ISGID != 0 {
        dir_gid
    } else {
        who.gid()
    }
}

/// The mode of a new inode of `kind` asked for as `perm` (umask already
/// applied by the kernel) in a directory of mode `dir_perm`, owned by group
/// `gid` (see [`new_gid`]; an explicit owner, as `tar x` as root sets it,
/// is given the same way): a new directory inherits the directory's
/// set-group-id bit; a new file keeps set-group-id only if its creator is
/// root or in its group.
pub fn new_mode(who: &impl Who, kind: FileKind, perm: u32, dir_perm: u32, gid: u32) -> u32 {
    let mut p = perm & 0o7777;
    if kind == FileKind::Directory {
        p |= dir_perm & S_ISGID;
    } else if !who.is_root() && !who.in_group(gid) {
        p &= !S_ISGID;
    }
    p
}

/// The mode `chmod` sets: as asked, except that a non-root caller outside
/// the file's group cannot set set-group-id on a non-directory (it is
/// cleared silently, as Linux does).
pub fn chmod(who: &impl Who, kind: FileKind, perm: u32, gid: u32) -> u32 {
    let mut p = perm & 0o7777;
    if kind != FileKind::Directory && !who.is_root() && !who.in_group(gid) {
        p &= !S_ISGID;
    }
    p
}

/// The mode after a change of owner or group: a non-directory loses
/// set-user-id, and set-group-id when the group may execute (otherwise the
/// bit marks mandatory locking and stays).
pub fn after_chown(kind: FileKind, perm: u32) -> u32 {
    if kind == FileKind::Directory {
        perm
    } else {
        kill_priv(perm)
    }
}

/// The mode after a write or truncate by someone without CAP_FSETID: no
/// set-user-id, and no set-group-id if the group may execute.
pub fn kill_priv(perm: u32) -> u32 {
    let mut p = perm & !S_ISUID;
    if p & S_IXGRP != 0 {
        p &= !S_ISGID;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    struct U {
        root: bool,
        gid: u32,
        groups: Vec<u32>,
    }

    impl Who for U {
        fn is_root(&self) -> bool {
            self.root
        }
        fn in_group(&self, gid: u32) -> bool {
            self.gid == gid || self.groups.contains(&gid)
        }
        fn gid(&self) -> u32 {
            self.gid
        }
    }

    fn user(gid: u32, groups: &[u32]) -> U {
        U { root: false, gid, groups: groups.to_vec() }
    }

    #[test]
    fn a_setgid_directory_gives_its_group_and_its_bit_to_new_directories_only() {
        let u = user(100, &[]);
        let gid = new_gid(&u, 0o2775, 200);
        assert_eq!(gid, 200);
        assert_eq!(new_mode(&u, FileKind::Directory, 0o755, 0o2775, gid), 0o2755);
        assert_eq!(new_mode(&u, FileKind::Regular, 0o644, 0o2775, gid), 0o644);
        assert_eq!(new_gid(&u, 0o775, 200), 100);
    }

    #[test]
    fn a_new_file_keeps_setgid_only_for_members_of_its_group_or_root() {
        let outsider = user(100, &[]);
        assert_eq!(new_mode(&outsider, FileKind::Regular, 0o2755, 0o2777, 200), 0o755);
        let member = user(100, &[200]);
        assert_eq!(new_mode(&member, FileKind::Regular, 0o2755, 0o2777, 200), 0o2755);
        let root = U { root: true, gid: 0, groups: vec![] };
        assert_eq!(new_mode(&root, FileKind::Regular, 0o2755, 0o2777, 200), 0o2755);
        // Without a set-group-id directory the file's group is the creator's.
        assert_eq!(new_mode(&outsider, FileKind::Regular, 0o2755, 0o777, 100), 0o2755);
    }

    #[test]
    fn chmod_drops_setgid_outside_the_group_and_chown_kills_privileges() {
        let u = user(100, &[]);
        assert_eq!(chmod(&u, FileKind::Regular, 0o2755, 200), 0o755);
        assert_eq!(chmod(&u, FileKind::Directory, 0o2755, 200), 0o2755);
        assert_eq!(chmod(&u, FileKind::Regular, 0o12755, 100), 0o2755);
        assert_eq!(after_chown(FileKind::Regular, 0o6755), 0o755);
        assert_eq!(after_chown(FileKind::Regular, 0o6745), 0o2745, "setgid without group exec marks locking");
        assert_eq!(after_chown(FileKind::Directory, 0o6755), 0o6755);
        assert_eq!(kill_priv(0o4777), 0o777);
        assert_eq!(kill_priv(0o2767), 0o2767);
    }
}
