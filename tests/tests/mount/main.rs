//! FUSE mount tests (issue 3), run only with `RENKEI_TEST_FUSE=1` (as root,
//! with /dev/fuse and fuse3): real tools on the mount, coherence between two
//! mounts through callbacks, zero-request warm listings, meta server restarts
//! under a mount, POSIX details, pjdfstest, and small files read in bundles
//! (issue 5).

mod bundle;
mod coherence;
mod common;
mod consistency;
mod crash;
mod failover;
mod faults;
mod fstab;
mod fsx;
mod handles;
mod locks;
mod nearest;
mod pjdfstest;
mod posix;
mod prefetch;
mod quota;
mod restart;
mod tools;
mod warm;
mod writeback;
