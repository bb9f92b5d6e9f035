//! The connection manager's messages between a daemon and librdmacm.
//!
//! librdmacm opens one connection per device it uses, starting with
//! [`crate::Request::CmHello`] (answered by `Response::Welcome`). From then
//! on the client writes [`CmRequest`]s and the daemon writes [`CmDown`]
//! frames: exactly one [`CmDown::Reply`] per request, in order, and
//! [`CmDown::Event`]s whenever the connection manager has news for one of
//! the client's connections, interleaved with the replies.
//!
//! The daemon runs the InfiniBand CM on QP1 of its device (REQ, REP, RTU,
//! …, on the wire as the kernel sends them); the client keeps the RDMA CM
//! id and moves its QP through INIT, RTR and RTS with what a [`ConnInfo`]
//! says, as librdmacm does with what the kernel's `rdma_ucm` says.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// A port space (`enum rdma_port_space`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PortSpace {
    Ipoib,
    Tcp,
    Udp,
    Ib,
}

impl PortSpace {
    /// The C value (`RDMA_PS_TCP` = 0x0106, …).
    pub fn to_raw(self) -> u16 {
        match self {
            PortSpace::Ipoib => 0x0002,
            PortSpace::Tcp => 0x0106,
            PortSpace::Udp => 0x0111,
            PortSpace::Ib => 0x013f,
        }
    }

    pub fn from_raw(v: u32) -> Option<PortSpace> {
        match v {
            0x0002 => Some(PortSpace::Ipoib),
            0x0106 => Some(PortSpace::Tcp),
            0x0111 => Some(PortSpace::Udp),
            0x013f => Some(PortSpace::Ib),
            _ => None,
        }
    }

    /// The service ID of `port` in this space: `0x0000_0000_01PP_pppp`
    /// (the kernel's `rdma_get_service_id`).
    pub fn service_id(self, port: u16) -> u64 {
        (u64::from(self.to_raw()) << 16) | u64::from(port)
    }

    /// Splits an IP-based service ID into its space and port.
    pub fn from_service_id(sid: u64) -> Option<(PortSpace, u16)> {
        if sid >> 32 != 0 {
            return None;
        }
        let ps = PortSpace::from_raw((sid >> 16) as u32)?;
        Some((ps, sid as u16))
    }
}

/// The transport of a connection: RC and UC connect with REQ/REP/RTU, UD
/// resolves the peer's QP with SIDR_REQ/SIDR_REP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmQpType {
    Rc,
    Uc,
    Ud,
}

/// What `rdma_connect` asks for (the daemon builds the REQ or SIDR_REQ).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectParams {
    /// The binding of the local address and port ([`CmRequest::Bind`]).
    pub bind: u32,
    /// The local address (the binding's may be the wildcard).
    pub src: IpAddr,
    pub dst: SocketAddr,
    pub qp_type: CmQpType,
    pub qpn: u32,
    pub responder_resources: u8,
    pub initiator_depth: u8,
    pub flow_control: bool,
    pub retry_count: u8,
    pub rnr_retry_count: u8,
    pub srq: bool,
    /// IB MTU code (1 = 256 … 5 = 4096) of the path.
    pub path_mtu: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
    /// IB time exponent of the packet lifetime (the kernel uses 16 on
    /// RoCE); sets the CM's retry timeout and the QP's ACK timeout.
    pub packet_life_time: u8,
    /// The application's private data (after the RDMA CM header).
    pub private_data: Vec<u8>,
}

/// What `rdma_accept` answers with (the daemon builds the REP or SIDR_REP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptParams {
    pub qpn: u32,
    pub responder_resources: u8,
    pub initiator_depth: u8,
    pub flow_control: bool,
    pub rnr_retry_count: u8,
    pub srq: bool,
    /// Q_Key of a UD QP (SIDR_REP).
    pub qkey: u32,
    pub private_data: Vec<u8>,
}

/// What a REQ (passive side) or a REP (active side) said, as the client
/// needs it for the connection event and for its QP's attributes
/// (`rdma_init_qp_attr`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnInfo {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub remote_qpn: u32,
    /// PSN the local QP expects first (`rq_psn`).
    pub rq_psn: u32,
    /// PSN the local QP sends first (`sq_psn`).
    pub sq_psn: u32,
    pub path_mtu: u8,
    /// READs/atomics the local QP answers at once (`max_dest_rd_atomic`).
    pub responder_resources: u8,
    /// READs/atomics the local QP issues at once (`max_rd_atomic`).
    pub initiator_depth: u8,
    pub flow_control: bool,
    pub retry_count: u8,
    pub rnr_retry_count: u8,
    pub srq: bool,
    pub remote_gid: [u8; 16],
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
    pub sl: u8,
    /// The local QP's ACK timeout (4.096 µs × 2^t).
    pub ack_timeout: u8,
    /// The peer's private data, as long as the message carries (56 bytes
    /// after a REQ's RDMA CM header, 196 in a REP).
    pub private_data: Vec<u8>,
}

/// News about a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmEvent {
    /// A REQ for a listener: `conn` is the new connection.
    ConnectRequest {
        listen: u32,
        conn: u32,
        info: ConnInfo,
    },
    /// A SIDR_REQ for a UD listener.
    SidrRequest {
        listen: u32,
        conn: u32,
        local: SocketAddr,
        peer: SocketAddr,
        private_data: Vec<u8>,
    },
    /// The REP to our REQ: move the QP to RTR/RTS, then [`CmRequest::Establish`].
    ConnectResponse { conn: u32, info: ConnInfo },
    /// The RTU arrived (passive side), or `Notify` said so.
    Established { conn: u32 },
    /// A REJ: `reason` is the IB CM reason (8: no such service, 28: the
    /// peer application rejected).
    Rejected {
        conn: u32,
        reason: u16,
        private_data: Vec<u8>,
    },
    /// The peer never answered (status −ETIMEDOUT), or a SIDR_REP with a
    /// failure status (the status).
    Unreachable { conn: u32, status: i32 },
    /// DREQ or DREP received, or our DREQ timed out (status −ETIMEDOUT).
    Disconnected { conn: u32, status: i32 },
    /// The connection left the time-wait state.
    TimewaitExit { conn: u32 },
    /// The SIDR_REP to our SIDR_REQ: the peer's UD QP.
    SidrResolved {
        conn: u32,
        qpn: u32,
        qkey: u32,
        peer_gid: [u8; 16],
        hop_limit: u8,
        traffic_class: u8,
        private_data: Vec<u8>,
    },
}

impl CmEvent {
    /// The connection the event is about.
    pub fn conn(&self) -> u32 {
        match self {
            CmEvent::ConnectRequest { conn, .. }
            | CmEvent::SidrRequest { conn, .. }
            | CmEvent::ConnectResponse { conn, .. }
            | CmEvent::Established { conn }
            | CmEvent::Rejected { conn, .. }
            | CmEvent::Unreachable { conn, .. }
            | CmEvent::Disconnected { conn, .. }
            | CmEvent::TimewaitExit { conn }
            | CmEvent::SidrResolved { conn, .. } => *conn,
        }
    }
}

/// What a librdmacm connection asks its daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmRequest {
    /// Takes `addr:port` (`None`: any address; port 0: an ephemeral one).
    Bind {
        ps: PortSpace,
        addr: Option<IpAddr>,
        port: u16,
        reuse: bool,
    },
    Unbind {
        bind: u32,
    },
    /// Listens on a binding for connections of `qp_type`.
    Listen {
        bind: u32,
        qp_type: CmQpType,
    },
    Unlisten {
        listen: u32,
    },
    /// Sends a REQ (RC, UC) or a SIDR_REQ (UD).
    Connect(ConnectParams),
    /// Sends the REP (or SIDR_REP) to a connection request.
    Accept {
        conn: u32,
        params: AcceptParams,
    },
    /// Sends a REJ (or a SIDR_REP with status "reject"); `reason` 0 is
    /// "consumer defined" (28), what `rdma_reject` sends.
    Reject {
        conn: u32,
        reason: u16,
        private_data: Vec<u8>,
    },
    /// Sends the RTU after our REP arrived and the QP is ready.
    Establish {
        conn: u32,
    },
    /// The QP saw its first packet before the RTU (`IBV_EVENT_COMM_EST`).
    Notify {
        conn: u32,
    },
    /// Sends a DREQ, or the DREP to the peer's DREQ.
    Disconnect {
        conn: u32,
    },
    /// Forgets a connection (REJ, DREQ or DREP first, as its state asks).
    Destroy {
        conn: u32,
    },
}

/// The daemon's answer to a [`CmRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmResponse {
    Ok,
    Bound {
        bind: u32,
        port: u16,
    },
    Listening {
        listen: u32,
    },
    /// The REQ/SIDR_REQ is out; `psn` is the local QP's receive PSN.
    Connected {
        conn: u32,
        psn: u32,
    },
    Error {
        errno: i32,
        message: String,
    },
}

/// What the daemon writes on a librdmacm connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmDown {
    Reply(CmResponse),
    Event(CmEvent),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_ids() {
        assert_eq!(PortSpace::Tcp.service_id(7174), 0x0000_0000_0106_1c06);
        assert_eq!(
            PortSpace::from_service_id(0x0106_1c06),
            Some((PortSpace::Tcp, 7174))
        );
        assert_eq!(PortSpace::from_service_id(0x1_0106_0000), None);
        assert_eq!(PortSpace::from_service_id(0x0107_0000), None);
    }

    #[test]
    fn messages_round_trip() {
        let msgs = vec![
            CmRequest::Bind {
                ps: PortSpace::Tcp,
                addr: None,
                port: 0,
                reuse: false,
            },
            CmRequest::Connect(ConnectParams {
                bind: 1,
                src: "198.18.0.1".parse().unwrap(),
                dst: "198.18.0.2:7174".parse().unwrap(),
                qp_type: CmQpType::Rc,
                qpn: 0x1234,
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
                private_data: vec![1, 2, 3],
            }),
            CmRequest::Destroy { conn: 9 },
        ];
        for m in msgs {
            let b = postcard::to_allocvec(&m).unwrap();
            assert_eq!(postcard::from_bytes::<CmRequest>(&b).unwrap(), m);
        }
        let ev = CmDown::Event(CmEvent::Rejected {
            conn: 3,
            reason: 8,
            private_data: vec![0; 148],
        });
        let b = postcard::to_allocvec(&ev).unwrap();
        assert_eq!(postcard::from_bytes::<CmDown>(&b).unwrap(), ev);
    }
}
