//! What an operator installs and runs besides the services (issue 17):
//! completions and man pages generated from every binary's clap definition,
//! `renkei config check` on every kind of configuration, and the admin
//! commands (users, groups, draining hosts, dropping a replica, chown, ln,
//! xattr, cksum). These run the built binaries (`RENKEI_BIN_DIR`, see
//! `tests::procs::bin_dir`).

mod admin;
mod common;
mod config_check;
mod docs;
mod files;
mod hosts;
mod logs;
