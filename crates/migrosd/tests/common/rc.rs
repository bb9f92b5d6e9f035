//! Connecting an RC QP of the Rust verbs API (migros-verbs), for the tests
//! and examples that drive a process through the CRIU sequence, with the
//! attributes of migros-test-support.

use std::net::IpAddr;

use migros_test_support::RcParams;
#[allow(unused_imports)] // not every test file uses it
pub use migros_test_support::ALL_ACCESS;
use migros_verbs::*;

/// RESET → INIT → RTR → RTS towards `remote_qpn` at `remote_addr`: PSNs
/// 0x100, path MTU 1024, 4 READ/atomic in flight, RNR retries forever,
/// ACK timeout `timeout` (4.096 µs · 2^timeout) with 7 retries.
pub fn connect_rc(qp: &Qp, remote_qpn: Qpn, remote_addr: IpAddr, timeout: u8) {
    let p = RcParams {
        timeout,
        ..RcParams::new(remote_qpn, remote_addr)
    };
    for (attr, mask) in p.transitions() {
        if let Err(e) = qp.modify(&attr, mask) {
            panic!("modify qp {} to {:?}: {e}", qp.qpn, attr.qp_state);
        }
    }
}
