//! Committing a bundle a file server forwards (see [`fs_proto::bundle`]):
//! check the client's bundle capability, create the entries as its
//! principal in one transaction ([`crate::namespace::Namespace::commit_bundle`]),
//! and hand directories it created to the holder of the capability's leases.

use crate::perm::Caller;
use crate::service::MetaService;
use fs_proto::bundle::{BundleCommit, EntryResult};
use fs_proto::{Access, CapabilityVerifier, ErrorCode, FileKind, Identity, Ino, RemoteError, Role};
use std::collections::HashSet;

/// Most entries one bundle may carry.
pub const MAX_ENTRIES: usize = 16_384;

/// Commit `b`, forwarded by the file server `id`.
pub fn commit(svc: &MetaService, id: &Identity, b: BundleCommit) -> Result<Vec<EntryResult>, RemoteError> {
    if id.role != Role::Host {
        return Err(RemoteError::new(ErrorCode::NotPermitted, "bundles are committed by file servers"));
    }
    if b.entries.len() > MAX_ENTRIES {
        return Err(RemoteError::new(ErrorCode::TooLarge, format!("more than {MAX_ENTRIES} entries in one bundle")));
    }
    let cap = CapabilityVerifier::new(svc.signer.public_key().to_vec()).check_signature(&b.cap)?;
    if cap.access != Access::Bundle {
        return Err(RemoteError::new(ErrorCode::BadCapability, "not a bundle capability"));
    }
    let user = svc.users.get_or_register(&cap.principal)?;
    let caller = Caller { name: cap.principal.clone(), uid: user.uid, gid: user.gid, groups: user.groups };
    // The inode-number rule for the principal: entries in a directory it
    // cannot reach by path fail (each alone).
    let new: HashSet<Ino> = b.entries.iter().map(|e| e.entry.ino).collect();
    let mut denied = HashSet::new();
    for p in b.entries.iter().map(|e| e.entry.parent).filter(|p| !new.contains(p)) {
        if !denied.contains(&p) && svc.ns.check_reachable(&caller, p).is_err() {
            denied.insert(p);
        }
    }
    let results = svc.ns.commit_bundle(&caller, &id.name, &b.entries, &denied)?;
    let mut wrote = false;
    for (e, r) in b.entries.iter().zip(&results) {
        if let Ok(a) = r {
            match a.kind {
                FileKind::Directory => svc.dirleases.adopt(cap.gen, a.ino),
                FileKind::Regular if a.gen > 0 => wrote = true,
                _ => {}
            }
        } else if let Err(err) = r {
            tracing::debug!(parent = e.entry.parent, name = %e.entry.name, "bundle entry refused: {err}");
        }
    }
    if wrote {
        // New generations: their copy counts may want more replicas.
        svc.replication.nudge();
    }
    tracing::debug!(host = %id.name, principal = %cap.principal, entries = results.len(), "bundle committed");
    Ok(results)
}
