//! Inode numbers on the mount: the meta server's inode numbers are used
//! as they are (they are never reused, so the FUSE generation is always 0),
//! except that the mounted remote directory is FUSE inode 1.

use fs_proto::{Ino, ROOT_INO};

/// FUSE's root inode number.
pub const FUSE_ROOT: u64 = 1;

/// Translation between FUSE and meta inode numbers.
#[derive(Debug, Clone, Copy)]
pub struct Inodes {
    root: Ino,
}

impl Inodes {
    /// A mount of the remote directory with inode `root`.
    pub fn new(root: Ino) -> Self {
        Inodes { root }
    }

    /// The meta inode a FUSE inode stands for.
    pub fn to_meta(&self, fuse: u64) -> Ino {
        if fuse == FUSE_ROOT {
            self.root
        } else if fuse == self.root && self.root != ROOT_INO {
            // The remote directory is only ever shown as 1; its own number
            // stands for the real root, which the mount cannot reach.
            ROOT_INO
        } else {
            fuse
        }
    }

    /// The FUSE inode of a meta inode.
    pub fn to_fuse(&self, meta: Ino) -> u64 {
        if meta == self.root {
            FUSE_ROOT
        } else if meta == ROOT_INO {
            self.root
        } else {
            meta
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for root in [1, 42] {
            let m = Inodes::new(root);
            for ino in [1, 2, 42, 43, 1000] {
                assert_eq!(m.to_meta(m.to_fuse(ino)), ino);
            }
            assert_eq!(m.to_fuse(root), FUSE_ROOT);
        }
    }
}
