#!/usr/bin/env bash
# The whole renkei test suite on a fresh Debian machine, as root: installs
# what it needs, starts libvirtd/virtlogd, builds, runs every tier (unit,
# in-process clusters, real processes, FUSE, network namespaces, libvirt),
# then fmt and clippy. A tier that cannot run here fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/setup.sh

install_packages
# The set-up repairs a removed tool and fails loudly on a missing one.
bash scripts/lib/setup-selftest.sh
ensure_rust
start_services
build_release

export RENKEI_BIN_DIR="$PWD/target/release"

log "pjdfstest (POSIX conformance of the FUSE mount; the suite switches to users nobody and tests)"
id tests >/dev/null 2>&1 || useradd -M -U -s /usr/sbin/nologin tests
PJD="$PWD/target/pjdfstest"
[ -x "$PJD/bin/pjdfstest" ] || cargo install --locked --quiet pjdfstest --version 0.2.2 --root "$PJD"
export RENKEI_PJDFSTEST="$PJD/bin/pjdfstest"
log "fsx (the file system exerciser run on the mount)"
FSX="$PWD/target/fsx"
[ -x "$FSX/bin/fsx" ] || cargo install --locked --quiet fsx --version 0.3.2 --root "$FSX"
export RENKEI_FSX="$FSX/bin/fsx"
export RENKEI_TEST_NETNS=1 VPE_TEST_LIBVIRT=1 RENKEI_TEST_FUSE=1 RENKEI_TEST_STRICT=1
log "cargo test (release)"
cargo test --release --locked --workspace -- --test-threads=2

log "integration and mount tiers again with the meta server on a three-member etcd cluster (the etcd store)"
RENKEI_TEST_STORE=etcd cargo test --release --locked -p tests --test integration -- --test-threads=2
# fsx exercises one file's data path, which no metadata store serves; every
# other mount test runs on etcd too.
RENKEI_TEST_STORE=etcd cargo test --release --locked -p tests --test mount -- --skip fsx --test-threads=2

log "Debian package: built, installed with dpkg, units verified, purged"
bash scripts/lib/package-check.sh

log "cargo fmt --check"
cargo fmt --all --check
log "cargo clippy"
cargo clippy --release --locked --workspace --all-targets -- -D warnings
log "all tests passed"
