//! The store: the ordered key-value engine under the namespace, hosts and
//! users. Everything fs-meta persists goes through this module.
//!
//! # Interface
//! A [`Store`] holds named [`Tree`]s. A tree answers point reads
//! ([`Tree::get`]) and ordered scans ([`Tree::range`], [`Tree::scan_prefix`],
//! [`Tree::iter`]; double-ended) and takes writes as single keys or as one
//! atomic [`Batch`] ([`Tree::apply_batch`]). A write is visible to readers
//! at once; it is durable once [`Store::flush`] returns, which the meta
//! server does once per mutating request (concurrent requests share it).
//! Transactions ([`crate::txn::Txn`]) are serialised by the namespace lock,
//! so a batch never conflicts and never needs a retry.
//!
//! # Kinds (`[store] kind` in the configuration)
//! - `sled` (default): the embedded database in `db`, as always.
//! - `etcd`: a replicated etcd cluster. This process is its prefix's only
//!   writer (fenced, see [`etcd`]), so every read is answered by a local
//!   mirror (an in-process sled tree loaded from etcd at start) and every
//!   batch is sent to etcd as one Txn, in order, by a writer thread; a flush
//!   waits until etcd acknowledged every batch applied so far. A backend
//!   whose reads must go to the engine (TiKV, FoundationDB) would answer
//!   [`Tree`]'s reads itself; the interface takes owned keys and yields
//!   [`Bytes`] so nothing here depends on the mirror.

pub mod etcd;
mod sled_store;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::Arc;

/// A stored key or value (cheap to clone, inline when small).
pub type Bytes = sled::IVec;

/// A key and its value.
pub type Entry = (Bytes, Bytes);

/// Failure of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The local sled database (the store itself, or etcd's mirror) failed.
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    /// etcd could not be reached or refused a request.
    #[error("etcd: {0}")]
    Etcd(String),
    /// A transaction larger than the engine accepts in one atomic commit.
    #[error("transaction too large for one etcd commit: {0}")]
    TooLarge(String),
    /// The store stopped taking writes (another meta server took over the
    /// etcd prefix, or etcd refused a commit for good).
    #[error("store failed, no more writes: {0}")]
    Failed(String),
}

/// `[store]` in the meta server's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Which engine holds the metadata.
    #[serde(default)]
    pub kind: StoreKind,
    /// etcd client URLs (`http://host:2379`), any member of the cluster;
    /// required for `kind = "etcd"`.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Prefix of every etcd key this federation uses.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Most puts and deletes one transaction may hold: etcd's
    /// `--max-txn-ops` (default 128; a bundle of many files needs more, so
    /// start etcd with a larger value and set the same here). A larger
    /// transaction is refused whole, never split.
    #[serde(default = "default_max_txn_ops")]
    pub max_txn_ops: usize,
    /// Most bytes (keys and values) one transaction may hold: below etcd's
    /// `--max-request-bytes` (default 1.5 MiB), leaving room for framing.
    #[serde(default = "default_max_txn_bytes")]
    pub max_txn_bytes: usize,
    /// How long (ms) a flush waits for etcd to acknowledge before the
    /// request fails (the write stays queued and is committed when etcd
    /// answers again).
    #[serde(default = "default_commit_timeout_ms")]
    pub commit_timeout_ms: u64,
    /// Time to live (s) of the leader's etcd lease: several meta servers on
    /// one prefix elect a leader (only it serves); when the leader dies its
    /// lease lapses after at most this long and a standby takes over. A
    /// leader that cannot renew its lease for this long stops serving.
    #[serde(default = "default_leader_ttl_secs")]
    pub leader_ttl_secs: u64,
}

/// The engine behind the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Embedded sled database in the `db` directory.
    #[default]
    Sled,
    /// A replicated etcd cluster.
    Etcd,
}

fn default_prefix() -> String {
    "renkei/".into()
}
fn default_max_txn_ops() -> usize {
    128
}
fn default_max_txn_bytes() -> usize {
    1_400_000
}
fn default_commit_timeout_ms() -> u64 {
    10_000
}
fn default_leader_ttl_secs() -> u64 {
    3
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Sled,
            endpoints: Vec::new(),
            prefix: default_prefix(),
            max_txn_ops: default_max_txn_ops(),
            max_txn_bytes: default_max_txn_bytes(),
            commit_timeout_ms: default_commit_timeout_ms(),
            leader_ttl_secs: default_leader_ttl_secs(),
        }
    }
}

impl StoreConfig {
    /// Whether the settings make sense (checked by `renkei config check`
    /// and at start).
    pub fn validate(&self) -> Result<(), String> {
        match self.kind {
            StoreKind::Sled if !self.endpoints.is_empty() => {
                Err("[store] endpoints are for kind = \"etcd\"; this store is sled".into())
            }
            StoreKind::Sled => Ok(()),
            StoreKind::Etcd if self.endpoints.is_empty() => {
                Err("[store] kind = \"etcd\" needs endpoints = [\"http://HOST:2379\", ...]".into())
            }
            StoreKind::Etcd if self.prefix.is_empty() => Err("[store] prefix must not be empty".into()),
            StoreKind::Etcd if self.max_txn_ops == 0 || self.max_txn_bytes == 0 => {
                Err("[store] max_txn_ops and max_txn_bytes must be positive".into())
            }
            StoreKind::Etcd if !(2..=60).contains(&self.leader_ttl_secs) => {
                Err("[store] leader_ttl_secs must be between 2 and 60".into())
            }
            StoreKind::Etcd => Ok(()),
        }
    }
}

/// The opened store (cheap to clone).
#[derive(Clone)]
pub struct Store {
    /// The sled database: the store itself, or etcd's local mirror.
    db: sled::Db,
    /// etcd's side, for the etcd store.
    remote: Option<Arc<etcd::Remote>>,
}

impl Store {
    /// Open the store `config` names; `dir` is the meta server's `db`
    /// directory (sled's database, or where etcd's mirror lives).
    pub fn open(config: &StoreConfig, dir: &Path) -> Result<Store, StoreError> {
        config.validate().map_err(StoreError::Etcd)?;
        match config.kind {
            StoreKind::Sled => Ok(Store { db: sled_store::open(dir)?, remote: None }),
            StoreKind::Etcd => {
                let (db, remote) = etcd::open(config, dir)?;
                Ok(Store { db, remote: Some(remote) })
            }
        }
    }

    /// A throw-away sled store (tests).
    pub fn temporary() -> Result<Store, StoreError> {
        Ok(Store { db: sled_store::temporary()?, remote: None })
    }

    /// Which engine this is, for logs.
    pub fn kind(&self) -> StoreKind {
        if self.remote.is_some() {
            StoreKind::Etcd
        } else {
            StoreKind::Sled
        }
    }

    /// Open (creating) the tree `name`.
    pub fn open_tree(&self, name: &str) -> Result<Tree, StoreError> {
        let local = self.db.open_tree(name)?;
        Ok(Tree { local, name: name.as_bytes().to_vec(), remote: self.remote.clone() })
    }

    /// Make every write applied so far durable (blocking: sled's fsync, or
    /// etcd's acknowledgement of every queued batch).
    pub fn flush(&self) -> Result<(), StoreError> {
        match &self.remote {
            None => self.db.flush().map(drop).map_err(StoreError::from),
            Some(r) => r.flush(),
        }
    }
}

/// Writes to apply atomically: the last write of a key wins.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Batch {
    /// Set `key` to `value`.
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes.insert(key.into(), Some(value.into()));
    }

    /// Delete `key`.
    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.writes.insert(key.into(), None);
    }

    /// Number of writes.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// One named tree of the store.
#[derive(Clone)]
pub struct Tree {
    /// The data (sled store) or its mirror (etcd store).
    local: sled::Tree,
    name: Vec<u8>,
    remote: Option<Arc<etcd::Remote>>,
}

impl Tree {
    /// The value of `key`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, StoreError> {
        Ok(self.local.get(key)?)
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool, StoreError> {
        Ok(self.local.contains_key(key)?)
    }

    /// Set one key.
    pub fn insert(&self, key: impl AsRef<[u8]>, value: impl Into<Vec<u8>>) -> Result<(), StoreError> {
        let mut b = Batch::default();
        b.insert(key.as_ref(), value);
        self.apply_batch(b)
    }

    /// Delete one key.
    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<(), StoreError> {
        let mut b = Batch::default();
        b.remove(key.as_ref());
        self.apply_batch(b)
    }

    /// Apply every write of `batch` atomically: all or none of it.
    pub fn apply_batch(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        match &self.remote {
            None => Ok(self.local.apply_batch(sled_store::batch(&batch))?),
            Some(r) => r.apply(&self.name, &self.local, batch),
        }
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> Iter {
        Iter(self.local.iter())
    }

    /// Entries with keys in `range`, in key order.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        Iter(self.local.range(range))
    }

    /// Entries whose keys start with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Iter {
        Iter(self.local.scan_prefix(prefix))
    }

    /// Make every write so far durable (the whole store's).
    pub fn flush(&self) -> Result<(), StoreError> {
        match &self.remote {
            None => self.local.flush().map(drop).map_err(StoreError::from),
            Some(r) => r.flush(),
        }
    }
}

/// An ordered scan over a tree.
pub struct Iter(sled::Iter);

impl Iter {
    /// Keys only.
    pub fn keys(self) -> impl DoubleEndedIterator<Item = Result<Bytes, StoreError>> {
        self.map(|kv| kv.map(|(k, _)| k))
    }
}

impl Iterator for Iter {
    type Item = Result<Entry, StoreError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|kv| kv.map_err(StoreError::from))
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(|kv| kv.map_err(StoreError::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_refuses_nonsense() {
        assert!(StoreConfig::default().validate().is_ok());
        let etcd = StoreConfig { kind: StoreKind::Etcd, ..Default::default() };
        assert!(etcd.validate().unwrap_err().contains("needs endpoints"));
        let sled = StoreConfig { endpoints: vec!["http://127.0.0.1:2379".into()], ..Default::default() };
        assert!(sled.validate().is_err());
        let ok = StoreConfig { kind: StoreKind::Etcd, endpoints: sled.endpoints.clone(), ..Default::default() };
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn sled_store_batches_and_scans() {
        let s = Store::temporary().unwrap();
        let t = s.open_tree("t").unwrap();
        let mut b = Batch::default();
        b.insert(b"a1".to_vec(), b"x".to_vec());
        b.insert(b"a2".to_vec(), b"y".to_vec());
        b.insert(b"b1".to_vec(), b"z".to_vec());
        b.remove(b"b1".to_vec());
        t.apply_batch(b).unwrap();
        let keys: Vec<_> = t.scan_prefix(b"a").keys().map(|k| k.unwrap().to_vec()).collect();
        assert_eq!(keys, vec![b"a1".to_vec(), b"a2".to_vec()]);
        assert!(t.get(b"b1").unwrap().is_none());
        let last = t.range(b"a".as_slice()..=b"a9".as_slice()).next_back().unwrap().unwrap();
        assert_eq!(&*last.1, b"y");
        t.remove(b"a1").unwrap();
        assert_eq!(t.iter().count(), 1);
        s.flush().unwrap();
    }
}
