//! renkei's benchmark kit. Today it holds the WAN emulator and multi-site test bed ([`wan`]): real
//! processes in network namespaces ("sites") joined by a userspace router that applies each
//! directed link's delay, rate, queue and loss. Read [`wan::Wan`] and [`wan::Topology`] first.
//!
//! # Layout
//! - [`wan`]: the emulator library, used by `renkei-bench wan` and by the `tests` crate.
//! - [`putget`]: one large file through `renkei put/get` beside `cp`.
//! - [`mount_bench`]: one large file through the FUSE mount beside put/get and sshfs.
//! - [`rep_bench`]: replicating the Montage-like set between two sites beside one tar stream.

pub mod dataset;
pub mod mount_bench;
pub mod putget;
pub mod rep_bench;
pub mod wan;
pub mod wan_transfer;
pub mod wanfed;
