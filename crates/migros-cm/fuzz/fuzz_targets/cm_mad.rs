//! Arbitrary bytes as a GSI datagram and as a CM MAD: the parsers and an
//! agent with a listener and a connection in progress must never panic,
//! and whatever parses re-emits to bytes that parse the same.

#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use libfuzzer_sys::fuzz_target;
use migros_cm::msg::CmMessage;
use migros_cm::{gsi, Agent, AgentConfig, Instant};
use migros_proto::cm::{CmQpType, ConnectParams, PortSpace};
use migros_wire::{IpContext, ROCE_V2_PORT};

const A: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 9, 1));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 9, 2));

fuzz_target!(|data: &[u8]| {
    let ctx = IpContext::new(B, A, ROCE_V2_PORT, ROCE_V2_PORT);
    let _ = gsi::open(&ctx, data);

    if let Ok((h, m)) = CmMessage::parse(data) {
        let again = m.emit(h.tid).expect("a parsed message re-emits");
        assert_eq!(CmMessage::parse(&again).expect("re-parses").1, m);
    }

    let mut agent = Agent::new(AgentConfig {
        addr: A,
        node_guid: 1,
        ca_ack_delay: 15,
        max_mtu: 5,
        seed: 7,
    });
    let now = Instant::from_nanos(1);
    let (bind, _) = agent.bind(1, PortSpace::Tcp, None, 7174, false).unwrap();
    agent.listen(1, bind, CmQpType::Rc).unwrap();
    let (b2, _) = agent.bind(1, PortSpace::Udp, None, 7174, false).unwrap();
    agent.listen(1, b2, CmQpType::Ud).unwrap();
    let (b3, _) = agent.bind(1, PortSpace::Tcp, Some(A), 0, false).unwrap();
    let _ = agent.connect(
        now,
        1,
        &ConnectParams {
            bind: b3,
            src: A,
            dst: std::net::SocketAddr::new(B, 9),
            qp_type: CmQpType::Rc,
            qpn: 5,
            responder_resources: 1,
            initiator_depth: 1,
            flow_control: true,
            retry_count: 7,
            rnr_retry_count: 7,
            srq: false,
            path_mtu: 3,
            hop_limit: 64,
            traffic_class: 0,
            packet_life_time: 16,
            private_data: vec![],
        },
    );
    // The data as a MAD, and as several MADs (the agent's state moves).
    for chunk in std::iter::once(data).chain(data.chunks(256)) {
        let _ = agent.handle_mad(now, B, chunk);
        while agent.poll_transmit().is_some() {}
        while agent.poll_event().is_some() {}
    }
    agent.handle_timeout(Instant::from_nanos(u64::MAX / 2));
});
