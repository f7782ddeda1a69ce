//! renkei's VM hosting (after RENKEI-VPE): the PoP-side half.
//!
//! A PoP stages OS images from an [`ImageSource`] into a verified,
//! content-addressed [`ImageCache`], gives each VM a copy-on-write overlay,
//! a swap disk and a seed (SSH keys, static addresses per segment), and
//! boots it through libvirt. Read [`VmHost`] first (run, stop, save), then
//! [`Lifecycle`] (the sans-IO state machine it drives) and [`Hypervisor`]
//! (the seam to libvirt). The image layout, seed format and network design
//! are in `vpe/README.md`.
//!
//! # Layout
//! - [`image`]: image manifests, identities, [`ImageSource`] and [`LocalDirSource`].
//! - [`cache`]: the content-addressed image cache.
//! - [`spec`]: what a user asks for ([`VmSpec`]) and its validation.
//! - [`seed`]: the per-VM seed disk.
//! - [`disk`]: overlays, swap, flattening for `save` (qemu-img).
//! - [`network`]: segments → libvirt networks or bridges; NIC MACs.
//! - [`domain`]: the libvirt domain XML.
//! - [`accel`]: KVM-or-TCG detection.
//! - [`hypervisor`] and [`libvirt`]: the hypervisor trait and its libvirt implementation.
//! - [`console`]: waiting for and parsing the guest's serial console.
//! - [`lifecycle`]: the VM state machine.
//! - [`placement`]: choosing a PoP and enforcing user limits.
//! - [`host`]: [`VmHost`], which ties it all together on one PoP.
//! - [`config`]: the agent's TOML configuration.
//! - [`command`]: running external tools with deadlines.
#![warn(missing_docs, unreachable_pub)]

pub mod accel;
pub mod agent;
pub mod cache;
pub mod cli;
pub mod client;
pub mod command;
pub mod config;
pub mod console;
pub mod disk;
pub mod domain;
pub mod error;
pub mod host;
pub mod hypervisor;
pub mod image;
pub mod libvirt;
pub mod lifecycle;
pub mod manager;
pub mod network;
pub mod placement;
pub mod seed;
pub mod spec;
pub mod store;

pub use accel::{Accel, AccelDecision};
pub use cache::{ImageCache, StageReport};
pub use config::{AccelMode, HostConfig};
pub use console::ConsoleReport;
pub use error::{CacheError, HypervisorError, PlacementError, SourceError, VmError};
pub use host::{RunReport, Timings, VmHost, VmRecord};
pub use hypervisor::{DomainState, Hypervisor};
pub use image::{ImageId, ImageManifest, ImageSource, LocalDirSource, Role};
pub use libvirt::Libvirt;
pub use lifecycle::{Lifecycle, VmState};
pub use network::SegmentBacking;
pub use spec::{IpCidr, NicSpec, SeedFile, VmSpec};
