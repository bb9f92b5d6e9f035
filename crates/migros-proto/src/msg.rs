//! Messages between a client and its daemon.
//!
//! A client connection starts with [`Request::Hello`]; every request but
//! the doorbells gets exactly one [`Response`], in order. A completion
//! channel is a second connection that starts with
//! [`Request::AttachChannel`] and then only carries [`Event`]s from the
//! daemon. A librdmacm connection starts with [`Request::CmHello`] and
//! then speaks the connection manager's messages ([`crate::cm`]). The
//! daemon identifies the client's process by the socket's peer credentials
//! and reaches its memory directly; addresses in requests are addresses in
//! the client's own address space.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::counters::{DeviceCounters, QpCounters};
use crate::verbs::*;

/// Version of this protocol; a daemon refuses clients of another.
/// 3: memory windows, region I/O addresses, CQ and SRQ resizing, SRQ
/// queries, asynchronous events. 4: the device's GID table
/// ([`DeviceInfo::gids`]) and the port's state.
pub const PROTOCOL_VERSION: u32 = 4;

/// Most memory windows a session may hold (`max_mw`).
pub const MAX_MW: u32 = 1 << 16;

/// Handle of a completion channel.
pub type ChannelId = u32;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// First message of a session. `path` is the socket path the client
    /// connected to, as the client sees it; `inode` is the inode number of
    /// the client's own socket (`fstat`), the id CRIU knows the socket by.
    Hello {
        version: u32,
        path: String,
        inode: u64,
    },
    /// First (and only) message of a completion channel connection
    /// (`inode` as in [`Request::Hello`]).
    AttachChannel {
        version: u32,
        session: u64,
        channel: ChannelId,
        inode: u64,
    },
    QueryDevice,
    AllocPd,
    DeallocPd {
        pd: Pdn,
    },
    /// `iova` is the address remote peers and SGEs name the region's
    /// first byte by (`addr` for `ibv_reg_mr`).
    RegMr {
        pd: Pdn,
        addr: u64,
        length: u64,
        iova: u64,
        access: Access,
    },
    DeregMr {
        lkey: u32,
    },
    /// A memory window of `pd`; answered [`Response::Mw`].
    AllocMw {
        pd: Pdn,
        mw_type: MwType,
    },
    /// The window with this rkey's index, whatever its key byte now.
    DeallocMw {
        rkey: u32,
    },
    CreateChannel,
    DestroyChannel {
        channel: ChannelId,
    },
    /// `ring` holds `entries` CQEs ([`crate::ring::CQE_SIZE`] bytes each);
    /// `ctrl` is the CQ's control word (the client's consumer index).
    CreateCq {
        entries: u32,
        ring: u64,
        ctrl: u64,
        channel: Option<ChannelId>,
    },
    DestroyCq {
        cq: Cqn,
    },
    /// The CQ moves to a new ring of `entries` CQEs with its own control
    /// word; the completions the client has not taken yet are copied to
    /// the start of the new ring, in order. The client holds its consumer
    /// still until the answer, then reads the new ring from index 0.
    ResizeCq {
        cq: Cqn,
        entries: u32,
        ring: u64,
        ctrl: u64,
    },
    /// Arms the CQ: the next completion sends an [`Event::Completion`].
    ReqNotifyCq {
        cq: Cqn,
        solicited_only: bool,
    },
    /// `ring` holds `max_wr` receive WQEs; `ctrl` receives the daemon's consumer index.
    CreateSrq {
        pd: Pdn,
        max_wr: u32,
        max_sge: u32,
        limit: u32,
        ring: u64,
        ctrl: u64,
    },
    /// `limit`: arms the limit event (0 disarms). `resize`: the SRQ
    /// takes up to `max_wr` receives from a new ring.
    ModifySrq {
        srq: Srqn,
        limit: Option<u32>,
        resize: Option<SrqResize>,
    },
    /// Answered [`Response::SrqAttr`].
    QuerySrq {
        srq: Srqn,
    },
    DestroySrq {
        srq: Srqn,
    },
    /// `sq_ring` holds `cap.max_send_wr` send WQEs, `rq_ring` `cap.max_recv_wr`
    /// receive WQEs (0 with an SRQ); `ctrl` is the QP's control block.
    CreateQp {
        pd: Pdn,
        qp_type: QpType,
        send_cq: Cqn,
        recv_cq: Cqn,
        srq: Option<Srqn>,
        cap: QpCap,
        sq_sig_all: bool,
        sq_ring: u64,
        rq_ring: u64,
        ctrl: u64,
    },
    ModifyQp {
        qpn: Qpn,
        attr: QpAttr,
        mask: AttrMask,
    },
    QueryQp {
        qpn: Qpn,
    },
    DestroyQp {
        qpn: Qpn,
    },
    /// The send ring of `qpn` is filled up to producer index `pi` (no response).
    SqDoorbell {
        qpn: Qpn,
        pi: u32,
    },
    /// The receive ring of `qpn` is filled up to `pi` (no response).
    RqDoorbell {
        qpn: Qpn,
        pi: u32,
    },
    /// The SRQ's ring is filled up to `pi` (no response).
    SrqDoorbell {
        srq: Srqn,
        pi: u32,
    },
    /// Asynchronous events of this session (QPs, CQs, SRQs, the port)
    /// go to `channel` from now on, as [`Event::Async`].
    SubscribeAsync {
        channel: ChannelId,
    },
    /// Counters of the device and of this session's QPs.
    Stats,
    /// Stops this session's QPs and hands over their whole state, leaving
    /// tombstones here (the process moves its objects to another daemon).
    Checkpoint,
    /// Recreates the objects of an image taken by `Checkpoint` on another
    /// daemon, with the same identifiers, for this session.
    Restore {
        #[serde(with = "crate::bytes")]
        image: Vec<u8>,
    },
    /// Restarts the restored QPs: each announces itself with RESUME.
    Resume,
    /// Tells the tombstones of `qpns` (left by `Checkpoint`) where they went.
    ForwardTombstones {
        qpns: Vec<Qpn>,
        to: IpAddr,
    },
    /// First message of a connection opened inside a process restored by
    /// CRIU: recreate session `session` (same id) from `image` (the
    /// `objects` of an admin checkpoint's `SessionImage`), QPs stopped and
    /// no writes into the process until the admin `Resume`. The daemon
    /// answers [`Response::Welcome`], then writes `replay` verbatim.
    RestoreSession {
        version: u32,
        session: u64,
        path: String,
        inode: u64,
        #[serde(with = "crate::bytes")]
        image: Vec<u8>,
        #[serde(with = "crate::bytes")]
        replay: Vec<u8>,
    },
    /// First message of a restored completion channel connection: attach it
    /// as `channel` of `session` (parked until that session is restored).
    /// The daemon answers [`Response::Ok`], then writes `replay` verbatim.
    RestoreChannel {
        version: u32,
        session: u64,
        channel: ChannelId,
        inode: u64,
        #[serde(with = "crate::bytes")]
        replay: Vec<u8>,
    },
    /// First (and only `Request`) message of a librdmacm connection
    /// (`inode` as in [`Request::Hello`]); answered by
    /// [`Response::Welcome`], then the connection carries
    /// [`crate::cm::CmRequest`]s and [`crate::cm::CmDown`]s.
    CmHello {
        version: u32,
        inode: u64,
    },
    /// First message of a librdmacm connection opened inside a process
    /// restored by CRIU: recreate the connection-manager state of `owner`
    /// (same id) from `image` (an admin checkpoint's [`crate::admin::CmImage`]),
    /// bindings, listeners and connections with their identifiers. The
    /// daemon answers [`Response::Welcome`], then writes `replay` verbatim;
    /// the connection then carries CM requests as after `CmHello`.
    RestoreCm {
        version: u32,
        owner: u64,
        inode: u64,
        #[serde(with = "crate::bytes")]
        image: Vec<u8>,
        #[serde(with = "crate::bytes")]
        replay: Vec<u8>,
    },
}

/// The daemon's answer to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    Welcome {
        session: u64,
        device: DeviceInfo,
    },
    Ok,
    Device(DeviceInfo),
    Pd {
        pd: Pdn,
    },
    Mr {
        lkey: u32,
        rkey: u32,
    },
    Channel {
        channel: ChannelId,
    },
    Cq {
        cq: Cqn,
    },
    Srq {
        srq: Srqn,
    },
    Qp {
        qpn: Qpn,
    },
    QpAttr(QpAttr),
    Mw {
        rkey: u32,
    },
    SrqAttr {
        max_wr: u32,
        limit: u32,
    },
    Stats {
        device: DeviceCounters,
        qps: Vec<(Qpn, QpCounters)>,
    },
    Image {
        #[serde(with = "crate::bytes")]
        image: Vec<u8>,
        qpns: Vec<Qpn>,
    },
    /// The request failed; `errno` is what the C API reports.
    Error {
        errno: i32,
        message: String,
    },
}

/// A new ring for an SRQ (see [`Request::ModifySrq`]): the daemon takes
/// the old ring's receives up to the client's producer index `pi`, then
/// reads `ring` (`max_wr` entries) from index 0, publishing its consumer
/// index at `ctrl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SrqResize {
    pub max_wr: u32,
    pub pi: u32,
    pub ring: u64,
    pub ctrl: u64,
}

/// What the daemon sends on a completion channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// An armed CQ got a completion (the CQ is disarmed again).
    Completion { cq: Cqn },
    /// An asynchronous event, on the channel the session subscribed.
    Async(AsyncEvent),
}

/// An asynchronous event (`struct ibv_async_event`): what happened, and
/// to which QP, CQ or SRQ (its number; the port's is 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsyncEvent {
    pub kind: AsyncKind,
    pub element: u32,
}

/// The kinds of asynchronous events migros raises, named and numbered as
/// `enum ibv_event_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AsyncKind {
    CqErr = 0,
    QpFatal = 1,
    QpReqErr = 2,
    QpAccessErr = 3,
    CommEst = 4,
    SqDrained = 5,
    PortActive = 9,
    PortErr = 10,
    SrqLimitReached = 15,
    QpLastWqeReached = 16,
}

/// A device as its clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub name: String,
    /// The device's address: its RoCE v2 GID, the one its datagrams
    /// leave from and arrive at.
    pub addr: IpAddr,
    /// The GID table, in index order: `addr` first, then the other
    /// addresses of the interface `addr` belongs to (IPv4 ones, then IPv6
    /// ones), as they were when the client asked. Only `addr` carries
    /// traffic; see migrosd's `gids` module.
    pub gids: Vec<IpAddr>,
    /// Whether the port is active: `addr` is still an address of an
    /// interface that is up (PORT_ACTIVE / PORT_ERR say when it changes).
    pub port_active: bool,
    /// The active MTU (and the largest path MTU it accepts).
    pub mtu: Mtu,
    pub node_guid: u64,
    pub max_qp: u32,
    pub max_qp_wr: u32,
    pub max_sge: u32,
    pub max_cq: u32,
    pub max_cqe: u32,
    pub max_mr: u32,
    pub max_mr_size: u64,
    pub max_pd: u32,
    pub max_qp_rd_atom: u32,
    pub max_srq: u32,
    pub max_srq_wr: u32,
    pub max_inline_data: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let reqs = vec![
            Request::Hello {
                version: PROTOCOL_VERSION,
                path: "/run/migros/rxe0.sock".into(),
                inode: 1234,
            },
            Request::AttachChannel {
                version: PROTOCOL_VERSION,
                session: 7,
                channel: 3,
                inode: 99,
            },
            Request::ModifyQp {
                qpn: 0x11,
                attr: QpAttr::default(),
                mask: AttrMask::STATE,
            },
            Request::Restore {
                image: vec![1, 2, 3],
            },
            Request::ForwardTombstones {
                qpns: vec![1, 2],
                to: "198.18.0.1".parse().unwrap(),
            },
            Request::RestoreSession {
                version: PROTOCOL_VERSION,
                session: u64::MAX,
                path: "/run/migros/rxe0.sock".into(),
                inode: 5,
                image: vec![9; 100],
                replay: vec![0, 1, 2],
            },
            Request::RestoreChannel {
                version: PROTOCOL_VERSION,
                session: 1,
                channel: 2,
                inode: 3,
                replay: vec![],
            },
            Request::RestoreCm {
                version: PROTOCOL_VERSION,
                owner: u64::MAX,
                inode: 4,
                image: vec![7; 20],
                replay: vec![1],
            },
        ];
        for r in reqs {
            let bytes = postcard::to_allocvec(&r).unwrap();
            assert_eq!(postcard::from_bytes::<Request>(&bytes).unwrap(), r);
        }
    }
}
