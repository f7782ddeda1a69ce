//! The `renkei` command line: argument parsing and dispatch. One module per
//! command family; every command that lists or reports takes `--json`.

mod admin;
mod ca;
mod config;
mod files;
mod fsck;
mod info;
mod local;
mod mount;
mod namespace;
mod netcheck;
mod output;
mod quota;
mod replicate;
mod transfer;

use crate::{Client, ClientConfig, ClientError};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

/// renkei: one namespace over the storage of several sites.
///
/// Files live whole on file servers at the sites (PoPs); a meta server keeps
/// the namespace. Writes go to a server at your site, reads come from the
/// nearest good replica, every byte is verified with BLAKE3, and every
/// connection is QUIC with mutual TLS under your federation certificate.
///
/// Start with `renkei local up --dir /tmp/fed --sites 3`, then
/// `export RENKEI_CONFIG=/tmp/fed/client.toml`.
#[derive(Parser, Debug)]
#[command(name = "renkei", version, about, long_about)]
pub struct Cli {
    /// Client configuration file [default: $RENKEI_CONFIG, else
    /// ~/.config/renkei/client.toml].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Federation identities: make the CA, issue host and user certificates.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Upload a local file (or a tree with -r) to a remote path.
    Put(transfer::PutArgs),
    /// Download a remote file (or a tree with -r) to a local path.
    Get(transfer::GetArgs),
    /// List a directory.
    Ls(namespace::LsArgs),
    /// Show attributes of a path, including its BLAKE3 hash.
    Stat(namespace::StatArgs),
    /// Make directories.
    Mkdir(namespace::MkdirArgs),
    /// Remove files (or trees with -r).
    Rm(namespace::RmArgs),
    /// Rename or move.
    Mv(namespace::MvArgs),
    /// Change permission bits (octal).
    Chmod(namespace::ChmodArgs),
    /// Change owner and/or group (OWNER[:GROUP], names or numbers).
    Chown(files::ChownArgs),
    /// Make a hard link (or with -s a symbolic one).
    Ln(files::LnArgs),
    /// Extended attributes: get, set, ls, rm.
    #[command(subcommand)]
    Xattr(files::XattrCommand),
    /// Show a file's BLAKE3 as the federation stores it, or whether a local
    /// copy matches it, without moving the file's bytes.
    Cksum(files::CksumArgs),
    /// Show which hosts and sites hold replicas of files.
    Where(info::WhereArgs),
    /// Replicate files server to server (like gfrep): -N copies, -D to a
    /// host or site, -S from one; many files per stream, -j streams.
    Rep(replicate::RepArgs),
    /// Set a file's or directory's copy count (kept by the meta server in
    /// the background), or show the backlog with --status.
    Ncopy(replicate::NcopyArgs),
    /// Verify every replica on its server; report bad or missing ones and
    /// repair them with --repair.
    Fsck(fsck::FsckArgs),
    /// Show capacity and free space of the live file servers.
    Df,
    /// Show the file servers: site, liveness, capacity, free space, load.
    Hosts,
    /// Measure round trips and throughput between every pair of file
    /// servers (server to server) and fill the status page's matrix.
    Netcheck(netcheck::NetcheckArgs),
    /// Show who the meta server thinks you are.
    Whoami,
    /// Show your quota (files and bytes, every replica counted) or, as an
    /// admin, anyone's (`--all`); `quota set` sets limits.
    Quota(quota::QuotaArgs),
    /// Federation users (admins: add, rm, mod; anyone: ls).
    #[command(subcommand)]
    User(admin::UserCommand),
    /// Named groups (admins: add, rm, mod; anyone: ls).
    #[command(subcommand)]
    Group(admin::GroupCommand),
    /// File servers (admins): drain one (move its replicas elsewhere),
    /// undrain, rm.
    #[command(subcommand)]
    Host(admin::HostCommand),
    /// Mount the federation (or a remote directory of it) like sshfs (FUSE).
    Mount(mount::MountArgs),
    /// Unmount a mount point made by `renkei mount`.
    Umount(mount::UmountArgs),
    /// mount(8)'s helper for /etc/fstab (what `renkei` does when run as
    /// `mount.renkei`; see mount.renkei(8)).
    #[command(name = "mount.renkei", hide = true)]
    MountHelper(mount::HelperArgs),
    /// Run a whole federation on this machine (real processes on loopback).
    #[command(subcommand)]
    Local(local::LocalCommand),
    /// Configuration files: `config check FILE` validates any of renkei's
    /// (client, meta, server, VM manager, VM agent).
    #[command(subcommand)]
    Config(config::ConfigCommand),
    #[command(flatten)]
    Doc(fs_proto::clidoc::DocCommand),
}

impl Cli {
    fn client_config(&self) -> Result<ClientConfig, ClientError> {
        let path = self.config.clone().unwrap_or_else(ClientConfig::default_path);
        ClientConfig::load(&path)
    }

    async fn client(&self) -> Result<Client, ClientError> {
        Client::connect(self.client_config()?).await
    }
}

/// Run the command line; the process exit code. Run as `mount.renkei`
/// (a symlink to this program), it is mount(8)'s helper.
pub async fn main() -> i32 {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if Path::new(&argv0).file_name().is_some_and(|n| n == "mount.renkei") {
        return mount::helper_main(&mount::HelperArgs::parse(), None);
    }
    let cli = Cli::parse();
    match run(&cli).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("renkei: {e:#}");
            1
        }
    }
}

async fn run(cli: &Cli) -> anyhow::Result<()> {
    let json = cli.json;
    match &cli.command {
        Command::Ca(c) => ca::run(c, json),
        Command::Local(c) => local::run(c, json).await,
        Command::Config(c) => {
            let code = config::run(c)?;
            if code != 0 {
                // The checker already said what is wrong.
                std::process::exit(code);
            }
            Ok(())
        }
        Command::Doc(doc) => {
            use clap::CommandFactory;
            Ok(fs_proto::clidoc::run(doc, Cli::command(), &[mount::HelperArgs::command()])?)
        }
        Command::Mount(a) => mount::run(cli.client_config()?, a).await,
        Command::Umount(a) => mount::umount(a),
        Command::MountHelper(a) => std::process::exit(mount::helper_main(a, cli.config.as_deref())),
        Command::Put(a) => transfer::put(&cli.client().await?, a, json).await,
        Command::Get(a) => transfer::get(&cli.client().await?, a, json).await,
        Command::Ls(a) => namespace::ls(&cli.client().await?, a, json).await,
        Command::Stat(a) => namespace::stat(&cli.client().await?, a, json).await,
        Command::Mkdir(a) => namespace::mkdir(&cli.client().await?, a).await,
        Command::Rm(a) => namespace::rm(&cli.client().await?, a).await,
        Command::Mv(a) => namespace::mv(&cli.client().await?, a).await,
        Command::Chmod(a) => namespace::chmod(&cli.client().await?, a).await,
        Command::Chown(a) => files::chown(&cli.client().await?, a).await,
        Command::Ln(a) => files::ln(&cli.client().await?, a).await,
        Command::Xattr(c) => files::xattr(&cli.client().await?, c, json).await,
        Command::Cksum(a) => files::cksum(&cli.client().await?, a, json).await,
        Command::User(c) => admin::user(&cli.client().await?, c, json).await,
        Command::Group(c) => admin::group(&cli.client().await?, c, json).await,
        Command::Host(c) => admin::host(&cli.client().await?, c, json).await,
        Command::Where(a) => info::where_(&cli.client().await?, a, json).await,
        Command::Rep(a) => replicate::rep(&cli.client().await?, a, json).await,
        Command::Ncopy(a) => replicate::ncopy(&cli.client().await?, a, json).await,
        Command::Fsck(a) => fsck::fsck(&cli.client().await?, a, json).await,
        Command::Df => info::df(&cli.client().await?, json).await,
        Command::Hosts => info::hosts(&cli.client().await?, json).await,
        Command::Netcheck(a) => netcheck::netcheck(&cli.client().await?, a, json).await,
        Command::Whoami => info::whoami(&cli.client().await?, json).await,
        Command::Quota(a) => quota::quota(&cli.client().await?, a, json).await,
    }
}
