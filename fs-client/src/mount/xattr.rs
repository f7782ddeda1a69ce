//! Extended attributes (cached under the inode's lease, absent ones too)
//! and file system statistics.
//!
//! The `system.` namespace (POSIX ACLs) and LSM labels are not kept (see
//! [`unsupported`]): the mount answers `EOPNOTSUPP` locally, which also
//! makes `ls -l` stop probing for them after the first entry. A name the
//! inode's cached xattr list (from `listxattr`, or from readdir-plus, under
//! the same lease as the attributes) does not hold is answered `ENODATA`
//! locally, without a round trip. The meta server would answer the same to
//! any caller: absent `security.` and
//! `trusted.` names need no permission, and for `user.` the kernel has
//! checked read permission already (`default_permissions`).

use super::cache::Cache;
use super::fs::{errno, unexpected, Inner, Op};
use fs_proto::meta::{MetaRequest, MetaResponse, StatFs, XattrFlags};
use fs_proto::{Cred, ErrorCode, Ino};
use fuser::Errno;

impl Inner {
    /// Read an extended attribute.
    pub async fn getxattr(&self, cred: Option<&Cred>, ino: Ino, name: &str) -> Op<Vec<u8>> {
        if unsupported(name) {
            return Err(Errno::EOPNOTSUPP);
        }
        if self.bundler.with(|l| l.is_bare(ino)) {
            // An entry made here (under a lease still held) has no xattrs.
            return Err(Errno::NO_XATTR);
        }
        // Values are cached only for the certificate's own user: another
        // caller may not be allowed to read them.
        if cred.is_none() {
            if let Some((v, _)) = self.cache.xattr(ino, name) {
                return v.ok_or(Errno::NO_XATTR);
            }
        }
        if absent(&self.cache, ino, name) {
            return Err(Errno::NO_XATTR);
        }
        match self.remote.call_t(cred, MetaRequest::GetXattr { ino, name: name.to_string() }).await {
            (Ok(MetaResponse::Xattr(v)), t) => {
                if cred.is_none() {
                    self.cache.put_xattr(t, ino, name, Some(v.clone()));
                }
                Ok(v)
            }
            (Ok(other), _) => Err(unexpected(other)),
            (Err(e), t) => {
                if e.code() == Some(ErrorCode::NoAttr) && cred.is_none() {
                    self.cache.put_xattr(t, ino, name, None);
                }
                Err(errno(&e))
            }
        }
    }

    /// List extended attribute names, as the NUL-separated list FUSE wants.
    pub async fn listxattr(&self, cred: Option<&Cred>, ino: Ino) -> Op<Vec<u8>> {
        if self.bundler.with(|l| l.is_bare(ino)) {
            return Ok(Vec::new());
        }
        let names = match self.cache.xattr_list(ino) {
            Some((n, _)) => n,
            None => match self.call(cred, MetaRequest::ListXattr { ino }).await? {
                (MetaResponse::XattrNames(n), t) => {
                    self.cache.put_xattr_list(t, ino, &n);
                    n
                }
                (other, _) => return Err(unexpected(other)),
            },
        };
        let mut out = Vec::new();
        for n in names.iter().filter(|n| !unsupported(n)) {
            out.extend_from_slice(n.as_bytes());
            out.push(0);
        }
        Ok(out)
    }

    /// Set an extended attribute (`flags`: XATTR_CREATE / XATTR_REPLACE).
    pub async fn setxattr(&self, cred: Option<&Cred>, ino: Ino, name: &str, value: &[u8], flags: i32) -> Op<()> {
        if unsupported(name) {
            return Err(Errno::EOPNOTSUPP);
        }
        let flags = XattrFlags { create: flags & libc::XATTR_CREATE != 0, replace: flags & libc::XATTR_REPLACE != 0 };
        let req = MetaRequest::SetXattr { ino, name: name.to_string(), value: value.to_vec(), flags };
        let r = self.call(cred, req).await;
        self.bundler.with(|l| l.bare.remove(&ino));
        self.cache.forget_attr(ino);
        match r? {
            (MetaResponse::Done, _) => Ok(()),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Remove an extended attribute.
    pub async fn removexattr(&self, cred: Option<&Cred>, ino: Ino, name: &str) -> Op<()> {
        if unsupported(name) {
            return Err(Errno::EOPNOTSUPP);
        }
        let r = self.call(cred, MetaRequest::RemoveXattr { ino, name: name.to_string() }).await;
        self.cache.forget_attr(ino);
        match r? {
            (MetaResponse::Done, _) => Ok(()),
            (other, _) => Err(unexpected(other)),
        }
    }

    /// Capacity totals of the live file servers.
    pub async fn statfs(&self) -> Op<StatFs> {
        match self.call(None, MetaRequest::StatFs).await? {
            (MetaResponse::StatFs(s), _) => Ok(s),
            (other, _) => Err(unexpected(other)),
        }
    }
}

/// Names the mount does not keep, answered `EOPNOTSUPP` locally: the
/// `system.` namespace (POSIX ACLs), and LSM labels (`security.selinux`,
/// `security.SMACK64*`, `security.apparmor`), which are one host's policy
/// and mean nothing at another institution's site; the kernel labels FUSE
/// mounts by policy (genfs), as it does NFS without labelled NFS.
/// `security.capability` is kept. `ls -l` probes every entry for
/// `security.selinux` and `system.posix_acl_access` and stops probing a
/// file system that answers "not supported" once, so a listing costs
/// no FUSE request per entry for them.
fn unsupported(name: &str) -> bool {
    name.starts_with("system.")
        || name == "security.selinux"
        || name.starts_with("security.SMACK64")
        || name == "security.apparmor"
}

/// Whether `name` is known not to exist on `ino`: the inode's xattr names
/// are cached and do not hold it (namespaces the meta server serves only).
fn absent(cache: &Cache, ino: Ino, name: &str) -> bool {
    let served = ["user.", "trusted.", "security."].iter().any(|p| name.starts_with(p));
    served && cache.xattr_list(ino).is_some_and(|(names, _)| !names.iter().any(|n| n == name))
}
