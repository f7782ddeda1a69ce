//! What an operator installs and runs besides the services (issue 17):
//! completions and man pages generated from every binary's clap definition,
//! and `renkei config check` on every kind of configuration. These run the
//! built binaries (`RENKEI_BIN_DIR`, see `tests::procs::bin_dir`).

mod config_check;
mod docs;
