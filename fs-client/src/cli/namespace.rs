//! `renkei ls`, `stat`, `mkdir`, `rm`, `mv`, `chmod`.

use super::output::{kind_name, mode_string, print_json, short_time, AttrView};
use crate::Client;
use clap::Args;
use serde::Serialize;

/// `ls` arguments.
#[derive(Args, Debug)]
pub struct LsArgs {
    /// Long listing (mode, links, owner, size, time).
    #[arg(short, long)]
    long: bool,
    /// Directory (or file) to list.
    #[arg(default_value = "/")]
    path: String,
}

/// `stat` arguments.
#[derive(Args, Debug)]
pub struct StatArgs {
    /// Path.
    path: String,
}

/// `mkdir` arguments.
#[derive(Args, Debug)]
pub struct MkdirArgs {
    /// Make parents as needed; no error if it exists.
    #[arg(short, long)]
    parents: bool,
    /// Mode bits (octal).
    #[arg(short, long, default_value = "755")]
    mode: String,
    /// Directories.
    #[arg(required = true)]
    paths: Vec<String>,
}

/// `rm` arguments.
#[derive(Args, Debug)]
pub struct RmArgs {
    /// Remove directories and their contents.
    #[arg(short, long, conflicts_with = "replica")]
    recursive: bool,
    /// Drop only the replica on this host (like `gfrm -h`), never the
    /// last good copy; the file stays.
    #[arg(long, value_name = "HOST")]
    replica: Option<String>,
    /// Paths.
    #[arg(required = true)]
    paths: Vec<String>,
}

/// `mv` arguments.
#[derive(Args, Debug)]
pub struct MvArgs {
    /// Source.
    from: String,
    /// Target (an existing directory receives the source by name).
    to: String,
}

/// `chmod` arguments.
#[derive(Args, Debug)]
pub struct ChmodArgs {
    /// Octal mode, e.g. 600.
    mode: String,
    /// Path.
    path: String,
}

fn octal(s: &str) -> anyhow::Result<u32> {
    let v = u32::from_str_radix(s, 8).map_err(|_| anyhow::anyhow!("mode {s:?} is not an octal number like 644"))?;
    if v > 0o7777 {
        anyhow::bail!("mode {s} is out of range (at most 7777)");
    }
    Ok(v)
}

#[derive(Serialize)]
struct EntryView {
    name: String,
    #[serde(flatten)]
    attr: Option<AttrView>,
}

pub(crate) async fn ls(client: &Client, a: &LsArgs, json: bool) -> anyhow::Result<()> {
    let entries = client.list(&a.path).await?;
    if json {
        let v: Vec<EntryView> = entries
            .iter()
            .map(|e| EntryView { name: e.name.clone(), attr: e.attr.as_ref().map(AttrView::from) })
            .collect();
        return print_json(&v);
    }
    for e in &entries {
        match (&e.attr, a.long) {
            (Some(at), true) => println!(
                "{} {:>3} {:>6} {:>6} {:>12} {} {}",
                mode_string(at),
                at.nlink,
                at.uid,
                at.gid,
                at.size,
                short_time(at.mtime),
                e.name
            ),
            _ => println!("{}{}", e.name, if e.kind == fs_proto::FileKind::Directory { "/" } else { "" }),
        }
    }
    Ok(())
}

pub(crate) async fn stat(client: &Client, a: &StatArgs, json: bool) -> anyhow::Result<()> {
    let at = client.stat(&a.path).await?;
    let v = AttrView::from(&at);
    if json {
        return print_json(&v);
    }
    println!("  path: {}", crate::path::normalize(&a.path));
    println!("  kind: {}  mode: {} ({:o})  links: {}", kind_name(at.kind), mode_string(&at), at.perm, at.nlink);
    println!("  size: {}  uid: {}  gid: {}  inode: {}", at.size, at.uid, at.gid, at.ino);
    println!("  modify: {}  change: {}", v.mtime, v.ctime);
    println!("  generation: {}  blake3: {}", at.gen, v.blake3.as_deref().unwrap_or("-"));
    Ok(())
}

pub(crate) async fn mkdir(client: &Client, a: &MkdirArgs) -> anyhow::Result<()> {
    let mode = octal(&a.mode)?;
    for p in &a.paths {
        client.mkdir(p, a.parents, mode).await?;
    }
    Ok(())
}

pub(crate) async fn rm(client: &Client, a: &RmArgs) -> anyhow::Result<()> {
    for p in &a.paths {
        match &a.replica {
            Some(host) => {
                client.drop_replica(p, host).await?;
            }
            None => client.remove(p, a.recursive).await?,
        }
    }
    Ok(())
}

pub(crate) async fn mv(client: &Client, a: &MvArgs) -> anyhow::Result<()> {
    client.rename(&a.from, &a.to).await?;
    Ok(())
}

pub(crate) async fn chmod(client: &Client, a: &ChmodArgs) -> anyhow::Result<()> {
    client.chmod(&a.path, octal(&a.mode)?).await?;
    Ok(())
}
