//! `renkei ca`: the federation CA and certificates.

use clap::{Args, Subcommand};
use fs_proto::identity::{CaDir, IssueRequest, Role};
use std::path::PathBuf;

/// CA commands.
#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Create a new federation CA in DIR (ca.pem, ca.key). Refuses to
    /// overwrite an existing one.
    Init {
        /// Directory for the CA.
        #[arg(long)]
        dir: PathBuf,
        /// Federation name (the O of every certificate).
        #[arg(long, default_value = "renkei")]
        name: String,
    },
    /// Issue a host certificate (--host NAME --site SITE) or a user
    /// certificate (--user NAME), written to DIR/hosts or DIR/users, valid
    /// 30 days unless --days says otherwise (renew before it ends).
    Issue(IssueArgs),
    /// Renew the certificate issued to a user (--user NAME) or a host
    /// (--host NAME): a new certificate for the same key, identity and site,
    /// valid --days from now, written over the old one. Meta and file
    /// servers, mounts and clients that use that file present the new one on
    /// their next connections within a second or so, without a restart (copy
    /// it where the holder reads it as you copied the first). A revoked
    /// certificate is not renewed.
    Renew {
        /// Directory of the CA.
        #[arg(long)]
        dir: PathBuf,
        /// Host name.
        #[arg(long, conflicts_with = "user")]
        host: Option<String>,
        /// Federation user name.
        #[arg(long)]
        user: Option<String>,
        /// Validity in days from now.
        #[arg(long, default_value_t = fs_proto::identity::DEFAULT_VALID_DAYS)]
        days: i64,
    },
    /// Revoke the certificate issued to a user (--user NAME) or a host
    /// (--host NAME): it is added to DIR/crl.pem, which every service reads
    /// beside its ca.pem within a second or so, without a restart; the
    /// holder's connections are closed and new ones refused. Copy crl.pem
    /// to every host as you copied ca.pem.
    Revoke {
        /// Directory of the CA.
        #[arg(long)]
        dir: PathBuf,
        /// Host name.
        #[arg(long, conflicts_with = "user")]
        host: Option<String>,
        /// Federation user name.
        #[arg(long)]
        user: Option<String>,
    },
}

/// `ca issue` arguments.
#[derive(Args, Debug)]
pub struct IssueArgs {
    /// Directory of the CA.
    #[arg(long)]
    dir: PathBuf,
    /// Host name (meta server, file server or VM agent).
    #[arg(long, conflicts_with = "user", requires = "site")]
    host: Option<String>,
    /// Site of the host.
    #[arg(long)]
    site: Option<String>,
    /// Federation user name.
    #[arg(long)]
    user: Option<String>,
    /// Validity in days.
    #[arg(long, default_value_t = fs_proto::identity::DEFAULT_VALID_DAYS)]
    days: i64,
}

pub(crate) fn run(cmd: &CaCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        CaCommand::Init { dir, name } => {
            let ca = CaDir::new(dir);
            ca.init(name)?;
            if json {
                super::output::print_json(&serde_json::json!({"ca_cert": ca.cert_path(), "ca_key": ca.key_path()}))?;
            } else {
                println!(
                    "created federation CA {name:?}: {} (key {})",
                    ca.cert_path().display(),
                    ca.key_path().display()
                );
            }
        }
        CaCommand::Issue(a) => {
            let (name, role) = match (&a.host, &a.user) {
                (Some(h), None) => (h.clone(), Role::Host),
                (None, Some(u)) => (u.clone(), Role::User),
                _ => anyhow::bail!("give either --host NAME --site SITE or --user NAME"),
            };
            if a.days < 1 {
                anyhow::bail!("--days must be at least 1");
            }
            let files = CaDir::new(&a.dir).issue(&IssueRequest {
                name: name.clone(),
                role,
                site: if role == Role::Host { a.site.clone() } else { None },
                not_before: None,
                valid_days: a.days,
            })?;
            if json {
                super::output::print_json(&files)?;
            } else {
                println!(
                    "issued {} certificate for {name}: {} (key {})",
                    if role == Role::Host { "host" } else { "user" },
                    files.cert.display(),
                    files.key.display()
                );
            }
        }
        CaCommand::Renew { dir, host, user, days } => {
            let (name, role) = match (host, user) {
                (Some(h), None) => (h.clone(), Role::Host),
                (None, Some(u)) => (u.clone(), Role::User),
                _ => anyhow::bail!("give either --host NAME or --user NAME"),
            };
            if *days < 1 {
                anyhow::bail!("--days must be at least 1");
            }
            let files = CaDir::new(dir).renew(role, &name, *days)?;
            if json {
                super::output::print_json(&files)?;
            } else {
                println!("renewed the certificate of {name} for {days} days: {}", files.cert.display());
            }
        }
        CaCommand::Revoke { dir, host, user } => {
            let (name, role) = match (host, user) {
                (Some(h), None) => (h.clone(), Role::Host),
                (None, Some(u)) => (u.clone(), Role::User),
                _ => anyhow::bail!("give either --host NAME or --user NAME"),
            };
            let ca = CaDir::new(dir);
            let r = ca.revoke(role, &name)?;
            let crl = fs_proto::revocation::crl_path(&ca.cert_path());
            if json {
                super::output::print_json(&serde_json::json!({"revoked": r, "crl": crl}))?;
            } else {
                println!("revoked the certificate of {name} (serial {}); list: {}", r.serial, crl.display());
            }
        }
    }
    Ok(())
}
