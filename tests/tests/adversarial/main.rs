//! Attacks on a federation shared by users of different institutions
//! (issue 12), each performed over the real protocol by a second user or a
//! rogue client using only the public `fs-client` and `fs-proto` APIs, and
//! each shown refused with a clear error, with nothing lost and the
//! federation still serving the victim.

mod common;
mod frames;
mod inode_numbers;
mod leases;
mod meta_stall;
mod quota;
mod replicas;
mod revocation;
mod roles;
mod sizes;
mod streams;
mod voided;
mod web;
