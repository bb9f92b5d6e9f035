//! The device's rules for posting work requests (QP states, queue depth,
//! what each service carries), memory windows as verbs calls, and the
//! checkpoint image's version: each bad call gets its error, never a
//! packet or a panic.

use std::net::{IpAddr, Ipv4Addr};

use migros_test_support::rc;
use migros_transport::{
    Access, AttrMask, Device, DeviceConfig, Instant, Memory, MemoryFault, MrSpec, MwState, MwType,
    OwnerId, OwnerSnapshot, QpAttr, QpCap, QpInit, QpState, QpType, Qpn, RecvWr, SendData,
    SendFlags, SendWr, VerbsError, WcStatus, WrOpcode,
};

const OWNER: OwnerId = 1;
const PD: u32 = 2;
const CQ: u32 = 3;
const QPN: Qpn = 0x42;
const NOW: Instant = Instant::ZERO;

struct NoMemory;

impl Memory for NoMemory {
    fn read(&mut self, owner: OwnerId, addr: u64, buf: &mut [u8]) -> Result<(), MemoryFault> {
        let len = buf.len();
        Err(MemoryFault { owner, addr, len })
    }
    fn write(&mut self, owner: OwnerId, addr: u64, data: &[u8]) -> Result<(), MemoryFault> {
        let len = data.len();
        Err(MemoryFault { owner, addr, len })
    }
}

fn device(qp_type: QpType) -> Device {
    let mut d = Device::new(DeviceConfig::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))));
    d.alloc_pd(OWNER, PD).unwrap();
    d.create_cq(OWNER, CQ, 64).unwrap();
    let cap = QpCap {
        max_inline_data: 16,
        ..rc::cap(2, 2)
    };
    d.create_qp(QpInit {
        qp_type,
        sq_sig_all: true,
        ..rc::rc_qp_init(OWNER, QPN, PD, CQ, cap)
    })
    .unwrap();
    d
}

/// Moves the QP through `states` with the masks its service needs.
fn walk(d: &mut Device, qp_type: QpType, states: &[QpState]) {
    for &qp_state in states {
        let attr = QpAttr {
            qp_state,
            dest_addr: Some(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2))),
            dest_qp_num: 7,
            ..QpAttr::default()
        };
        let mask = match (qp_state, qp_type) {
            (QpState::Init, QpType::Ud) => AttrMask(0x1 | 0x10 | 0x20 | 0x40),
            (QpState::Init, _) => AttrMask(0x1 | 0x8 | 0x10 | 0x20),
            (QpState::Rtr, QpType::Ud) => AttrMask::STATE,
            (QpState::Rtr, QpType::Uc) => AttrMask(0x1 | 0x80 | 0x100 | 0x100000 | 0x1000),
            (QpState::Rtr, QpType::Rc) => {
                AttrMask(0x1 | 0x80 | 0x100 | 0x100000 | 0x1000 | 0x20000 | 0x8000)
            }
            (QpState::Rts, QpType::Rc) => AttrMask(0x1 | 0x10000 | 0x200 | 0x400 | 0x800 | 0x2000),
            (QpState::Rts, _) => AttrMask(0x1 | 0x10000),
            _ => AttrMask::STATE,
        };
        d.modify_qp(NOW, QPN, &attr, mask)
            .unwrap_or_else(|e| panic!("to {qp_state:?}: {e}"));
    }
}

fn send(wr_id: u64) -> SendWr {
    SendWr {
        wr_id,
        opcode: WrOpcode::Send,
        flags: SendFlags::SIGNALED,
        data: SendData::Inline(vec![1; 4]),
        ud: None,
    }
}

fn recv(wr_id: u64) -> RecvWr {
    RecvWr {
        wr_id,
        sges: Vec::new(),
    }
}

fn completions(d: &mut Device) -> Vec<(u64, WcStatus)> {
    let mut out = Vec::new();
    d.poll_cq(CQ, usize::MAX, &mut out).unwrap();
    out.iter().map(|w| (w.wr_id, w.status)).collect()
}

#[test]
fn post_send_needs_rts_or_sqd_and_flushes_in_err() {
    use QpState::{Init, Rtr, Rts};
    for reach in [vec![], vec![Init], vec![Init, Rtr]] {
        let mut d = device(QpType::Rc);
        walk(&mut d, QpType::Rc, &reach);
        let r = d.post_send(QPN, send(1));
        assert!(
            matches!(r, Err(VerbsError::WrongState { .. })),
            "{reach:?}: {r:?}"
        );
        assert!(completions(&mut d).is_empty(), "nothing queued");
    }
    let mut d = device(QpType::Rc);
    walk(&mut d, QpType::Rc, &[Init, Rtr, Rts, QpState::Err]);
    d.post_send(QPN, send(5)).expect("err accepts");
    assert_eq!(completions(&mut d), [(5, WcStatus::WrFlushErr)]);
}

#[test]
fn post_recv_needs_a_state_past_reset() {
    let mut d = device(QpType::Rc);
    let r = d.post_recv(QPN, recv(1));
    assert!(matches!(r, Err(VerbsError::WrongState { .. })), "{r:?}");
    walk(&mut d, QpType::Rc, &[QpState::Init]);
    d.post_recv(QPN, recv(1)).expect("init accepts receives");
    d.post_recv(QPN, recv(2)).expect("two fit");
    assert_eq!(d.post_recv(QPN, recv(3)), Err(VerbsError::QueueFull));
    assert_eq!(d.qp_outstanding(QPN), Some((0, 2)));
}

#[test]
fn the_send_queue_holds_max_send_wr() {
    let mut d = device(QpType::Rc);
    walk(
        &mut d,
        QpType::Rc,
        &[QpState::Init, QpState::Rtr, QpState::Rts],
    );
    d.post_send(QPN, send(1)).unwrap();
    d.post_send(QPN, send(2)).unwrap();
    assert_eq!(d.post_send(QPN, send(3)), Err(VerbsError::QueueFull));
    assert_eq!(d.qp_outstanding(QPN), Some((2, 0)));
}

#[test]
fn what_each_service_carries() {
    let local_inv = SendWr {
        opcode: WrOpcode::LocalInv { rkey: 0x100 },
        data: SendData::Sges(vec![]),
        ..send(1)
    };
    let atomic_write = SendWr {
        opcode: WrOpcode::AtomicWrite {
            remote_addr: 0,
            rkey: 1,
        },
        data: SendData::Inline(vec![0; 8]),
        ..send(1)
    };
    for (qp_type, wr, ok) in [
        (QpType::Ud, local_inv.clone(), false),
        (QpType::Uc, local_inv.clone(), true),
        (QpType::Uc, atomic_write.clone(), false),
        (QpType::Rc, atomic_write.clone(), true),
        (
            QpType::Rc,
            SendWr {
                data: SendData::Inline(vec![0; 4]),
                ..local_inv.clone()
            },
            false,
        ),
    ] {
        let mut d = device(qp_type);
        walk(
            &mut d,
            qp_type,
            &[QpState::Init, QpState::Rtr, QpState::Rts],
        );
        let r = d.post_send(QPN, wr.clone());
        assert_eq!(r.is_ok(), ok, "{qp_type:?} {:?}: {r:?}", wr.opcode);
    }
}

#[test]
fn memory_window_verbs() {
    let mut d = device(QpType::Rc);
    d.alloc_mw(OWNER, PD, MwType::Type2, 0x1234_5600).unwrap();
    assert!(
        matches!(
            d.alloc_mw(OWNER, PD, MwType::Type1, 0x1234_56ff),
            Err(VerbsError::AlreadyExists { .. })
        ),
        "same index"
    );
    assert!(matches!(
        d.alloc_mw(OWNER, PD + 1, MwType::Type1, 0x200),
        Err(VerbsError::NotFound { .. })
    ));
    // A region's rkey may not share a window's index, nor the reverse.
    let mr = MrSpec {
        owner: OWNER,
        pd: PD,
        addr: 0x1000,
        length: 64,
        iova: 0x1000,
        lkey: 9,
        rkey: 0x1234_5642,
        access: Access::LOCAL_WRITE | Access::MW_BIND,
    };
    assert!(d.reg_mr(mr).is_err());
    d.reg_mr(MrSpec { rkey: 0x4400, ..mr }).unwrap();
    assert!(d.alloc_mw(OWNER, PD, MwType::Type1, 0x4480).is_err());
    let w = d.query_mw(0x1234_5600).unwrap();
    assert_eq!((w.state, w.mw_type), (MwState::Free, MwType::Type2));
    assert!(matches!(d.dealloc_pd(PD), Err(VerbsError::Busy(_))));
    d.dealloc_mw(0x1234_56aa)
        .expect("any key byte names the window");
    assert!(d.query_mw(0x1234_5600).is_none());
}

#[test]
fn images_of_another_version_are_refused_as_such() {
    let mut d = device(QpType::Rc);
    d.pause_owner(OWNER).unwrap();
    let image = d.snapshot_owner(NOW, OWNER).unwrap().encode();
    let mut json: serde_json::Value = serde_json::from_slice(&image).unwrap();
    assert_eq!(json["version"], 3);
    json["version"] = 2.into();
    // A version 2 image also lacks fields version 3 has: the version is
    // what the error names.
    json.as_object_mut().unwrap().remove("mws");
    let old = serde_json::to_vec(&json).unwrap();
    let err = OwnerSnapshot::decode(&old).unwrap_err().to_string();
    assert!(
        err.contains("version 2") && err.contains("reads version 3"),
        "{err}"
    );
    assert!(OwnerSnapshot::decode(b"{}").is_err());
    assert!(OwnerSnapshot::decode(&image).is_ok());
    let _ = NoMemory;
}
