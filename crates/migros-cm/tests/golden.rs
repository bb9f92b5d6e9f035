//! CM MADs byte for byte as the kernel lays them out (`ibta_vol1_c12.h`:
//! every offset below is the table's byte offset plus the 24-byte MAD
//! header), written here with plain byte stores, independently of the
//! crate's field tables; and any bytes that parse re-emit to bytes that
//! parse the same.

use migros_cm::msg::{CmMessage, Dreq, MsgResponse, PathInfo, Rej, Rep, Req, ServiceType, SidrRep};
use proptest::prelude::*;

const H: usize = 24;

fn header(b: &mut [u8; 256], attr: u16, tid: u64) {
    b[0] = 1; // base version
    b[1] = 0x07; // CM class
    b[2] = 2; // class version
    b[3] = 0x03; // Send
    b[8..16].copy_from_slice(&tid.to_be_bytes());
    b[16..18].copy_from_slice(&attr.to_be_bytes());
}

fn sample_req() -> Req {
    let mut pd = vec![0u8; 92];
    pd[..4].copy_from_slice(&[0x00, 0x40, 0x9c, 0x40]); // a cma_hdr start
    Req {
        local_comm_id: 0x1122_3344,
        service_id: 0x0000_0000_0106_1c06,
        local_ca_guid: 0x0200_5eff_fe12_3456,
        local_qkey: 0,
        local_qpn: 0x00ab_cdef,
        responder_resources: 0x10,
        local_eecn: 0,
        initiator_depth: 0x08,
        remote_eecn: 0,
        remote_cm_response_timeout: 20,
        service_type: ServiceType::Uc,
        flow_control: true,
        starting_psn: 0x0012_3456,
        local_cm_response_timeout: 19,
        retry_count: 7,
        pkey: 0xffff,
        path_mtu: 3,
        rdc_exists: false,
        rnr_retry_count: 6,
        max_cm_retries: 15,
        srq: true,
        primary: PathInfo {
            local_lid: 0xffff,
            remote_lid: 0xffff,
            local_gid: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 10, 2],
            remote_gid: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 10, 1],
            flow_label: 0xabcde,
            packet_rate: 0x2a,
            traffic_class: 0x60,
            hop_limit: 64,
            sl: 5,
            subnet_local: false,
            local_ack_timeout: 17,
        },
        alternate: PathInfo::default(),
        sap_supported: false,
        private_data: pd,
    }
}

#[test]
fn req_bytes_are_the_kernels() {
    let m = sample_req();
    let got = CmMessage::Req(m.clone())
        .emit(0x0000_00aa_1122_3344)
        .unwrap();
    let mut want = [0u8; 256];
    header(&mut want, 0x0010, 0x0000_00aa_1122_3344);
    let d = |o: usize| H + o;
    want[d(0)..d(4)].copy_from_slice(&0x1122_3344u32.to_be_bytes());
    want[d(8)..d(16)].copy_from_slice(&0x0000_0000_0106_1c06u64.to_be_bytes());
    want[d(16)..d(24)].copy_from_slice(&0x0200_5eff_fe12_3456u64.to_be_bytes());
    // local Q_Key 0 at 28
    want[d(32)..d(35)].copy_from_slice(&[0xab, 0xcd, 0xef]); // local QPN
    want[d(35)] = 0x10; // responder resources
    want[d(39)] = 0x08; // initiator depth
                        // byte 43: remote CM response timeout (5 bits) | service type (2) | EE flow (1)
    want[d(43)] = (20 << 3) | (1 << 1) | 1;
    want[d(44)..d(47)].copy_from_slice(&[0x12, 0x34, 0x56]); // starting PSN
                                                             // byte 47: local CM response timeout (5) | retry count (3)
    want[d(47)] = (19 << 3) | 7;
    want[d(48)..d(50)].copy_from_slice(&[0xff, 0xff]); // P_Key
                                                       // byte 50: MTU (4) | RDC (1) | RNR retry (3)
    want[d(50)] = (3 << 4) | 6;
    // byte 51: max CM retries (4) | SRQ (1) | extended transport (3)
    want[d(51)] = (15 << 4) | (1 << 3);
    want[d(52)..d(56)].copy_from_slice(&[0xff, 0xff, 0xff, 0xff]); // LIDs
    want[d(56)..d(72)].copy_from_slice(&m.primary.local_gid);
    want[d(72)..d(88)].copy_from_slice(&m.primary.remote_gid);
    // flow label: 20 bits from byte 88; packet rate: low 6 bits of 91
    want[d(88)..d(92)].copy_from_slice(&[0xab, 0xcd, 0xe0, 0x2a]);
    want[d(92)] = 0x60; // traffic class
    want[d(93)] = 64; // hop limit
    want[d(94)] = 5 << 4; // SL | subnet local 0
    want[d(95)] = 17 << 3; // local ACK timeout
    want[d(140)..d(144)].copy_from_slice(&[0x00, 0x40, 0x9c, 0x40]);
    assert_eq!(got.to_vec(), want.to_vec());
    let (h, back) = CmMessage::parse(&want).unwrap();
    assert_eq!(h.tid, 0x0000_00aa_1122_3344);
    assert_eq!(back, CmMessage::Req(m));
}

#[test]
fn rep_rej_dreq_sidr_rep_bytes_are_the_kernels() {
    let rep = Rep {
        local_comm_id: 0xa1a2_a3a4,
        remote_comm_id: 0x1122_3344,
        local_qkey: 0,
        local_qpn: 0x0000_0011,
        local_eecn: 0,
        starting_psn: 0x00fe_dcba,
        responder_resources: 4,
        initiator_depth: 3,
        target_ack_delay: 15,
        failover_accepted: 0,
        flow_control: true,
        rnr_retry_count: 7,
        srq: false,
        local_ca_guid: 0x0102_0304_0506_0708,
        private_data: vec![0x5a; 196],
    };
    let got = CmMessage::Rep(rep.clone()).emit(9).unwrap();
    let mut want = [0u8; 256];
    header(&mut want, 0x0013, 9);
    want[H..H + 4].copy_from_slice(&0xa1a2_a3a4u32.to_be_bytes());
    want[H + 4..H + 8].copy_from_slice(&0x1122_3344u32.to_be_bytes());
    want[H + 12..H + 15].copy_from_slice(&[0, 0, 0x11]);
    want[H + 20..H + 23].copy_from_slice(&[0xfe, 0xdc, 0xba]);
    want[H + 24] = 4;
    want[H + 25] = 3;
    want[H + 26] = (15 << 3) | 1; // target ACK delay | failover 0 | flow control
    want[H + 27] = 7 << 5; // RNR retry | SRQ 0
    want[H + 28..H + 36].copy_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
    want[H + 36..].fill(0x5a);
    assert_eq!(got.to_vec(), want.to_vec());
    assert_eq!(CmMessage::parse(&want).unwrap().1, CmMessage::Rep(rep));

    let rej = Rej {
        local_comm_id: 0,
        remote_comm_id: 0x1122_3344,
        message_rejected: MsgResponse::Req,
        ari: vec![],
        reason: 8,
        private_data: vec![0; 148],
    };
    let got = CmMessage::Rej(rej.clone()).emit(9).unwrap();
    let mut want = [0u8; 256];
    header(&mut want, 0x0012, 9);
    want[H + 4..H + 8].copy_from_slice(&0x1122_3344u32.to_be_bytes());
    want[H + 10..H + 12].copy_from_slice(&8u16.to_be_bytes());
    assert_eq!(got.to_vec(), want.to_vec());
    assert_eq!(CmMessage::parse(&want).unwrap().1, CmMessage::Rej(rej));

    let dreq = Dreq {
        local_comm_id: 1,
        remote_comm_id: 2,
        remote_qpn: 0x00ab_cdef,
        private_data: vec![0; 220],
    };
    let got = CmMessage::Dreq(dreq).emit(3).unwrap();
    assert_eq!(&got[H + 8..H + 12], &[0xab, 0xcd, 0xef, 0]);
    assert_eq!(&got[16..18], &[0x00, 0x15]);

    let sidr = SidrRep {
        request_id: 0x0505_0505,
        status: 0,
        qpn: 0x00_1234,
        service_id: 0x0111_1c06,
        qkey: 0x0123_4567,
        additional_info: vec![],
        private_data: vec![0; 136],
    };
    let got = CmMessage::SidrRep(sidr).emit(3).unwrap();
    assert_eq!(&got[H + 8..H + 11], &[0x00, 0x12, 0x34]);
    assert_eq!(&got[H + 12..H + 20], &0x0111_1c06u64.to_be_bytes());
    assert_eq!(&got[H + 20..H + 24], &[0x01, 0x23, 0x45, 0x67]);
}

proptest! {
    /// Whatever parses re-emits to bytes that parse to the same message.
    #[test]
    fn parse_emit_parse(attr in 0x0010u16..=0x001a, body in proptest::collection::vec(any::<u8>(), 232)) {
        let mut mad = [0u8; 256];
        header(&mut mad, attr, 42);
        mad[H..].copy_from_slice(&body);
        let (h, m) = CmMessage::parse(&mad).unwrap();
        prop_assert_eq!(h.tid, 42);
        let again = m.emit(42).unwrap();
        prop_assert_eq!(CmMessage::parse(&again).unwrap().1, m);
    }

    /// Garbage never panics the parser.
    #[test]
    fn garbage_is_an_error_not_a_panic(mad in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = CmMessage::parse(&mad);
    }
}
