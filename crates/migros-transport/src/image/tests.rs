//! The image format, pinned: a golden image with every field and variant
//! set decodes, converts to live objects and back, and re-encodes to the
//! same bytes; an image of version 1 (written by migros before images had
//! their own types) is refused with a message naming both versions.
//!
//! After a deliberate format change (a new version), write the golden file
//! again with `MIGROS_WRITE_GOLDEN=1 cargo test -p migros-transport image`.

use std::net::IpAddr;

use migros_proto::counters::QpCounters;
use migros_proto::verbs::*;

use super::v2::*;
use crate::{OwnerSnapshot, VerbsError};

const GOLDEN: &[u8] = include_bytes!("testdata/owner-v2.json");
const GOLDEN_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/image/testdata/owner-v2.json"
);
/// An owner with one RC QP and a posted receive, as migros 0.1 before
/// this module encoded it.
const VERSION_1: &[u8] = include_bytes!("testdata/owner-v1.json");

fn addr(a: &str) -> IpAddr {
    a.parse().expect("address")
}

fn sge(addr: u64, length: u32, lkey: u32) -> Sge {
    Sge { addr, length, lkey }
}

fn wc(wr_id: u64, opcode: WcOpcode) -> WorkCompletion {
    WorkCompletion {
        imm_data: Some(0x1234),
        src_qp: 0x77,
        src_addr: Some(addr("198.18.0.3")),
        ..WorkCompletion::new(wr_id, WcStatus::Success, opcode, 0x42, 64)
    }
}

/// An image with every field set and every enum variant used once.
pub(crate) fn every_field() -> OwnerImage {
    let owner = 7;
    let cap = QpCap {
        max_send_wr: 8,
        max_recv_wr: 8,
        max_send_sge: 2,
        max_recv_sge: 2,
        max_inline_data: 64,
    };
    let write = SendWr {
        wr_id: 10,
        opcode: WrOpcode::RdmaWriteWithImm {
            remote_addr: 0x9000,
            rkey: 0x22,
            imm: 5,
        },
        flags: SendFlags::SIGNALED,
        data: SendData::Sges(vec![sge(0x10000, 3000, 0x11)]),
        ud: None,
    };
    let cas = SendWr {
        wr_id: 11,
        opcode: WrOpcode::AtomicCmpSwap {
            remote_addr: 0x9100,
            rkey: 0x22,
            compare: 1,
            swap: 2,
        },
        flags: SendFlags::SIGNALED | SendFlags::FENCE,
        data: SendData::Inline(vec![1, 2, 3]),
        ud: Some(UdDest {
            addr: addr("198.18.0.2"),
            remote_qpn: 0x43,
            remote_qkey: 0x1111,
        }),
    };
    let recv = RecvWr {
        wr_id: 20,
        sges: vec![sge(0x11000, 4096, 0x11)],
    };
    let attr = QpAttr {
        qp_state: QpState::Rts,
        cur_qp_state: QpState::Rts,
        path_mtu: Mtu::Mtu1024,
        qkey: 0x1111,
        rq_psn: 100,
        sq_psn: 200,
        dest_qp_num: 0x43,
        qp_access_flags: Access(0xf),
        cap,
        dest_addr: Some(addr("198.18.0.2")),
        timeout: 14,
        retry_cnt: 7,
        rnr_retry: 7,
        max_rd_atomic: 4,
        max_dest_rd_atomic: 4,
        min_rnr_timer: 12,
        migration: MigrationState::Stopped,
        ..QpAttr::default()
    };
    let counters = QpCounters {
        tx_packets: 1,
        rx_packets: 2,
        retransmits: 3,
        pauses: 4,
        paused_nanos: 5,
        ..QpCounters::default()
    };
    let qp = QpImage {
        init: QpInit {
            owner,
            qpn: 0x42,
            qp_type: QpType::Rc,
            pd: 1,
            send_cq: 3,
            recv_cq: 3,
            srq: Some(4),
            cap,
            sq_sig_all: false,
        },
        attr,
        recv_queue: vec![recv.clone()],
        requester: RequesterImage {
            send_queue: vec![
                SendWqeImage {
                    wr: write,
                    len: 3000,
                    first_psn: 200,
                    npkts: 3,
                    sent: true,
                    read_done: 100,
                    local_error: None,
                },
                SendWqeImage {
                    wr: cas,
                    len: 8,
                    first_psn: 203,
                    npkts: 1,
                    sent: false,
                    read_done: 0,
                    local_error: Some(WcStatus::LocProtErr),
                },
            ],
            next_index: 1,
            next_offset: 4,
            next_psn: 203,
            una: 201,
            high_psn: 203,
            rd_atomic_outstanding: 1,
            retry_left: 6,
            rnr_left: 7,
            rewound_at: Some(201),
            retry_fence: Some(203),
            since_ack_req: 2,
            window: WindowImage {
                shrunk: Some(8),
                threshold: 16,
                credit: 3,
            },
        },
        responder: ResponderImage {
            epsn: 100,
            msn: 9,
            nak_sent: true,
            uc_skip: false,
            current: Some(InboundImage::Write {
                va: 0x12000,
                rkey: 0x12,
                len: 4096,
                offset: 1024,
            }),
            resources: vec![
                RdResourceImage::Read {
                    first_psn: 90,
                    last_psn: 93,
                },
                RdResourceImage::Atomic { psn: 94, orig: 77 },
            ],
            responses: vec![
                ResponseImage::Ack {
                    psn: 99,
                    syndrome: 0x1f,
                    msn: 9,
                },
                ResponseImage::Read {
                    next_psn: 92,
                    va: 0x12000,
                    rkey: 0x12,
                    remaining: 2048,
                    first: false,
                    msn: 8,
                },
                ResponseImage::AtomicAck {
                    psn: 94,
                    orig: 77,
                    msn: 9,
                },
            ],
            pause_nak: true,
        },
        timers: TimersImage {
            retransmit_ns: Some(1_000_000),
            rnr_ns: None,
            pause_ns: Some(30_000_000_000),
            resume_ns: None,
        },
        counters,
        ud_peers: vec![(addr("198.18.0.4"), 0x50)],
        announce: vec![(addr("198.18.0.5"), 0x51)],
    };
    let mut sending = qp.clone();
    sending.init.qpn = 0x44;
    sending.init.qp_type = QpType::Uc;
    sending.init.srq = None;
    sending.responder.current = Some(InboundImage::Send {
        recv: recv.clone(),
        offset: 512,
    });
    sending.responder.uc_skip = true;
    sending.timers = TimersImage {
        retransmit_ns: None,
        rnr_ns: Some(640_000),
        pause_ns: None,
        resume_ns: Some(10_000_000),
    };
    OwnerImage {
        version: VERSION,
        owner,
        pds: vec![1],
        mrs: vec![MrImage {
            pd: 1,
            addr: 0x10000,
            length: 1 << 20,
            lkey: 0x11,
            rkey: 0x12,
            access: 0xf,
        }],
        cqs: vec![CqImage {
            cq: 3,
            capacity: 2048,
            completions: vec![wc(1, WcOpcode::Recv), wc(2, WcOpcode::RecvRdmaWithImm)],
            overflows: 1,
        }],
        srqs: vec![SrqImage {
            srq: 4,
            pd: 1,
            max_wr: 16,
            limit: 2,
            queue: vec![recv],
        }],
        qps: vec![qp, sending],
    }
}

fn write_golden_if_asked(bytes: &[u8]) {
    if std::env::var_os("MIGROS_WRITE_GOLDEN").is_some() {
        std::fs::write(GOLDEN_PATH, bytes).expect("write the golden image");
    }
}

#[test]
fn the_golden_image_is_what_this_build_writes() {
    let bytes = serde_json::to_vec(&every_field()).expect("encode");
    write_golden_if_asked(&bytes);
    assert!(
        bytes == GOLDEN,
        "the image format changed: give it a new version (see the module docs)"
    );
}

#[test]
fn the_golden_image_goes_through_the_live_objects_unchanged() {
    let snap = OwnerSnapshot::decode(GOLDEN).expect("the golden image decodes");
    assert_eq!(snap.qpns(), [0x42, 0x44]);
    assert_eq!(snap.to_image(), every_field());
    assert!(snap.encode() == GOLDEN, "re-encoded bytes differ");
}

#[test]
fn a_version_1_image_is_refused_by_name() {
    let e = OwnerSnapshot::decode(VERSION_1).expect_err("version 1");
    assert_eq!(
        e,
        VerbsError::BadSnapshot(
            "image version 1: this migros reads version 2 only \
             (checkpoint and restore with the same migros version)"
                .into()
        )
    );
}

#[test]
fn an_unknown_field_or_an_inconsistent_image_is_refused() {
    let text = std::str::from_utf8(GOLDEN).expect("json is text");
    let extra = text.replacen("\"pds\":", "\"pdz\":[],\"pds\":", 1);
    assert!(matches!(
        OwnerSnapshot::decode(extra.as_bytes()),
        Err(VerbsError::BadSnapshot(m)) if m.contains("unknown field")
    ));
    let mut twice = every_field();
    twice.qps[1].init.qpn = 0x42;
    let e = OwnerSnapshot::from_image(twice).expect_err("a qpn twice");
    assert_eq!(e, VerbsError::BadSnapshot("qp 0x42 appears twice".into()));
    let mut full = every_field();
    full.cqs[0].capacity = 1;
    assert!(OwnerSnapshot::from_image(full).is_err());
    for garbage in [
        &b""[..],
        b"{}",
        b"[]",
        b"{\"version\":2}",
        b"{\"version\":\"2\"}",
    ] {
        assert!(OwnerSnapshot::decode(garbage).is_err());
    }
}
