//! Network-namespace tests of the WAN emulator (acceptance 1, 2 and 4 of issue 4). They run only
//! with `RENKEI_TEST_NETNS=1` as root, with iproute2, iputils-ping and iperf3 installed, one test
//! bed at a time. `paper` also runs renkei's binaries (`RENKEI_BIN_DIR`, else next to
//! renkei-bench: build them with `cargo build --release --bins`).

mod accuracy;
mod cleanup;
mod cli;
mod common;
mod paper;
