//! What the attacks share: leases and raw bundles.

use fs_client::Client;
use fs_proto::bundle::{BundleEntry, LeaseGrant, LeaseRequest};
use fs_proto::meta::{MetaRequest, MetaResponse};
use fs_proto::{FileKind, Ino, Timestamp};

/// `LeaseDir` as `c` (no directory: inode numbers and a bundle capability).
pub async fn lease(c: &Client, dir: Option<Ino>, inos: u32) -> LeaseGrant {
    let req = LeaseRequest { dir, inos, site: c.config().site.clone(), held: Vec::new(), also: Vec::new() };
    match c.meta().call(MetaRequest::LeaseDir(req)).await.expect("lease") {
        MetaResponse::Lease(g) => g,
        other => panic!("unexpected {other:?}"),
    }
}

/// A bundle entry for a regular file of `size` bytes.
pub fn file_entry(parent: Ino, name: &str, ino: Ino, size: u64) -> BundleEntry {
    let now = Timestamp::now();
    BundleEntry {
        parent,
        name: name.into(),
        ino,
        kind: FileKind::Regular,
        perm: 0o644,
        atime: now,
        mtime: now,
        ctime: now,
        size,
        target: None,
        uid: None,
        gid: None,
    }
}
