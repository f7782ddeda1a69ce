//! Replication tests (issue 6): `renkei rep` server to server, copy counts
//! kept by the meta server's worker, resuming after a killed destination,
//! and `renkei fsck` finding and repairing bad replicas.

mod common;
mod fsck;
mod ncopy;
mod rep;
mod resume;
