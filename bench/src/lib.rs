//! renkei's benchmark kit. Today it holds the WAN emulator and multi-site test bed ([`wan`]): real
//! processes in network namespaces ("sites") joined by a userspace router that applies each
//! directed link's delay, rate, queue and loss. Read [`wan::Wan`] and [`wan::Topology`] first.
//!
//! # Layout
//! - [`wan`]: the emulator library, used by `renkei-bench wan` and by the `tests` crate.
//! - [`putget`]: one large file through `renkei put/get` beside `cp`.
//! - [`mount_bench`]: one large file through the FUSE mount beside put/get and sshfs.
//! - [`rep_bench`]: replicating the Montage-like set between two sites beside one tar stream.
//! - [`wanfs_bench`]: the Montage-like set into and out of the mount across the WAN, beside one tar
//!   stream, per-file creates and sshfs; `ls -l` cold and warm; one large file at 50 ms.
//! - [`meta_bench`]: the namespace in sled beside a three-member etcd cluster (creates, `ls -l`,
//!   stat, deletes, a bundled `put -r`).
//! - [`paper`]: the RENKEI-PoP paper's Table 4 and Figure 6 on its emulated topology.
//! - [`sshfs`], [`tar_stream`]: the baselines those compare with.

pub mod dataset;
pub mod meta_bench;
pub mod mount_bench;
pub mod paper;
pub mod putget;
pub mod rep_bench;
pub mod sshfs;
pub mod tar_stream;
pub mod tools_bench;
pub mod wan;
pub mod wan_transfer;
pub mod wanfed;
pub mod wanfs_bench;
pub mod wanfs_ls;
pub mod wanfs_mount;
pub mod wanfs_report;
