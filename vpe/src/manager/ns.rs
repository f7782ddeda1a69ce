//! The manager's view of the namespace: small typed helpers over
//! [`fs_client::Client`] (acting with the manager's host certificate, which
//! the meta server treats as root), answering with wire errors.

use fs_client::{Client, ClientError};
use fs_proto::meta::{RenameFlags, SetAttr};
use fs_proto::{Attr, DirEntry, ErrorCode, Ino, RemoteError};

/// A client error as the error a user or agent reads.
pub fn remote(e: ClientError) -> RemoteError {
    match e.code() {
        Some(code) => RemoteError::new(code, e.to_string()),
        None => match e {
            ClientError::Integrity(m) => RemoteError::new(ErrorCode::Corrupt, m),
            ClientError::Call(c) if c.is_unreachable() => {
                RemoteError::new(ErrorCode::Unavailable, format!("namespace unreachable: {c}"))
            }
            other => RemoteError::new(ErrorCode::Internal, other.to_string()),
        },
    }
}

/// The namespace through the manager's client.
#[derive(Clone)]
pub struct Ns {
    client: Client,
}

type R<T> = Result<T, RemoteError>;

impl Ns {
    /// Wraps a connected client.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Attributes of `path` (of a symbolic link itself: the namespace
    /// follows none); `None` if it does not exist.
    pub async fn stat(&self, path: &str) -> R<Option<Attr>> {
        match self.client.stat(path).await {
            Ok(a) => Ok(Some(a)),
            Err(e) if e.code() == Some(ErrorCode::NotFound) => Ok(None),
            Err(e) => Err(remote(e)),
        }
    }

    /// The contents of a small file; `None` if it does not exist.
    pub async fn read(&self, path: &str) -> R<Option<Vec<u8>>> {
        match self.client.get_bytes(path).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.code() == Some(ErrorCode::NotFound) => Ok(None),
            Err(e) => Err(remote(e)),
        }
    }

    /// Creates or replaces a small file.
    pub async fn write(&self, path: &str, bytes: &[u8], perm: u32) -> R<()> {
        let mut src = bytes;
        self.client.put_reader(&mut src, path, perm, &|_| {}).await.map_err(remote)?;
        Ok(())
    }

    /// Creates a directory and its parents; sets `perm` on the last one.
    pub async fn mkdir_p(&self, path: &str, perm: u32) -> R<()> {
        self.client.mkdir(path, true, 0o755).await.map_err(remote)?;
        self.chmod(path, perm).await
    }

    /// Sets permission bits.
    pub async fn chmod(&self, path: &str, perm: u32) -> R<()> {
        self.client.chmod(path, perm).await.map_err(remote)?;
        Ok(())
    }

    /// Gives `path` to root (uid and gid 0) with permission bits `perm`.
    pub async fn own(&self, path: &str, perm: u32) -> R<Attr> {
        let attr = self.client.stat(path).await.map_err(remote)?;
        let set = SetAttr { uid: Some(0), gid: Some(0), perm: Some(perm), ..SetAttr::default() };
        self.client.meta().setattr(attr.ino, set).await.map_err(remote)
    }

    /// Sets the attributes of inode `ino`.
    pub async fn setattr(&self, ino: Ino, set: SetAttr) -> R<Attr> {
        self.client.meta().setattr(ino, set).await.map_err(remote)
    }

    /// Gives inode `ino` to root (uid and gid 0) with permission bits `perm`.
    pub async fn own_ino(&self, ino: Ino, perm: u32) -> R<Attr> {
        self.setattr(ino, SetAttr { uid: Some(0), gid: Some(0), perm: Some(perm), ..SetAttr::default() }).await
    }

    /// Entries of a directory (with attributes); empty if it does not exist.
    pub async fn list(&self, path: &str) -> R<Vec<DirEntry>> {
        match self.client.list(path).await {
            Ok(e) => Ok(e),
            Err(e) if e.code() == Some(ErrorCode::NotFound) => Ok(Vec::new()),
            Err(e) => Err(remote(e)),
        }
    }

    /// Renames (moves) `from` to exactly `to`, atomically refused with
    /// `Exists` if `to` exists. Whatever is named `from` at that moment
    /// moves (a symbolic link itself, not what it points to).
    pub async fn rename(&self, from: &str, to: &str) -> R<()> {
        let split = |p: &str| fs_client::path::split(p).map_err(remote);
        let ((sp, sn), (tp, tn)) = (split(from)?, split(to)?);
        let spa = self.client.stat(&sp).await.map_err(remote)?;
        let tpa = self.client.stat(&tp).await.map_err(remote)?;
        let flags = RenameFlags { noreplace: true, ..RenameFlags::default() };
        match self.client.meta().rename(spa.ino, &sn, tpa.ino, &tn, flags).await {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some(ErrorCode::Exists) => {
                Err(RemoteError::new(ErrorCode::Exists, format!("{to} exists")))
            }
            Err(e) => {
                let e = remote(e);
                Err(RemoteError::new(e.code, format!("moving {from} to {to}: {}", e.message)))
            }
        }
    }

    /// Removes a file or a whole tree (absent is fine).
    pub async fn remove_tree(&self, path: &str) -> R<()> {
        match self.client.remove(path, true).await {
            Ok(()) => Ok(()),
            Err(e) if e.code() == Some(ErrorCode::NotFound) => Ok(()),
            Err(e) => Err(remote(e)),
        }
    }
}
