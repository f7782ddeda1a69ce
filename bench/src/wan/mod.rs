//! The WAN emulator and multi-site test bed: real processes at emulated sites joined by links with
//! chosen one-way delay, rate, queue and loss, for TCP and UDP alike, without `tc netem`.
//!
//! Each site is a network namespace with one TUN interface (`wan0`, address `10.77.0.N/24`). A
//! userspace [`router`] in the process that started the test bed reads the packets every site sends
//! into the subnet and delivers them to the destination site through the directed link's
//! [`link::LinkModel`]. Start with [`Wan`] (tests) or `renkei-bench wan up` (shell).
//!
//! # Layout
//! - [`topology`]: the model and its TOML form; [`preset`]: `pair`, `renkei2011` and
//!   `renkei2011-before`.
//! - [`link`]: the sans-IO link model; [`router`]: the threads that apply it; [`tun`]: TUN devices.
//! - [`netns`]: namespaces; [`site`]: launching processes in a site; [`sweep`]: run locks and
//!   cleanup of dead runs; [`testbed`]: [`Wan`], which ties them together.
//! - [`state`]: the files of the `wan up` daemon.
//! - [`iperf`]: TCP throughput between sites, and the emulator's own limit.

pub mod error;
pub mod iperf;
pub mod link;
pub mod netns;
pub mod preset;
pub mod router;
pub mod site;
pub mod state;
pub mod sweep;
pub mod testbed;
pub mod topology;
pub mod tun;

pub use error::{TopologyError, WanError};
pub use router::LinkStats;
pub use site::Site;
pub use testbed::Wan;
pub use topology::{LinkParams, LinkSpec, SiteSpec, Topology};
