//! Unit tests of the requester: a UD send to a QPN wider than 24 bits.

use std::net::{IpAddr, Ipv4Addr};

use migros_wire::{Packet, Psn};

use crate::device::{Device, DeviceConfig, NoMemory};
use crate::error::VerbsError;
use crate::time::Instant;
use migros_proto::verbs::*;

const QPN: Qpn = 0x42;

/// A device with one UD QP in RTS.
fn ud_device() -> Device {
    let mut dev = Device::new(DeviceConfig::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))));
    let now = Instant::ZERO;
    let (owner, pd, cq) = (1, 2, 3);
    dev.alloc_pd(owner, pd).expect("pd");
    dev.create_cq(owner, cq, 16).expect("cq");
    let cap = QpCap {
        max_send_wr: 4,
        max_recv_wr: 4,
        max_send_sge: 1,
        max_recv_sge: 1,
        max_inline_data: 64,
    };
    let (qp_type, srq, sq_sig_all) = (QpType::Ud, None, true);
    let (send_cq, recv_cq) = (cq, cq);
    let init = QpInit {
        owner,
        qpn: QPN,
        qp_type,
        pd,
        send_cq,
        recv_cq,
        srq,
        cap,
        sq_sig_all,
    };
    dev.create_qp(init).expect("qp");
    let steps = [
        (
            QpState::Init,
            AttrMask::PKEY_INDEX | AttrMask::PORT | AttrMask::QKEY,
        ),
        (QpState::Rtr, AttrMask::default()),
        (QpState::Rts, AttrMask::SQ_PSN),
    ];
    for (qp_state, mask) in steps {
        let attr = QpAttr {
            qp_state,
            port_num: 1,
            qkey: 0x1111,
            ..QpAttr::default()
        };
        dev.modify_qp(now, QPN, &attr, AttrMask::STATE | mask)
            .expect("modify_qp");
    }
    dev
}

fn ud_send(remote_qpn: Qpn) -> SendWr {
    SendWr {
        wr_id: 9,
        opcode: WrOpcode::Send,
        flags: SendFlags::default(),
        data: SendData::Inline(vec![7; 10]),
        ud: Some(UdDest {
            addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
            remote_qpn,
            remote_qkey: 0x1111,
        }),
    }
}

#[test]
fn ud_send_to_a_qpn_wider_than_24_bits_is_refused() {
    // A client writes the remote QPN as 32 bits; the BTH has 24. This
    // used to reach the packet emitter and panic the device.
    let mut dev = ud_device();
    let now = Instant::ZERO;
    let wide = dev.post_send(QPN, ud_send(1 << 24));
    assert!(
        matches!(wide, Err(VerbsError::InvalidArgument(_))),
        "{wide:?}"
    );
    let mut buf = Vec::new();
    assert_eq!(dev.poll_transmit(now, &mut NoMemory, &mut buf), None);

    dev.post_send(QPN, ud_send(MAX_QPN))
        .expect("the widest QPN");
    let sent = dev.poll_transmit(now, &mut NoMemory, &mut buf);
    assert!(sent.is_some());
    let packet = Packet::parse(&buf).expect("parses");
    assert_eq!(packet.headers.bth.dest_qpn, MAX_QPN);
    assert_eq!(packet.headers.bth.psn, Psn::new(0));
    assert_eq!(packet.payload, &[7; 10]);
}
