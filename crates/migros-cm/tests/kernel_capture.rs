//! CM MADs the Linux kernel sent (Debian 12's 6.1, rdma_cm over the
//! kernel's SoftRoCE) and the ones migros answered with, captured on the
//! link between them while rping, ib_send_bw -R and cmtime ran both ways
//! (`data/kernel-rxe-cm.pcap`: kernel 198.18.10.1, migros 198.18.10.2),
//! and the SIDR and REJ MADs of udaddy and of rping to a port nobody
//! listens on, both ways (`data/kernel-rxe-sidr-rej.pcap`). Every MAD
//! parses and re-emits to the same 256 bytes; the kernel's REQ says what
//! the RDMA CM puts in one (service ID, header, paths, timers), and an
//! agent answers it with a REP the kernel took; the kernel's SIDR and REJ
//! say what migros has to say the same way (Q_Key, REJ reason).

use std::net::{IpAddr, Ipv4Addr};

use migros_cm::cma::CmaHeader;
use migros_cm::msg::{CmMessage, ServiceType};
use migros_cm::{Agent, AgentConfig, Instant};
use migros_proto::cm::{CmEvent, CmQpType, PortSpace};
use migros_wire::Packet;

const PCAP: &[u8] = include_bytes!("data/kernel-rxe-cm.pcap");
const PCAP_SIDR_REJ: &[u8] = include_bytes!("data/kernel-rxe-sidr-rej.pcap");
const KERNEL: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 10, 1));
const MIGROS: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 10, 2));

/// (source, destination, MAD) of every GSI datagram of the first capture.
fn mads() -> Vec<(IpAddr, IpAddr, Vec<u8>)> {
    mads_of(PCAP)
}

/// (source, destination, MAD) of every GSI datagram of a capture.
fn mads_of(pcap: &[u8]) -> Vec<(IpAddr, IpAddr, Vec<u8>)> {
    let u32_le = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    assert_eq!(u32_le(pcap, 0), 0xa1b2_c3d4, "little-endian classic pcap");
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let len = u32_le(pcap, at + 8) as usize;
        let frame = &pcap[at + 16..at + 16 + len];
        at += 16 + len;
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 15) * 4;
        let src = IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]));
        let dst = IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]));
        let udp_payload = &ip[ihl + 8..];
        let pkt = Packet::parse(udp_payload).expect("a RoCE v2 packet");
        assert_eq!(pkt.headers.bth.dest_qpn, 1);
        assert_eq!(pkt.headers.deth.unwrap().qkey, 0x8001_0000);
        assert_eq!(pkt.headers.deth.unwrap().src_qpn, 1);
        out.push((src, dst, pkt.payload.to_vec()));
    }
    out
}

#[test]
fn every_captured_mad_parses_and_reemits_byte_for_byte() {
    let all = mads();
    assert_eq!(all.len(), 38);
    let mut kinds = std::collections::BTreeMap::new();
    for (src, _, mad) in &all {
        let (h, m) = CmMessage::parse(mad).expect("parses");
        let again = m.emit(h.tid).expect("re-emits");
        assert_eq!(&again[..], &mad[..], "{src}: {m:?}");
        *kinds.entry((*src == KERNEL, m.attr_id())).or_insert(0) += 1;
    }
    // The kernel sent REQ, REP, RTU, DREQ and DREP, and so did migros.
    for attr in [0x10, 0x13, 0x14, 0x15, 0x16] {
        assert!(
            kinds.contains_key(&(true, attr)),
            "kernel {attr:#x}: {kinds:?}"
        );
        assert!(
            kinds.contains_key(&(false, attr)),
            "migros {attr:#x}: {kinds:?}"
        );
    }
}

#[test]
fn the_kernels_req_is_what_the_rdma_cm_sends() {
    let (_, _, mad) = mads()
        .into_iter()
        .find(|(s, _, m)| *s == KERNEL && m[17] == 0x10)
        .expect("a kernel REQ");
    let (h, m) = CmMessage::parse(&mad).unwrap();
    let CmMessage::Req(r) = m else { unreachable!() };
    assert_eq!(h.method, 0x03);
    let (ps, _port) = PortSpace::from_service_id(r.service_id).expect("an IP service ID");
    assert_eq!(ps, PortSpace::Tcp);
    assert_eq!(r.service_type, ServiceType::Rc);
    assert_eq!(r.remote_cm_response_timeout, 20);
    assert_eq!(r.local_cm_response_timeout, 20);
    assert_eq!(r.max_cm_retries, 15);
    assert_eq!(r.pkey, 0xffff);
    assert_eq!(r.path_mtu, 3, "1024 on a 1500-byte veth");
    assert_eq!(migros_cm::cma::addr_of_gid(r.primary.local_gid), KERNEL);
    assert_eq!(migros_cm::cma::addr_of_gid(r.primary.remote_gid), MIGROS);
    // What migros' agent computes for the same path: the packet lifetime
    // of 6.1 (18) + 1, rounded with rxe's ACK delay of 15.
    assert_eq!(r.primary.local_ack_timeout, 19);
    assert_eq!(
        r.primary.local_ack_timeout,
        migros_cm::agent::ack_timeout(15, migros_cm::agent::IBOE_PACKET_LIFETIME)
    );
    let hdr = CmaHeader::parse(&r.private_data).expect("an RDMA CM header");
    assert_eq!(hdr.src.ip(), KERNEL);
    assert_eq!(hdr.dst, MIGROS);
    assert_eq!(r.private_data.len(), 92);
}

#[test]
fn an_agent_answers_the_kernels_req() {
    let (_, _, mad) = mads()
        .into_iter()
        .find(|(s, _, m)| *s == KERNEL && m[17] == 0x10)
        .unwrap();
    let CmMessage::Req(req) = CmMessage::parse(&mad).unwrap().1 else {
        unreachable!()
    };
    let (_, port) = PortSpace::from_service_id(req.service_id).unwrap();
    let mut a = Agent::new(AgentConfig {
        addr: MIGROS,
        node_guid: 0x0200_5eff_fe12_0a02,
        ca_ack_delay: 15,
        max_mtu: 3,
        seed: 1,
    });
    let now = Instant::from_nanos(1);
    let (bind, _) = a.bind(7, PortSpace::Tcp, None, port, false).unwrap();
    a.listen(7, bind, CmQpType::Rc).unwrap();
    a.handle_mad(now, KERNEL, &mad).unwrap();
    let (_, ev) = a.poll_event().expect("a connection request");
    let CmEvent::ConnectRequest { conn, info, .. } = ev else {
        panic!("{ev:?}")
    };
    assert_eq!(info.remote_qpn, req.local_qpn);
    assert_eq!(info.sq_psn, req.starting_psn);
    assert_eq!(info.peer.ip(), KERNEL);
    a.accept(
        now,
        7,
        conn,
        &migros_proto::cm::AcceptParams {
            qpn: 0x1234,
            responder_resources: 1,
            initiator_depth: 1,
            flow_control: true,
            rnr_retry_count: 7,
            srq: false,
            qkey: 0,
            private_data: vec![],
        },
    )
    .unwrap();
    let t = a.poll_transmit().expect("a REP");
    assert_eq!(t.dst, KERNEL);
    let (h, m) = CmMessage::parse(&t.mad).unwrap();
    assert_eq!(
        h.tid,
        CmMessage::parse(&mad).unwrap().0.tid,
        "the REQ's transaction"
    );
    let CmMessage::Rep(rep) = m else {
        panic!("{m:?}")
    };
    assert_eq!(rep.remote_comm_id, req.local_comm_id);
    assert_eq!(rep.local_qpn, 0x1234);
    assert_eq!(rep.target_ack_delay, 15);
}

#[test]
fn sidr_and_rej_as_the_kernel_says_them() {
    let all = mads_of(PCAP_SIDR_REJ);
    let mut seen = Vec::new();
    for (src, dst, mad) in &all {
        let (h, m) = CmMessage::parse(mad).expect("parses");
        assert_eq!(&m.emit(h.tid).unwrap()[..], &mad[..], "{src}: {m:?}");
        let from_kernel = *src == KERNEL;
        match &m {
            CmMessage::SidrReq(r) => {
                let (ps, _) = PortSpace::from_service_id(r.service_id).unwrap();
                assert_eq!(ps, PortSpace::Udp);
                let hdr = CmaHeader::parse(&r.private_data).expect("an RDMA CM header");
                assert_eq!(hdr.src.ip(), *src);
                assert_eq!(hdr.dst, *dst);
            }
            CmMessage::SidrRep(r) => {
                assert_eq!(r.status, 0, "{m:?}");
                // The RDMA CM's UDP Q_Key, on either side.
                assert_eq!(r.qkey, 0x0123_4567, "{m:?}");
                assert_ne!(r.qpn, 0);
            }
            CmMessage::Rej(r) => {
                // Nobody listens: "invalid service ID", the consumer told
                // with status 8.
                assert_eq!(r.reason, 8, "{m:?}");
                assert_eq!(r.message_rejected, migros_cm::msg::MsgResponse::Req);
                // No connection on the rejecting side; the REQ's ID back.
                assert_eq!(r.local_comm_id, 0, "{m:?}");
                assert_ne!(r.remote_comm_id, 0);
            }
            other => panic!("{other:?}"),
        }
        seen.push((from_kernel, m.attr_id()));
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        vec![
            (false, 0x12),
            (false, 0x17),
            (false, 0x18),
            (true, 0x12),
            (true, 0x17),
            (true, 0x18)
        ]
    );
}
