//! `renkei put -r` through bundles: every directory that does not exist yet
//! and every file of the local tree becomes an entry of a bundle (inode
//! numbers leased from the meta server, bytes streamed to a file server at
//! our site, one commit per bundle), so a tree of small files costs a few
//! round trips instead of several per file. No directory lease is needed:
//! the meta server checks every entry, and a file whose name exists already
//! is replaced the ordinary way (a new generation).

use super::plan::{create_claims, Limits, Planner};
use super::ship::{ship, Outgoing, Source};
use crate::client::Client;
use crate::data::OnBytes;
use crate::error::ClientError;
use crate::path;
use fs_proto::bundle::{BundleEntry, InoRange, LeaseGrant, LeaseRequest, MAX_HELD_RANGES, MAX_INOS_PER_GRANT};
use fs_proto::meta::{MetaRequest, MetaResponse};
use fs_proto::{ErrorCode, FileKind, Ino, RemoteError, Timestamp};
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, ClientError>;

/// One thing to create remotely.
struct Job {
    remote: String,
    entry: BundleEntry,
    source: Option<Source>,
}

fn local_err(p: &Path, e: std::io::Error) -> ClientError {
    ClientError::Local { path: p.to_path_buf(), source: e }
}

/// The local tree: directories (parents first) and regular files, each
/// with its remote path and permission bits.
fn walk(
    dir: &Path,
    remote: &str,
    dirs: &mut Vec<(String, u32)>,
    files: &mut Vec<(PathBuf, String, u32, u64)>,
) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| local_err(dir, e))?
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| local_err(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let lp = e.path();
        let rp = path::join(remote, &name);
        let ft = e.file_type().map_err(|er| local_err(&lp, er))?;
        if ft.is_dir() {
            dirs.push((rp.clone(), 0o755));
            walk(&lp, &rp, dirs, files)?;
        } else if ft.is_file() {
            let md = e.metadata().map_err(|er| local_err(&lp, er))?;
            let perm = std::os::unix::fs::PermissionsExt::mode(&md.permissions()) & 0o777;
            files.push((lp, rp, perm, md.len()));
        }
    }
    Ok(())
}

/// Hands out leased inode numbers, asking for more when they run out.
struct Inos<'a> {
    client: &'a Client,
    ranges: Vec<InoRange>,
    /// Every range granted, as granted: the next capability must cover
    /// those whose numbers are still on their way.
    granted: Vec<InoRange>,
    grant: Option<LeaseGrant>,
}

impl Inos<'_> {
    async fn take(&mut self, want: u64) -> Result<Ino> {
        loop {
            if let Some(r) = self.ranges.last_mut() {
                if r.count > 0 {
                    let ino = r.first;
                    r.first += 1;
                    r.count -= 1;
                    return Ok(ino);
                }
                self.ranges.pop();
            }
            let req = LeaseRequest {
                dir: None,
                inos: want.clamp(1, MAX_INOS_PER_GRANT as u64) as u32,
                site: self.client.config().site.clone(),
                held: self.granted.iter().rev().take(MAX_HELD_RANGES).copied().collect(),
                also: Vec::new(),
            };
            let g = match self.client.meta().call_at("", MetaRequest::LeaseDir(req)).await? {
                MetaResponse::Lease(g) => g,
                other => return Err(ClientError::Unexpected(format!("{other:?}"))),
            };
            // The meta server leases no numbers to a user whose quota is
            // used up (files, or bytes).
            let r = g.inos.ok_or_else(|| ClientError::Remote {
                path: String::new(),
                error: fs_proto::RemoteError::new(
                    fs_proto::ErrorCode::QuotaExceeded,
                    "no new files may be created: your quota's files or bytes are used up (see `renkei quota`)",
                ),
            })?;
            self.ranges.push(r);
            self.granted.push(r);
            self.grant = Some(g);
        }
    }
}

/// Upload the local directory `local` into `root` through bundles.
/// Returns (files, bytes).
pub async fn put_tree(client: &Client, local: &Path, root: &str, on_bytes: OnBytes<'_>) -> Result<(u64, u64)> {
    let mut dirs = vec![(root.to_string(), 0o755)];
    let mut files = Vec::new();
    walk(local, root, &mut dirs, &mut files)?;
    let total = (dirs.len() + files.len()) as u64;
    let mut inos = Inos { client, ranges: Vec::new(), granted: Vec::new(), grant: None };
    let now = Timestamp::now();
    // Directories: existing ones by lookup (only below existing ones), new
    // ones as bundle entries.
    let mut dir_ino: HashMap<String, Ino> = HashMap::new();
    let mut fresh: HashMap<String, bool> = HashMap::new();
    let mut jobs: Vec<Job> = Vec::new();
    for (d, perm) in &dirs {
        let (parent, name) = if d == "/" { ("/".to_string(), String::new()) } else { path::split(d)? };
        let parent_fresh = fresh.get(&parent).copied().unwrap_or(false);
        let existing = if parent_fresh {
            None
        } else if d == "/" || !dir_ino.contains_key(&parent) {
            match client.stat(d).await {
                Ok(a) if a.kind == FileKind::Directory => Some(a.ino),
                Ok(_) => return Err(remote_err(d, ErrorCode::NotADirectory, "exists and is not a directory")),
                Err(e) if e.code() == Some(ErrorCode::NotFound) => None,
                Err(e) => return Err(e),
            }
        } else {
            match client.meta().lookup(dir_ino[&parent], &name).await {
                Ok(a) if a.kind == FileKind::Directory => Some(a.ino),
                Ok(_) => return Err(remote_err(d, ErrorCode::NotADirectory, "exists and is not a directory")),
                Err(e) if e.code() == Some(ErrorCode::NotFound) => None,
                Err(e) => return Err(e),
            }
        };
        if let Some(ino) = existing {
            dir_ino.insert(d.clone(), ino);
            fresh.insert(d.clone(), false);
            continue;
        }
        let pino = match dir_ino.get(&parent) {
            Some(p) => *p,
            None => client.stat(&parent).await?.ino,
        };
        let ino = inos.take(total).await?;
        dir_ino.insert(d.clone(), ino);
        fresh.insert(d.clone(), true);
        jobs.push(Job {
            remote: d.clone(),
            entry: entry(pino, &name, ino, FileKind::Directory, *perm, 0, now),
            source: None,
        });
    }
    let nfiles = files.len() as u64;
    let bytes: u64 = files.iter().map(|f| f.3).sum();
    for (lp, rp, perm, size) in files {
        let (parent, name) = path::split(&rp)?;
        let pino = *dir_ino.get(&parent).ok_or_else(|| ClientError::Unexpected(format!("no inode for {parent}")))?;
        let ino = inos.take(total).await?;
        let source = (size > 0).then(|| Source::Path(lp.clone()));
        jobs.push(Job { remote: rp, entry: entry(pino, &name, ino, FileKind::Regular, perm, size, now), source });
    }
    let Some(grant) = inos.grant.clone() else { return Ok((nfiles, bytes)) };
    send_all(client, &grant, jobs, on_bytes).await?;
    Ok((nfiles, bytes))
}

fn entry(parent: Ino, name: &str, ino: Ino, kind: FileKind, perm: u32, size: u64, now: Timestamp) -> BundleEntry {
    BundleEntry {
        parent,
        name: name.to_string(),
        ino,
        kind,
        perm,
        atime: now,
        mtime: now,
        ctime: now,
        size,
        target: None,
        uid: None,
        gid: None,
    }
}

fn remote_err(p: &str, code: ErrorCode, msg: &str) -> ClientError {
    ClientError::Remote { path: p.to_string(), error: RemoteError::new(code, msg) }
}

/// Plan, ship and check every job; a file whose name exists is put again
/// the ordinary way.
async fn send_all(client: &Client, grant: &LeaseGrant, jobs: Vec<Job>, on_bytes: OnBytes<'_>) -> Result<()> {
    let limits = Limits { max_inflight: client.config().parallel.clamp(1, 8), ..Limits::default() };
    let mut planner = Planner::new(limits);
    let t0 = Instant::now();
    let mut by_ino: HashMap<Ino, Job> = HashMap::new();
    for j in jobs {
        planner.add(j.entry.ino, create_claims(j.entry.parent, j.entry.ino), j.entry.size, t0);
        by_ino.insert(j.entry.ino, j);
    }
    planner.hurry_all();
    let bound = Duration::from_millis(client.config().meta_timeout_ms) * 2;
    let mut inflight = FuturesUnordered::new();
    let mut retry: Vec<Job> = Vec::new();
    let mut first_err: Option<ClientError> = None;
    loop {
        for (id, items) in planner.poll(Instant::now()).send {
            let out: Vec<Outgoing> = items
                .iter()
                .filter_map(|i| by_ino.get(i))
                .map(|j| Outgoing::create(j.entry.clone(), j.source.clone()))
                .collect();
            let bytes: u64 = out.iter().map(|o| o.op.data_len()).sum();
            let b = bound + Duration::from_secs(bytes / (4 << 20));
            let (dialer, counters) = (client.data().dialer().clone(), client.counters().clone());
            inflight.push(async move {
                let r = ship(&dialer, &grant.target, &grant.cap, &out, &counters, b).await;
                (id, items, r)
            });
        }
        let Some((id, items, r)) = inflight.next().await else { break };
        planner.done(id);
        match r {
            Err(e) => {
                first_err.get_or_insert(e);
            }
            Ok(results) => {
                for (ino, res) in items.iter().zip(results) {
                    let Some(job) = by_ino.remove(ino) else { continue };
                    match res {
                        Ok(_) => on_bytes(job.entry.size),
                        Err(e) if e.code == ErrorCode::Exists && job.entry.kind == FileKind::Regular => retry.push(job),
                        Err(e) if e.code == ErrorCode::Exists => {}
                        Err(e) => {
                            first_err.get_or_insert(ClientError::Remote { path: job.remote.clone(), error: e });
                        }
                    }
                }
                // Fault tests: `put -r` dies with a bundle committed and
                // others on their way.
                fs_proto::process::crash_point("client.put_tree.committed");
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    for job in retry {
        let Some(Source::Path(lp)) = &job.source else {
            client.put_bytes(&[], &job.remote).await?;
            continue;
        };
        let a = client.put_file(lp, &job.remote, &|_| {}).await?;
        on_bytes(a.size);
    }
    Ok(())
}
