//! What a client writes into its rings, read by the daemon: decoding a send
//! or receive WQE never panics, and what decodes re-encodes identically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use migros_proto::ring::{self, RQ_WQE_SIZE, SQ_WQE_SIZE};

fuzz_target!(|data: &[u8]| {
    let mut sq = [0u8; SQ_WQE_SIZE];
    let n = data.len().min(SQ_WQE_SIZE);
    sq[..n].copy_from_slice(&data[..n]);
    if let Ok(wr) = ring::decode_send(&sq) {
        let mut again = [0u8; SQ_WQE_SIZE];
        ring::encode_send(&wr, &mut again).expect("a decoded wqe re-encodes");
        assert_eq!(ring::decode_send(&again), Ok(wr));
    }
    let mut rq = [0u8; RQ_WQE_SIZE];
    let n = data.len().min(RQ_WQE_SIZE);
    rq[..n].copy_from_slice(&data[..n]);
    if let Ok(wr) = ring::decode_recv(&rq) {
        let mut again = [0u8; RQ_WQE_SIZE];
        ring::encode_recv(&wr, &mut again).expect("a decoded wqe re-encodes");
        assert_eq!(ring::decode_recv(&again), Ok(wr));
    }
});
