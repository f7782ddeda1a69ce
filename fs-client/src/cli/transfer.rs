//! `renkei put` and `renkei get`.

use super::output::{byte_progress, print_json};
use crate::Client;
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `put` arguments.
#[derive(Args, Debug)]
pub struct PutArgs {
    /// Upload a directory tree.
    #[arg(short, long)]
    recursive: bool,
    /// Local file or directory.
    local: PathBuf,
    /// Remote path (an existing remote directory receives the file by name).
    remote: String,
}

/// `get` arguments.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// Download a directory tree.
    #[arg(short, long)]
    recursive: bool,
    /// Remote file or directory.
    remote: String,
    /// Local path (an existing local directory receives the file by name).
    local: PathBuf,
}

fn local_size(p: &Path) -> u64 {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => m.len(),
        Ok(m) if m.is_dir() => {
            std::fs::read_dir(p).map(|rd| rd.filter_map(Result::ok).map(|e| local_size(&e.path())).sum()).unwrap_or(0)
        }
        _ => 0,
    }
}

fn report(json: bool, verb: &str, files: u64, bytes: u64, started: Instant) -> anyhow::Result<()> {
    let secs = started.elapsed().as_secs_f64();
    if json {
        print_json(
            &serde_json::json!({"files": files, "bytes": bytes, "seconds": secs, "bytes_per_second": bytes as f64 / secs.max(1e-9)}),
        )
    } else {
        eprintln!(
            "{verb} {files} file(s), {} in {secs:.2} s ({}/s)",
            indicatif::HumanBytes(bytes),
            indicatif::HumanBytes((bytes as f64 / secs.max(1e-9)) as u64)
        );
        Ok(())
    }
}

pub(crate) async fn put(client: &Client, a: &PutArgs, json: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let is_dir = std::fs::metadata(&a.local).map(|m| m.is_dir()).unwrap_or(false);
    if is_dir && !a.recursive {
        anyhow::bail!("{} is a directory (use -r)", a.local.display());
    }
    let mut remote = a.remote.clone();
    if let Ok(attr) = client.stat(&remote).await {
        if attr.kind == fs_proto::FileKind::Directory {
            let name = a.local.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            remote = crate::path::join(&crate::path::normalize(&remote), &name);
        }
    }
    let pb = byte_progress(local_size(&a.local), "put");
    let tick = |n: u64| pb.inc(n);
    let (files, bytes) = if is_dir {
        client.put_tree(&a.local, &remote, &tick).await?
    } else {
        let attr = client.put_file(&a.local, &remote, &tick).await?;
        (1, attr.size)
    };
    pb.finish_and_clear();
    report(json, "put", files, bytes, started)
}

pub(crate) async fn get(client: &Client, a: &GetArgs, json: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    let attr = client.stat(&a.remote).await?;
    let is_dir = attr.kind == fs_proto::FileKind::Directory;
    if is_dir && !a.recursive {
        anyhow::bail!("{} is a directory (use -r)", a.remote);
    }
    let mut local = a.local.clone();
    if local.is_dir() {
        let (_, name) = crate::path::split(&a.remote).unwrap_or_else(|_| (String::new(), "root".into()));
        local = local.join(name);
    }
    let pb = byte_progress(if is_dir { 0 } else { attr.size }, "get");
    let tick = |n: u64| pb.inc(n);
    let (files, bytes) = if is_dir {
        client.get_tree(&a.remote, &local, &tick).await?
    } else {
        (1, client.get_file(&a.remote, &local, &tick).await?)
    };
    pb.finish_and_clear();
    report(json, "got", files, bytes, started)
}
