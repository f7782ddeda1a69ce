//! The subcommands of `renkei-bench`, one module each; this file only dispatches.

pub mod dataset;
pub mod meta;
pub mod mount;
pub mod paper;
pub mod putget;
pub mod rep;
pub mod tools;
pub mod transfer;
pub mod wan;
pub mod wan_fed;
pub mod wan_serve;
pub mod wanfs;

use clap::Subcommand;

/// Top-level subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Emulated multi-site WAN: network namespaces joined by a userspace router.
    Wan(wan::WanArgs),
    /// Write the Montage-like dataset (6,756 files of 292 B..27 MB, mean ~2 MB, scaled).
    Dataset(dataset::DatasetArgs),
    /// One large file over an emulated long fat pipe (default 50 ms, 1 Gbit/s) vs the link rate.
    Transfer(transfer::TransferArgs),
    /// One large file through renkei put/get vs cp on the same disk (loopback federation).
    Putget(putget::PutGetArgs),
    /// One large file read and written through the FUSE mount vs renkei put/get and sshfs.
    Mount(mount::MountArgs),
    /// Replicate the Montage-like set between two sites (loopback, or --wan) vs one tar stream.
    Rep(rep::RepArgs),
    /// Issue 5 side by side: the Montage-like set into and out of the mount across a 10 ms WAN vs
    /// one tar stream, per-file creates and sshfs; cold/warm `ls -l`; one large file at 50 ms.
    Wanfs(wanfs::WanFsArgs),
    /// Issue 20 side by side: tar x, rsync -a, cp -a, chmod -R, chown -R, mv, rm -rf, git and make on
    /// 10,000 small files, in the mount beside local disk and sshfs (or, with --wan, one tar stream
    /// and sshfs across a 10 ms WAN); each tool's metadata requests per file.
    Tools(tools::ToolsArgs),
    /// Issue 14: the RENKEI-PoP paper's Table 4 (every directed path: renkei, untuned TCP, the
    /// paper) and Figure 6 (the Montage set to titech1: rep, mount, per file, tar) on its emulated
    /// topology; `--quick` for a few minutes, `--json FILE` beside the markdown.
    Paper(paper::PaperArgs),
    /// Issue 16: creates, `ls -l`, stat and deletes of 10,000 files and a bundled `put -r`, with
    /// the namespace in sled and in a three-member etcd cluster on loopback, side by side.
    Meta(meta::MetaArgs),
    #[command(flatten)]
    Doc(fs_proto::clidoc::DocCommand),
}

/// Run one subcommand.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Wan(args) => wan::run(args),
        Command::Putget(args) => putget::run_cli(args),
        Command::Mount(args) => mount::run_cli(args),
        Command::Rep(args) => rep::run_cli(args),
        Command::Dataset(args) => dataset::run(args),
        Command::Transfer(args) => transfer::run_cli(args),
        Command::Wanfs(args) => wanfs::run_cli(args),
        Command::Tools(args) => tools::run_cli(args),
        Command::Paper(args) => paper::run_cli(args),
        Command::Meta(args) => meta::run_cli(args),
        Command::Doc(doc) => {
            use clap::CommandFactory;
            Ok(fs_proto::clidoc::run(&doc, crate::Args::command(), &[])?)
        }
    }
}
