//! `renkei`: the command line of the federation (see `renkei --help`).

#[tokio::main]
async fn main() {
    // fuser warns "Unmount failed: Invalid argument" after every unmount
    // made outside the process (`renkei umount`, fusermount3 -u): the
    // session's own unmount finds nothing left to unmount.
    fs_proto::process::init_tracing("warn,fuser::mnt=error");
    std::process::exit(fs_client::cli::main().await);
}
