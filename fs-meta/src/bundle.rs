//! Committing a bundle a file server forwards (see [`fs_proto::bundle`]):
//! check the client's bundle capability, apply its operations as its
//! principal in one transaction ([`crate::namespace::Namespace::commit_bundle`]),
//! and hand directories it created to the holder of the capability's leases.

use crate::perm::Caller;
use crate::service::MetaService;
use fs_proto::bundle::{BundleCommit, BundleOp, EntryResult};
use fs_proto::meta::MetaRequest;
use fs_proto::{Access, CapabilityVerifier, ErrorCode, FileKind, Identity, RemoteError, Role};
use std::collections::HashSet;

/// Most operations one bundle may carry.
pub const MAX_ENTRIES: usize = 16_384;

/// Commit `b`, forwarded by the file server `id`.
pub fn commit(svc: &MetaService, id: &Identity, b: BundleCommit) -> Result<Vec<EntryResult>, RemoteError> {
    svc.users.file_server(id, "committing bundles")?;
    if b.ops.len() > MAX_ENTRIES {
        return Err(RemoteError::new(ErrorCode::TooLarge, format!("more than {MAX_ENTRIES} operations in one bundle")));
    }
    let cap = CapabilityVerifier::new(svc.signer.public_key().to_vec()).check_signature(&b.cap)?;
    if cap.access != Access::Bundle {
        return Err(RemoteError::new(ErrorCode::BadCapability, "not a bundle capability"));
    }
    if cap.principal.role != Role::User {
        return Err(RemoteError::new(
            ErrorCode::BadCapability,
            format!("a bundle capability acts for a user, not for {}", cap.principal),
        ));
    }
    let user = svc.users.get_or_register(&cap.principal.name)?;
    let caller = Caller { name: cap.principal.name.clone(), uid: user.uid, gid: user.gid, groups: user.groups };
    // The inode-number rule for the principal: an operation naming an inode
    // it cannot reach by path fails (each alone).
    let req = MetaRequest::CommitBundle(b);
    let mut denied = HashSet::new();
    for ino in req.named_inos() {
        // (An inode that does not exist is the operation's own error.)
        if matches!(svc.ns.check_reachable(&caller, ino), Err(e) if e.code == ErrorCode::PermissionDenied) {
            denied.insert(ino);
        }
    }
    let MetaRequest::CommitBundle(b) = req else { unreachable!("built above") };
    let results = svc.ns.commit_bundle(&caller, &id.name, &b.ops, &denied)?;
    let mut wrote = Vec::new();
    for (o, r) in b.ops.iter().zip(&results) {
        match (&o.op, r) {
            (BundleOp::Create(_), Ok(a)) => match a.kind {
                FileKind::Directory => svc.dirleases.adopt(cap.gen, a.ino),
                FileKind::Regular if a.gen > 0 => wrote.push(a.ino),
                _ => {}
            },
            (_, Ok(_)) => {}
            (op, Err(err)) => tracing::debug!(?op, "bundle operation refused: {err}"),
        }
    }
    if !wrote.is_empty() {
        // New generations: their copy counts may want more replicas.
        svc.replication.nudge_files(wrote);
    }
    tracing::debug!(host = %id.name, principal = %cap.principal, entries = results.len(), "bundle committed");
    Ok(results)
}
