//! The tests' etcd cluster: the three-member loopback cluster of
//! [`fs_client::local::etcd`], started once per test process, and the
//! store configurations that put a test meta server on it.
//!
//! `RENKEI_TEST_STORE=etcd` runs the meta servers of [`crate::cluster`] and
//! [`crate::procs`] on it, each federation under its own key prefix.
//! Without that variable only the tests that are about etcd use it.

pub use fs_client::local::etcd::{
    etcd_binary, wait_healthy, EtcdCluster, MAX_REQUEST_BYTES, MAX_TXN_BYTES, MAX_TXN_OPS,
};
use fs_meta::store::{StoreConfig, StoreKind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Whether the meta servers of this run use etcd (`RENKEI_TEST_STORE=etcd`).
pub fn store_is_etcd() -> bool {
    match std::env::var("RENKEI_TEST_STORE").as_deref() {
        Ok("etcd") => true,
        Ok("sled") | Ok("") | Err(_) => false,
        Ok(other) => panic!("RENKEI_TEST_STORE={other}: expected sled or etcd"),
    }
}

/// The store a test meta server should use: etcd under a fresh prefix
/// with `RENKEI_TEST_STORE=etcd` (starting the cluster on first use),
/// else None (sled).
pub fn test_store() -> Option<StoreConfig> {
    store_is_etcd().then(|| store_config(cluster()))
}

/// Whether an etcd test can run here: etcd is installed; without it the
/// test skips, unless `RENKEI_TEST_STRICT=1` where it fails.
pub fn available(test: &str) -> bool {
    if etcd_binary().is_some() {
        return true;
    }
    assert!(!crate::strict(), "{test}: etcd is not installed (Debian package etcd-server) and RENKEI_TEST_STRICT=1");
    eprintln!("{test}: skipped, etcd is not installed (Debian package etcd-server)");
    false
}

/// The test process's cluster, started on first use (panics if etcd is
/// missing or does not become healthy: the caller asked for it).
pub fn cluster() -> &'static EtcdCluster {
    CLUSTER.get_or_init(|| {
        let c = EtcdCluster::start().unwrap_or_else(|e| panic!("etcd test cluster: {e}"));
        // A static is never dropped: stop the members and remove their
        // data (each member preallocates 64 MB of log) when the test
        // process exits.
        // SAFETY: registers a plain function with no captured state.
        unsafe { libc::atexit(stop_shared_cluster) };
        c
    })
}

static CLUSTER: OnceLock<EtcdCluster> = OnceLock::new();

extern "C" fn stop_shared_cluster() {
    if let Some(c) = CLUSTER.get() {
        c.stop();
        let _ = std::fs::remove_dir_all(c.dir());
    }
}

/// A prefix no other test of this process uses.
fn fresh_prefix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("renkei-test/{}-{}/", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A store configuration on `cluster` under a prefix no other test uses.
pub fn store_config(cluster: &EtcdCluster) -> StoreConfig {
    StoreConfig {
        kind: StoreKind::Etcd,
        endpoints: cluster.endpoints(),
        prefix: fresh_prefix(),
        max_txn_ops: MAX_TXN_OPS,
        max_txn_bytes: MAX_TXN_BYTES,
        ..Default::default()
    }
}

/// The same, as the `[store]` table of a TOML configuration.
pub fn store_toml(cluster: &EtcdCluster) -> String {
    cluster.store_toml(&fresh_prefix())
}
