//! Network-namespace tests of the WAN emulator (acceptance 1, 2 and 4 of issue 4). They run only
//! with `RENKEI_TEST_NETNS=1` as root, with iproute2, iputils-ping and iperf3 installed, one test
//! bed at a time.

mod accuracy;
mod cleanup;
mod cli;
mod common;
