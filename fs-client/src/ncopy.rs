//! Copy counts: `renkei ncopy N PATH` (a file's or directory's wanted
//! number of replicas; new files inherit their directory's) and the meta
//! server's replication backlog (`renkei ncopy --status`).

use crate::error::ClientError;
use crate::{path, Client};
use fs_proto::meta::{MetaRequest, MetaResponse};
use fs_proto::replication::ReplicationStatus;
use fs_proto::{Attr, FileKind};

type Result<T> = std::result::Result<T, ClientError>;

impl Client {
    /// Set the copy count of `p` (and, with `recursive`, of everything
    /// under it). Returns how many files and directories were changed.
    pub async fn set_ncopy(&self, p: &str, ncopy: u32, recursive: bool) -> Result<u64> {
        let root = path::normalize(p);
        let attr = self.stat(&root).await?;
        let mut n = 0;
        let mut stack = vec![(attr, root)];
        while let Some((a, shown)) = stack.pop() {
            self.set_ncopy_ino(&a, &shown, ncopy).await?;
            n += 1;
            if recursive && a.kind == FileKind::Directory {
                for e in self.meta().readdir_all(a.ino, true).await? {
                    if let (Some(child), FileKind::Directory | FileKind::Regular) = (e.attr, e.kind) {
                        stack.push((child, path::join(&shown, &e.name)));
                    }
                }
            }
        }
        Ok(n)
    }

    async fn set_ncopy_ino(&self, a: &Attr, shown: &str, ncopy: u32) -> Result<Attr> {
        match self.meta().call_at(shown, MetaRequest::SetNcopy { ino: a.ino, ncopy }).await? {
            MetaResponse::Attr(a) => Ok(a),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The meta server's background replication: backlog and counters.
    pub async fn replication_status(&self) -> Result<ReplicationStatus> {
        match self.meta().call_at("", MetaRequest::ReplicationStatus).await? {
            MetaResponse::ReplicationStatus(s) => Ok(s),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}
