//! One connection's record: its IB CM state (the kernel's `enum
//! ib_cm_state`), the identifiers and parameters both sides agreed on, and
//! the message it waits an answer for (resent until answered or out of
//! retries).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use migros_proto::cm::{CmQpType, ConnInfo};

use crate::mad::MAD_LEN;
use crate::time::Instant;

/// The IB CM states of a connection.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum State {
    /// Rejected, timed out or done: only destroying it is left.
    Idle,
    ReqSent,
    ReqRcvd,
    /// A REQ was taken and is being answered slowly: a duplicate REQ gets
    /// an MRA (the RDMA CM's "delayed MRA").
    MraReqSent,
    MraReqRcvd,
    RepSent,
    RepRcvd,
    /// A REP was taken; a duplicate REP gets an MRA.
    MraRepSent,
    MraRepRcvd,
    Established,
    DreqSent,
    DreqRcvd,
    Timewait,
    SidrReqSent,
    SidrReqRcvd,
}

/// A message waiting for its answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Retransmit {
    pub mad: [u8; MAD_LEN],
    pub deadline: Instant,
    pub timeout: Duration,
    /// Sends left after the first.
    pub retries_left: u8,
    /// Sends so far.
    pub sends: u32,
}

/// A connection. A migration's [`ConnSnap`](crate::migrate::ConnSnap)
/// carries it as it is but for its owner (the destination's) and its
/// timers (as time left): these are not serialized.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Conn {
    #[serde(skip)]
    pub owner: u64,
    pub local_id: u32,
    /// 0 until the peer's first message names it.
    pub remote_id: u32,
    pub state: State,
    pub qp_type: CmQpType,
    /// Where this side's MADs go.
    pub peer_ip: IpAddr,
    pub tid: u64,
    pub service_id: u64,
    pub remote_ca_guid: u64,
    pub local_qpn: u32,
    pub remote_qpn: u32,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// The parameters the client's QP gets (completed by the REP on the
    /// active side).
    pub info: ConnInfo,
    /// How long to wait for an answer to a REQ, REP or DREQ.
    pub timeout_ms: u64,
    pub max_cm_retries: u8,
    /// ACK timeout exponent of the path (the kernel's `av.timeout`).
    pub av_timeout: u8,
    #[serde(skip)]
    pub retransmit: Option<Retransmit>,
    #[serde(skip)]
    pub timewait_until: Option<Instant>,
    /// Private data of our last RTU, MRA or DREP, for duplicates.
    pub last_private: Vec<u8>,
    /// DISCONNECTED was reported (the RDMA CM id left CONNECT).
    pub disconnect_reported: bool,
    /// Whether the remote id/QPN tables point here.
    pub indexed: bool,
}

impl Conn {
    /// Whether the application still has the connection (events reach it).
    pub fn connecting_or_connected(&self) -> bool {
        !matches!(self.state, State::Idle | State::Timewait)
    }
}
