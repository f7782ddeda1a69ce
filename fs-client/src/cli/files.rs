//! `renkei chown`, `ln`, `xattr` and `cksum`: what `chmod` does for the
//! mode, for owners, links, extended attributes and the stored BLAKE3.

use super::output::print_json;
use crate::Client;
use clap::{Args, Subcommand};
use fs_proto::admin::AdminRequest;
use fs_proto::hash_hex;
use fs_proto::meta::MetaResponse;
use serde::Serialize;
use std::io::Read;
use std::path::PathBuf;

/// `chown` arguments.
#[derive(Args, Debug)]
pub struct ChownArgs {
    /// OWNER[:GROUP] or :GROUP; names (`renkei user ls`, `renkei group
    /// ls`) or numbers. An admin's chown acts as root.
    spec: String,
    /// Paths.
    #[arg(required = true)]
    paths: Vec<String>,
}

/// `ln` arguments.
#[derive(Args, Debug)]
pub struct LnArgs {
    /// Make a symbolic link (TARGET is stored as it is written).
    #[arg(short, long)]
    symbolic: bool,
    /// The existing file (for -s: the link's target).
    target: String,
    /// The new name.
    link: String,
}

/// `renkei xattr`.
#[derive(Subcommand, Debug)]
pub enum XattrCommand {
    /// Print an attribute's value.
    Get {
        /// Path.
        path: String,
        /// Attribute name, e.g. user.comment.
        name: String,
    },
    /// Set an attribute.
    Set {
        /// Path.
        path: String,
        /// Attribute name.
        name: String,
        /// Value.
        value: String,
    },
    /// List attribute names.
    Ls {
        /// Path.
        path: String,
    },
    /// Remove an attribute.
    Rm {
        /// Path.
        path: String,
        /// Attribute name.
        name: String,
    },
}

/// `cksum` arguments.
#[derive(Args, Debug)]
pub struct CksumArgs {
    /// A file in the federation.
    path: String,
    /// A local file to compare with the stored hash (hashed here; no file
    /// bytes cross the network). Exits 1 when they differ.
    local: Option<PathBuf>,
}

/// A user or group given by name or number: (uid, gid).
async fn owner_ids(client: &Client, spec: &str) -> anyhow::Result<(Option<u32>, Option<u32>)> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, g),
        None => (spec, ""),
    };
    let uid = match user {
        "" => None,
        u => Some(match u.parse() {
            Ok(n) => n,
            Err(_) => match client.meta().admin(AdminRequest::UserList).await? {
                MetaResponse::Users(all) => all
                    .iter()
                    .find(|x| x.name == u)
                    .map(|x| x.uid)
                    .ok_or_else(|| anyhow::anyhow!("no user named {u:?} (`renkei user ls`)"))?,
                other => anyhow::bail!("unexpected answer: {other:?}"),
            },
        }),
    };
    let gid = match group {
        "" => None,
        g => Some(match g.parse() {
            Ok(n) => n,
            Err(_) => match client.meta().admin(AdminRequest::GroupList).await? {
                MetaResponse::Groups(all) => all
                    .iter()
                    .find(|x| x.name == g)
                    .map(|x| x.gid)
                    .ok_or_else(|| anyhow::anyhow!("no group named {g:?} (`renkei group ls`)"))?,
                other => anyhow::bail!("unexpected answer: {other:?}"),
            },
        }),
    };
    if uid.is_none() && gid.is_none() {
        anyhow::bail!("{spec:?} names neither an owner nor a group (OWNER[:GROUP] or :GROUP)");
    }
    Ok((uid, gid))
}

/// Only root may give a file away: an admin's `chown` acts as root (the
/// meta server honours asserted credentials from admins only); anyone
/// else's as themselves (a group they are in, on a file they own).
pub(crate) async fn chown(client: &Client, a: &ChownArgs) -> anyhow::Result<()> {
    let (uid, gid) = owner_ids(client, &a.spec).await?;
    let meta = if client.meta().whoami().await?.admin {
        client.meta().with_cred(Some(fs_proto::Cred { uid: 0, gid: 0, groups: Vec::new() }))
    } else {
        client.meta().clone()
    };
    for p in &a.paths {
        let at = client.stat(p).await?;
        meta.setattr(at.ino, fs_proto::meta::SetAttr { uid, gid, ..Default::default() })
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", crate::path::normalize(p)))?;
    }
    Ok(())
}

pub(crate) async fn ln(client: &Client, a: &LnArgs) -> anyhow::Result<()> {
    if a.symbolic {
        client.symlink(&a.target, &a.link).await?;
    } else {
        client.link(&a.target, &a.link).await?;
    }
    Ok(())
}

pub(crate) async fn xattr(client: &Client, c: &XattrCommand, json: bool) -> anyhow::Result<()> {
    match c {
        XattrCommand::Get { path, name } => {
            let v = client.getxattr(path, name).await?;
            if json {
                return print_json(&serde_json::json!({ "name": name, "value": String::from_utf8_lossy(&v) }));
            }
            println!("{}", String::from_utf8_lossy(&v));
        }
        XattrCommand::Set { path, name, value } => client.setxattr(path, name, value.as_bytes()).await?,
        XattrCommand::Ls { path } => {
            let names = client.listxattr(path).await?;
            if json {
                return print_json(&names);
            }
            for n in names {
                println!("{n}");
            }
        }
        XattrCommand::Rm { path, name } => client.removexattr(path, name).await?,
    }
    Ok(())
}

#[derive(Serialize)]
struct CksumView {
    path: String,
    size: u64,
    generation: u64,
    blake3: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    local: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    local_blake3: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    matches: Option<bool>,
}

/// BLAKE3 of a local file, as the federation computes it (one hash of
/// the whole contents).
fn hash_local(p: &std::path::Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().to_hex().to_string())
}

pub(crate) async fn cksum(client: &Client, a: &CksumArgs, json: bool) -> anyhow::Result<()> {
    let at = client.stat(&a.path).await?;
    if at.kind != fs_proto::FileKind::Regular {
        anyhow::bail!("{}: not a regular file", a.path);
    }
    // An empty file has no stored hash: it is BLAKE3 of nothing.
    let stored = at.hash.as_ref().map(hash_hex).unwrap_or_else(|| blake3::hash(b"").to_hex().to_string());
    let mut v = CksumView {
        path: crate::path::normalize(&a.path),
        size: at.size,
        generation: at.gen,
        blake3: Some(stored.clone()),
        local: None,
        local_blake3: None,
        matches: None,
    };
    if let Some(l) = &a.local {
        let local = hash_local(l)?;
        v.matches = Some(local == stored);
        v.local = Some(l.display().to_string());
        v.local_blake3 = Some(local);
    }
    if json {
        print_json(&v)?;
    } else {
        println!("{stored}  {}", v.path);
        if let (Some(l), Some(m)) = (&v.local, v.matches) {
            println!("{}  {l}: {}", v.local_blake3.as_deref().unwrap_or(""), if m { "matches" } else { "DIFFERS" });
        }
    }
    if v.matches == Some(false) {
        std::process::exit(1);
    }
    Ok(())
}
