//! The etcd store: the metadata on a replicated etcd cluster.
//!
//! One meta server writes a prefix. At start it takes the prefix over by
//! writing a fresh random token to `PREFIX writer` (a fence: every later
//! commit compares that key with its own token, so a meta server whose
//! prefix was taken over fails its next commit and takes no more writes),
//! then loads every key under `PREFIX t/` into a local mirror (a temporary
//! sled database in the `db` directory) that answers all reads.
//!
//! Writes: [`Remote::apply`] checks the batch against etcd's limits (one
//! batch is one etcd Txn: atomic, so never split; a batch beyond
//! `max_txn_ops` or `max_txn_bytes` is refused whole before anything
//! changes), applies it to the mirror and queues it, in order, for the
//! writer thread, which commits queued batches as etcd Txns (consecutive
//! batches merged while they fit, which keeps each all-or-nothing and their
//! order), retrying while etcd is unreachable. [`Remote::flush`] waits,
//! bounded by `commit_timeout_ms`, until every batch applied before it was
//! acknowledged. No lock is held while talking to etcd.
//!
//! Key layout in etcd: `PREFIX t/TREE/KEY` holds what sled's tree `TREE`
//! holds at `KEY`; values are the same bytes.

use super::{Batch, StoreConfig, StoreError};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, KvClient, Txn, TxnOp};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Bound on connecting, taking the prefix over and loading it.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on one etcd request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Keys per page while loading.
const LOAD_PAGE: i64 = 512;
/// Largest response accepted (a page of large xattrs).
const MAX_RESPONSE: usize = 256 << 20;
/// Longest pause between retries of a commit etcd did not take.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What the request side and the writer thread share.
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// Batches applied to the mirror (and queued).
    applied: u64,
    /// Batches etcd acknowledged.
    committed: u64,
    /// Why no more writes are taken.
    failed: Option<String>,
}

/// One queued batch: full etcd keys, values (None: delete), and its size.
struct Pending {
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    bytes: usize,
}

/// The etcd side of an etcd store.
pub(crate) struct Remote {
    shared: Arc<Shared>,
    queue: mpsc::UnboundedSender<Pending>,
    data_prefix: Vec<u8>,
    max_ops: usize,
    max_bytes: usize,
    commit_timeout: Duration,
}

impl Remote {
    /// Apply `batch` to tree `tree` (its mirror is `local`) and queue it
    /// for etcd; refused whole if etcd could not take it in one Txn.
    pub(super) fn apply(&self, tree: &[u8], local: &sled::Tree, batch: Batch) -> Result<(), StoreError> {
        let mut writes = Vec::with_capacity(batch.len());
        let mut bytes = 0usize;
        for (k, v) in &batch.writes {
            let key = [self.data_prefix.as_slice(), tree, b"/", k].concat();
            bytes += key.len() + v.as_ref().map_or(0, Vec::len);
            writes.push((key, v.clone()));
        }
        if writes.len() > self.max_ops {
            return Err(StoreError::TooLarge(format!(
                "{} writes, more than [store] max_txn_ops = {} (raise it with etcd's --max-txn-ops)",
                writes.len(),
                self.max_ops
            )));
        }
        if bytes > self.max_bytes {
            return Err(StoreError::TooLarge(format!(
                "{bytes} bytes, more than [store] max_txn_bytes = {} (raise it with etcd's --max-request-bytes)",
                self.max_bytes
            )));
        }
        let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = &state.failed {
            return Err(StoreError::Failed(why.clone()));
        }
        local.apply_batch(super::sled_store::batch(&batch))?;
        state.applied += 1;
        if self.queue.send(Pending { writes, bytes }).is_err() {
            let why = "the etcd writer stopped".to_string();
            state.failed = Some(why.clone());
            return Err(StoreError::Failed(why));
        }
        Ok(())
    }

    /// Wait until etcd acknowledged every batch applied so far.
    pub(super) fn flush(&self) -> Result<(), StoreError> {
        let deadline = Instant::now() + self.commit_timeout;
        let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        let target = state.applied;
        loop {
            if state.committed >= target {
                return Ok(());
            }
            if let Some(why) = &state.failed {
                return Err(StoreError::Failed(why.clone()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError::Etcd(format!(
                    "no acknowledgement within {} ms ({} writes waiting): is the etcd cluster up with a quorum? \
                     The writes stay queued and are sent when it answers",
                    self.commit_timeout.as_millis(),
                    target - state.committed
                )));
            }
            state = self.shared.changed.wait_timeout(state, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

/// Connect, take the prefix over and load it into a fresh mirror in `dir`;
/// start the writer thread.
pub(super) fn open(config: &StoreConfig, dir: &Path) -> Result<(sled::Db, Arc<Remote>), StoreError> {
    let mirror = dir.join("etcd-mirror");
    match std::fs::remove_dir_all(&mirror) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::Etcd(format!("{}: {e}", mirror.display()))),
    }
    let db = sled::Config::new().path(&mirror).temporary(true).open()?;
    let prefix = config.prefix.as_bytes().to_vec();
    let fence_key = [prefix.as_slice(), b"writer"].concat();
    let data_prefix = [prefix.as_slice(), b"t/"].concat();
    let mut token = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut token)
        .map_err(|_| StoreError::Etcd("no randomness for the writer token".into()))?;
    let token: Vec<u8> = token.iter().map(|b| format!("{b:02x}")).collect::<String>().into_bytes();

    let shared = Arc::new(Shared { state: Mutex::new(State::default()), changed: Condvar::new() });
    let (queue, rx) = mpsc::unbounded_channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (endpoints, mirror_db, writer_shared) = (config.endpoints.clone(), db.clone(), shared.clone());
    let (max_ops, max_bytes) = (config.max_txn_ops, config.max_txn_bytes);
    let load_prefix = data_prefix.clone();
    std::thread::Builder::new()
        .name("etcd-writer".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(StoreError::Etcd(format!("runtime: {e}"))));
                    return;
                }
            };
            rt.block_on(async move {
                let opened = tokio::time::timeout(
                    OPEN_TIMEOUT,
                    take_over(&endpoints, &fence_key, &token, &load_prefix, &mirror_db),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Etcd(format!("{endpoints:?}: no answer within {} s", OPEN_TIMEOUT.as_secs())))
                });
                let kv = match opened {
                    Ok(kv) => kv,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                let writer = Writer {
                    kv,
                    endpoints,
                    at: 0,
                    fence: (fence_key, token),
                    shared: writer_shared,
                    max_ops,
                    max_bytes,
                };
                writer.run(rx).await;
            });
        })
        .map_err(|e| StoreError::Etcd(format!("writer thread: {e}")))?;
    ready_rx.recv().map_err(|_| StoreError::Etcd("the etcd writer thread ended while opening".into()))??;
    let remote = Remote {
        shared,
        queue,
        data_prefix,
        max_ops: config.max_txn_ops,
        max_bytes: config.max_txn_bytes,
        commit_timeout: Duration::from_millis(config.commit_timeout_ms),
    };
    Ok((db, Arc::new(remote)))
}

fn etcd_err(what: &str) -> impl FnOnce(etcd_client::Error) -> StoreError + '_ {
    move |e| StoreError::Etcd(format!("{what}: {e}"))
}

/// A client of one member, `endpoints[at % len]`, with the writer's bounds.
async fn connect_member(endpoints: &[String], at: usize) -> Result<KvClient, StoreError> {
    let endpoint = &endpoints[at % endpoints.len()];
    let options = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2))
        .with_keep_alive_while_idle(true);
    let client = tokio::time::timeout(REQUEST_TIMEOUT, Client::connect([endpoint], Some(options)))
        .await
        .map_err(|_| StoreError::Etcd(format!("{endpoint}: no answer")))?
        .map_err(etcd_err("connect"))?;
    Ok(client.kv_client().max_decoding_message_size(MAX_RESPONSE))
}

/// Connect, write the fence token, and copy every key under `data_prefix`
/// into `mirror` (one consistent revision).
async fn take_over(
    endpoints: &[String],
    fence_key: &[u8],
    token: &[u8],
    data_prefix: &[u8],
    mirror: &sled::Db,
) -> Result<KvClient, StoreError> {
    // Keep-alives find a member that died under an open connection.
    let options = ConnectOptions::new()
        .with_connect_timeout(REQUEST_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2))
        .with_keep_alive_while_idle(true);
    let client = Client::connect(endpoints, Some(options)).await.map_err(etcd_err("connect"))?;
    let mut kv = client.kv_client().max_decoding_message_size(MAX_RESPONSE);
    let put = kv.put(fence_key, token, None).await.map_err(etcd_err("taking the prefix over"))?;
    let revision = put.header().map_or(0, |h| h.revision());
    let end = prefix_end(data_prefix);
    let mut trees: HashMap<Vec<u8>, sled::Tree> = HashMap::new();
    let mut from = data_prefix.to_vec();
    let mut keys = 0u64;
    loop {
        let page = kv
            .get(
                from.clone(),
                Some(GetOptions::new().with_range(end.clone()).with_limit(LOAD_PAGE).with_revision(revision)),
            )
            .await
            .map_err(etcd_err("loading"))?;
        for item in page.kvs() {
            let rest = item.key().strip_prefix(data_prefix).unwrap_or_default();
            let Some(slash) = rest.iter().position(|b| *b == b'/') else { continue };
            let (name, key) = (&rest[..slash], &rest[slash + 1..]);
            let tree = match trees.get(name) {
                Some(t) => t,
                None => {
                    let t = mirror.open_tree(name)?;
                    trees.entry(name.to_vec()).or_insert(t)
                }
            };
            tree.insert(key, item.value())?;
            keys += 1;
        }
        match page.kvs().last() {
            Some(last) if page.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => break,
        }
    }
    tracing::info!(keys, revision, "etcd store loaded");
    Ok(kv)
}

/// The first key after every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

/// The thread that commits queued batches to etcd, in order.
struct Writer {
    kv: KvClient,
    /// The members, and which one the writer moves to after a failed
    /// commit (see [`connect_member`]).
    endpoints: Vec<String>,
    at: usize,
    fence: (Vec<u8>, Vec<u8>),
    shared: Arc<Shared>,
    max_ops: usize,
    max_bytes: usize,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Pending>) {
        let mut carry: Option<Pending> = None;
        loop {
            let first = match carry.take() {
                Some(p) => p,
                None => match rx.recv().await {
                    Some(p) => p,
                    None => return,
                },
            };
            // Merge what else is queued while it fits one Txn: all of it
            // commits or none, in the order it was applied.
            let (mut ops, mut bytes, mut batches) = (first.writes.len(), first.bytes, 1u64);
            let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = first.writes.into_iter().collect();
            while let Ok(next) = rx.try_recv() {
                if ops + next.writes.len() > self.max_ops || bytes + next.bytes > self.max_bytes {
                    carry = Some(next);
                    break;
                }
                ops += next.writes.len();
                bytes += next.bytes;
                batches += 1;
                merged.extend(next.writes);
            }
            let outcome = self.commit(&merged).await;
            let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            match outcome {
                Ok(()) => state.committed += batches,
                Err(why) => {
                    tracing::error!("etcd store takes no more writes: {why}");
                    state.failed = Some(why);
                }
            }
            self.shared.changed.notify_all();
            if state.failed.is_some() {
                return;
            }
        }
    }

    /// Commit one Txn, retrying while etcd is unreachable; Err(why) when it
    /// can never commit.
    async fn commit(&mut self, writes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> Result<(), String> {
        let mut backoff = Duration::from_millis(50);
        let mut since: Option<Instant> = None;
        loop {
            let ops: Vec<TxnOp> = writes
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => TxnOp::put(k.clone(), v.clone(), None),
                    None => TxnOp::delete(k.clone(), None),
                })
                .collect();
            let txn = Txn::new()
                .when([Compare::value(self.fence.0.clone(), CompareOp::Equal, self.fence.1.clone())])
                .and_then(ops);
            match self.kv.txn(txn).await {
                Ok(r) if r.succeeded() => {
                    if let Some(t) = since {
                        tracing::info!(after_ms = t.elapsed().as_millis() as u64, "etcd commits again");
                    }
                    return Ok(());
                }
                Ok(_) => {
                    return Err(format!(
                        "another meta server took the etcd prefix over ({} changed)",
                        String::from_utf8_lossy(&self.fence.0)
                    ))
                }
                Err(etcd_client::Error::GRpcStatus(s))
                    if matches!(
                        s.code(),
                        tonic::Code::InvalidArgument | tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
                    ) =>
                {
                    return Err(format!("etcd refused a commit: {}", s.message()));
                }
                Err(e) => {
                    // The next member at once (a client of every member kept
                    // choosing a dead one, backing off each time: one member
                    // lost stalled commits for seconds); back off only once
                    // every member failed in a row.
                    self.at += 1;
                    let round_failed = self.at % self.endpoints.len() == 0;
                    tracing::debug!(member = %self.endpoints[self.at % self.endpoints.len()], "etcd commit failed: {e}");
                    if since.is_none() {
                        tracing::warn!("etcd commit failed, retrying with the next member until one answers: {e}");
                        since = Some(Instant::now());
                    }
                    if round_failed {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    match connect_member(&self.endpoints, self.at).await {
                        Ok(kv) => self.kv = kv,
                        Err(e) => tracing::debug!("etcd member: {e}"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end(b"renkei/t/"), b"renkei/t0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
