//! Bundles of new files (see [`fs_proto::bundle`]): many files in one
//! stream to a file server at our site and one metadata commit, instead of
//! several round trips to the meta server per file.
//!
//! - [`plan`]: the sans-IO planner (what goes into which bundle, when it is
//!   sealed and when it may be sent).
//! - [`ship`]: sending one bundle and checking what was stored.
//! - [`tree`]: `renkei put -r` through bundles.
//!
//! The FUSE mount's use of them (directory write leases, local answers,
//! recalls) is in [`crate::mount::bundler`].

pub mod plan;
pub mod ship;
pub mod tree;
