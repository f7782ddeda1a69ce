//! Integration tests: in-process clusters and real processes.

mod bundle;
mod callbacks;
mod configs;
mod crash;
mod etcd_store;
mod faults;
mod integrity;
mod listing;
mod malformed;
mod roundtrip;
mod spool_stamp;
mod trust;
