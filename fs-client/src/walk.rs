//! Walking remote trees: every regular file under some paths, with inode
//! and size, using readdir-plus (one round trip per directory page).

use crate::error::ClientError;
use crate::{path, Client};
use fs_proto::{FileKind, Ino};
use std::collections::HashSet;

/// A regular file found by a walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// Inode.
    pub ino: Ino,
    /// Path it was found at (the first, for hard links).
    pub path: String,
    /// Size.
    pub size: u64,
}

/// Every regular file at or under `paths` (directories recursively,
/// symlinks not followed), each inode once, in walk order; and the
/// directories below `paths` the caller may not read (skipped: another
/// user's private directory is not the caller's to check or copy). A path
/// given that cannot be read is an error.
pub async fn regular_files(client: &Client, paths: &[String]) -> Result<(Vec<RemoteFile>, Vec<String>), ClientError> {
    let mut out = Vec::new();
    let mut unreadable = Vec::new();
    let mut seen: HashSet<Ino> = HashSet::new();
    for p in paths {
        let root = path::normalize(p);
        let attr = client.stat(&root).await?;
        match attr.kind {
            FileKind::Regular if seen.insert(attr.ino) => {
                out.push(RemoteFile { ino: attr.ino, path: root, size: attr.size });
            }
            FileKind::Directory => {
                let top = attr.ino;
                let mut stack = vec![(attr.ino, root)];
                while let Some((dir, dpath)) = stack.pop() {
                    let entries = match client.meta().readdir_all(dir, true).await {
                        Ok(e) => e,
                        Err(e) if dir != top && e.errno() == libc::EACCES => {
                            unreadable.push(dpath);
                            continue;
                        }
                        Err(e) => return Err(at(&dpath, e)),
                    };
                    for e in entries {
                        let child = path::join(&dpath, &e.name);
                        match e.kind {
                            FileKind::Directory => stack.push((e.ino, child)),
                            FileKind::Regular if seen.insert(e.ino) => {
                                let size = e.attr.as_ref().map(|a| a.size).unwrap_or(0);
                                out.push(RemoteFile { ino: e.ino, path: child, size });
                            }
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok((out, unreadable))
}

fn at(p: &str, e: ClientError) -> ClientError {
    match e {
        ClientError::Remote { path, error } if path.is_empty() || !path.starts_with('/') => {
            ClientError::Remote { path: p.to_string(), error }
        }
        other => other,
    }
}
