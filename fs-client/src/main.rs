//! `renkei`: the command line of the federation (see `renkei --help`).

#[tokio::main]
async fn main() {
    fs_proto::process::init_tracing("warn");
    std::process::exit(fs_client::cli::main().await);
}
