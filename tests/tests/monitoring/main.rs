//! Monitoring tests (issue 8): the status page in a real headless Chromium,
//! `/metrics` parsed as Prometheus text, `renkei netcheck` across the WAN
//! emulator's `renkei2011` sites, and a failing service check.
//!
//! - `page`: a 3-site federation shows three PoPs live; a killed server
//!   shows down within the heartbeat bound, without reloading the page; a
//!   read-only spool shows a failing write check with its reason on the
//!   page and in `renkei hosts` (root: bind mount). Screenshots go to
//!   `target/test-artifacts/`.
//! - `metrics`: the exposition format parses, byte counters grow by the
//!   size of a put and a get, and the page is refused outside `allow`.
//! - `netcheck`: the matrix on `renkei2011` within 20 % of the configured
//!   RTTs and (scaled) rates (`RENKEI_TEST_NETNS=1`, root).
//!
//! Browser tests need Debian's `chromium` and `chromium-driver`; without
//! them they print why and pass, except under `RENKEI_TEST_STRICT=1`.

mod common;
mod metrics;
mod netcheck;
mod page;
