//! The VM service end to end: real processes (`renkei local up` with
//! renkei-meta, renkei-server, `vpe serve` and a `vpe agent` per PoP), real
//! libvirt, real guests of the test image, driven through the `vpe` command
//! as users alice and bob. Enabled by `VPE_TEST_LIBVIRT=1` (each test prints
//! why it skips otherwise), except those that boot no VM (`uploads`); tests
//! take a global lock and run one at a time.

mod harness;

mod agents;
mod boot;
mod crashes;
mod failures;
mod limits;
mod placement;
mod uploads;

/// Every test body is bounded.
pub async fn bounded<T>(secs: u64, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(std::time::Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("test exceeded its {secs} s bound"),
    }
}
