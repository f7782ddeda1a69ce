//! A small write transaction over the namespace tree: reads see the
//! transaction's own writes, and commit applies everything as one atomic
//! store batch ([`crate::store`]). Callers serialise transactions with the namespace lock, so there
//! are no conflicts to retry.

use crate::record::{self, RecordError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;

/// Pending writes over a tree.
pub struct Txn<'a> {
    tree: &'a crate::store::Tree,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// While a savepoint is open: each write's key and the pending value it
    /// replaced (outer None: the key had no pending write).
    undo: Option<Vec<Undo>>,
    /// Files whose mode or owner changed so that someone may have lost
    /// access, with the new owner: their users' capabilities are voided
    /// once this commits ([`crate::voids`]).
    pub access_changed: Vec<(fs_proto::Ino, u32)>,
}

/// One write to undo: the key and the pending value it replaced (outer
/// None: the key had no pending write).
type Undo = (Vec<u8>, Option<Option<Vec<u8>>>);

/// A stored key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// A point a transaction can go back to ([`Txn::rollback_to`]).
#[derive(Debug, Clone, Copy)]
pub struct Savepoint(usize);

/// Failure inside a transaction.
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    /// The store failed.
    #[error("database: {0}")]
    Store(#[from] crate::store::StoreError),
    /// A stored value is unreadable.
    #[error("{0}")]
    Record(#[from] RecordError),
}

impl<'a> Txn<'a> {
    /// Start a transaction.
    pub fn new(tree: &'a crate::store::Tree) -> Self {
        Txn { tree, writes: BTreeMap::new(), undo: None, access_changed: Vec::new() }
    }

    /// Raw read, seeing pending writes.
    pub fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>, TxnError> {
        if let Some(v) = self.writes.get(key) {
            return Ok(v.clone());
        }
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    /// Typed read.
    pub fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, TxnError> {
        match self.get_raw(key)? {
            Some(v) => Ok(Some(record::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Typed write.
    pub fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        self.set(key, Some(record::encode(value)));
    }

    /// Raw write (value stored verbatim).
    pub fn put_raw(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.set(key, Some(value));
    }

    /// Delete.
    pub fn del(&mut self, key: Vec<u8>) {
        self.set(key, None);
    }

    fn set(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        match &mut self.undo {
            Some(undo) => {
                let before = self.writes.insert(key.clone(), value);
                undo.push((key, before));
            }
            None => {
                self.writes.insert(key, value);
            }
        }
    }

    /// Start remembering writes so they can be undone (one operation of a
    /// batch that must fail alone, leaving the others).
    pub fn savepoint(&mut self) -> Savepoint {
        Savepoint(self.undo.get_or_insert_with(Vec::new).len())
    }

    /// Undo every write since `sp`.
    pub fn rollback_to(&mut self, sp: Savepoint) {
        let Some(undo) = self.undo.as_mut() else { return };
        while undo.len() > sp.0 {
            let Some((key, before)) = undo.pop() else { break };
            match before {
                Some(v) => {
                    self.writes.insert(key, v);
                }
                None => {
                    self.writes.remove(&key);
                }
            }
        }
    }

    /// Keys under a prefix, merging committed data with pending writes.
    pub fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, TxnError> {
        let mut keys: BTreeMap<Vec<u8>, ()> = BTreeMap::new();
        for kv in self.tree.scan_prefix(prefix) {
            let (k, _) = kv?;
            keys.insert(k.to_vec(), ());
        }
        for (k, v) in self.writes.range(prefix.to_vec()..) {
            if !k.starts_with(prefix) {
                break;
            }
            match v {
                Some(_) => keys.insert(k.clone(), ()),
                None => keys.remove(k),
            };
        }
        Ok(keys.into_keys().collect())
    }

    /// Every key written (or deleted) so far, in order.
    pub fn written_keys(&self) -> impl Iterator<Item = &[u8]> {
        self.writes.keys().map(Vec::as_slice)
    }

    /// Typed read of the committed value, ignoring pending writes (what the
    /// key held before this transaction).
    pub fn get_committed<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, TxnError> {
        match self.tree.get(key)? {
            Some(v) => Ok(Some(record::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Committed keys and values under a prefix, ignoring pending writes.
    pub fn committed_with_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, TxnError> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(prefix) {
            let (k, v) = kv?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Whether anything was written.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Apply all writes atomically.
    pub fn commit(self) -> Result<(), TxnError> {
        if self.writes.is_empty() {
            return Ok(());
        }
        let mut batch = crate::store::Batch::default();
        for (k, v) in self.writes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }
}
