//! The sled store: the embedded database the meta server always had (also
//! the local mirror of the etcd store).

use super::{Batch, StoreError};
use std::path::Path;

/// Open the durable database in `dir`.
pub(super) fn open(dir: &Path) -> Result<sled::Db, StoreError> {
    Ok(sled::Config::new().path(dir).flush_every_ms(Some(200)).open()?)
}

/// A database removed when dropped.
pub(super) fn temporary() -> Result<sled::Db, StoreError> {
    Ok(sled::Config::new().temporary(true).open()?)
}

/// The same writes as one sled batch.
pub(super) fn batch(b: &Batch) -> sled::Batch {
    let mut out = sled::Batch::default();
    for (k, v) in &b.writes {
        match v {
            Some(v) => out.insert(k.as_slice(), v.as_slice()),
            None => out.remove(k.as_slice()),
        }
    }
    out
}
