//! Interoperability with real RoCE v2 peers: the Linux kernel's SoftRoCE
//! (`rdma_rxe` of Debian 12's 6.1 kernel) booted under qemu/TCG with
//! virtme-ng, against migros devices, with unmodified programs
//! (ibverbs-utils, perftest, rdmacm-utils) on both sides, plus the crate's own C program
//! `rdma_check` (`c/`: byte checks against the peer's memory and the error
//! paths: RNR, remote access, invalid request, UD Q_Keys) and
//! `interop-pause` (pauses a migros device's sessions as a migration does,
//! to show what the kernel makes of it).
//!
//! The VM is booted once per test run (`scripts/vm/run.sh`); inside it
//! `scripts/vm/guest.sh` puts the kernel's device `rxk` on one end of a veth
//! (198.18.10.1, root namespace) and migros devices in network namespace
//! `mig` on the other (rxe0 198.18.10.2, rxe1 198.18.10.3), and runs a
//! [`plan`] of cases, each program with each side as server and as client.
//! It writes one result line per case with the error counters of both sides
//! that moved during it; [`results`] reads them back.
//!
//! The test gates on `migros_test_support::require` (skip with the reason,
//! or fail under `MIGROS_TESTS_REQUIRED=1`, which CI sets).

pub mod plan;
pub mod results;
