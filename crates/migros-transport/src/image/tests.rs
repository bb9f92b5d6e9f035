//! The image format, pinned: a golden image with every field and variant
//! set decodes, converts to live objects and back, and re-encodes to the
//! same bytes; an image of version 1 (written by migros before images had
//! their own types) or 2 (before memory windows) is refused with a message
//! naming both versions.
//!
//! After a deliberate format change (a new version), write the golden file
//! again with `MIGROS_WRITE_GOLDEN=1 cargo test -p migros-transport image`.

use std::net::IpAddr;

use migros_proto::counters::QpCounters;
use migros_proto::verbs::*;

use super::v3::*;
use crate::{OwnerSnapshot, VerbsError};

const GOLDEN: &[u8] = include_bytes!("testdata/owner-v3.json");
const GOLDEN_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/image/testdata/owner-v3.json"
);
/// An owner with one RC QP and a posted receive, as migros 0.1 before
/// this module encoded it.
const VERSION_1: &[u8] = include_bytes!("testdata/owner-v1.json");
/// The same owner as [`GOLDEN`] with every field of version 2 set, as
/// migros wrote it before memory windows.
const VERSION_2: &[u8] = include_bytes!("testdata/owner-v2.json");

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
        data: SendData::Sges(vec![sge(0x10100, 8, 0x11)]),
        ud: None,
    };
    // An RC QP ignores an address handle (post_send takes one).
    let inline = SendWr {
        wr_id: 12,
        opcode: WrOpcode::Send,
        flags: SendFlags::SIGNALED,
        data: SendData::Inline(vec![1, 2, 3]),
        ud: Some(UdDest {
            addr: addr("198.18.0.2"),
            remote_qpn: 0x43,
            remote_qkey: 0x1111,
        }),
    };
    let bind = SendWr {
        wr_id: 12,
        opcode: WrOpcode::BindMw(MwBind {
            mw_rkey: 0x300,
            new_rkey: 0x301,
            mr_lkey: 0x11,
            addr: 0x7000_0000,
            length: 4096,
            access: Access::REMOTE_WRITE | Access::REMOTE_ATOMIC,
        }),
        flags: SendFlags::SIGNALED,
        data: SendData::Sges(vec![]),
        ud: None,
    };
    let inv = SendWr {
        wr_id: 13,
        opcode: WrOpcode::LocalInv { rkey: 0x301 },
        ..bind.clone()
    };
    let atomic_write = SendWr {
        wr_id: 14,
        opcode: WrOpcode::AtomicWrite {
            remote_addr: 0x9200,
            rkey: 0x401,
        },
        data: SendData::Inline(vec![0; 8]),
        ..bind.clone()
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
                SendWqeImage {
                    wr: bind,
                    len: 0,
                    first_psn: 204,
                    npkts: 0,
                    sent: false,
                    read_done: 0,
                    local_error: None,
                },
                SendWqeImage {
                    wr: inv,
                    len: 0,
                    first_psn: 204,
                    npkts: 0,
                    sent: false,
                    read_done: 0,
                    local_error: None,
                },
                SendWqeImage {
                    wr: atomic_write,
                    len: 8,
                    first_psn: 204,
                    npkts: 1,
                    sent: false,
                    read_done: 0,
                    local_error: None,
                },
                SendWqeImage {
                    wr: inline,
                    len: 3,
                    first_psn: 204,
                    npkts: 1,
                    sent: false,
                    read_done: 0,
                    local_error: None,
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
                RdResourceImage::AtomicWrite { psn: 95 },
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
                ResponseImage::AtomicWriteAck { psn: 95, msn: 9 },
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
        comm_established: true,
        resume_key: 0x0123_4567_89ab_cdef,
    };
    let mut sending = qp.clone();
    sending.init.qpn = 0x44;
    sending.init.qp_type = QpType::Uc;
    sending.init.srq = None;
    // UC has no atomics (post_send refuses them; so does a restore); it
    // keeps the write and the inline send, the one its cursor is in.
    sending.requester.send_queue.retain(|w| {
        matches!(
            w.wr.opcode,
            WrOpcode::RdmaWriteWithImm { .. } | WrOpcode::Send
        )
    });
    sending.requester.next_offset = 2;
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
            iova: 0x7000_0000,
            lkey: 0x11,
            rkey: 0x12,
            access: 0x1f,
        }],
        mws: vec![
            MwImage {
                pd: 1,
                mw_type: MwType::Type1,
                rkey: 0x207,
                free: false,
                access: Access::REMOTE_READ.0,
                addr: 0x7000_1000,
                length: 256,
                mr_lkey: Some(0x11),
                qpn: None,
            },
            MwImage {
                pd: 1,
                mw_type: MwType::Type2,
                rkey: 0x301,
                free: false,
                access: (Access::REMOTE_WRITE | Access::ZERO_BASED).0,
                addr: 0x2000,
                length: 4096,
                mr_lkey: Some(0x11),
                qpn: Some(0x42),
            },
            MwImage {
                pd: 1,
                mw_type: MwType::Type2,
                rkey: 0x400,
                free: true,
                access: 0,
                addr: 0,
                length: 0,
                mr_lkey: None,
                qpn: None,
            },
        ],
        cqs: vec![CqImage {
            cq: 3,
            capacity: 2048,
            completions: vec![wc(1, WcOpcode::Recv), wc(2, WcOpcode::RecvRdmaWithImm)],
            overflows: 1,
            arm: ArmImage::Solicited,
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
fn version_1_and_2_images_are_refused_by_name() {
    for (version, bytes) in [(1, VERSION_1), (2, VERSION_2)] {
        let e = OwnerSnapshot::decode(bytes).expect_err("an old version");
        assert_eq!(
            e,
            VerbsError::BadSnapshot(format!(
                "image version {version}: this migros reads version 3 only \
                 (checkpoint and restore with the same migros version)"
            ))
        );
    }
}

#[test]
fn an_inconsistent_window_is_refused() {
    let cases: [fn(&mut MwImage); 4] = [
        // A type 1 window is never free.
        |w| w.mw_type = MwType::Type1,
        // Bound to a QP not in the image.
        |w| w.qpn = Some(0x99),
        // Bound to a region not in the image.
        |w| w.mr_lkey = Some(0x99),
        // Of a PD not in the image.
        |w| w.pd = 9,
    ];
    for (i, spoil) in cases.into_iter().enumerate() {
        let mut image = every_field();
        let w = if i == 0 { 2 } else { 1 };
        spoil(&mut image.mws[w]);
        assert!(
            matches!(OwnerSnapshot::from_image(image), Err(VerbsError::BadSnapshot(m)) if m.contains("memory window")),
            "case {i}"
        );
    }
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
        b"{\"version\":3}",
        b"{\"version\":\"3\"}",
    ] {
        assert!(OwnerSnapshot::decode(garbage).is_err());
    }
}
