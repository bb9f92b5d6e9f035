//! Verbs-level types shared by the daemon's engines and its clients:
//! identifiers, work requests, work completions, QP attributes. Numeric values follow
//! libibverbs (rdma-core v44) so the C ABI layer can pass them through.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Identifies the process (or test actor) that owns verbs objects. Memory
/// is always reached as "this owner's address space".
pub type OwnerId = u64;
/// Queue pair number (24 bits on the wire).
pub type Qpn = u32;
/// Completion queue handle.
pub type Cqn = u32;
/// Shared receive queue handle.
pub type Srqn = u32;
/// Protection domain handle.
pub type Pdn = u32;

/// Largest valid QPN (24 bits).
pub const MAX_QPN: Qpn = 0x00ff_ffff;

/// Transport service of a QP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QpType {
    Rc,
    Uc,
    Ud,
}

/// The verbs QP states. Migration states are kept apart, in [`MigrationState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum QpState {
    Reset = 0,
    Init = 1,
    Rtr = 2,
    Rts = 3,
    Sqd = 4,
    Sqe = 5,
    Err = 6,
}

/// Where a QP stands with respect to live migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MigrationState {
    /// Normal operation.
    Running,
    /// Being migrated: sends nothing, answers requests with the pause NAK,
    /// ignores ACKs. Set by `pause`; kept across snapshot and restore.
    Stopped,
    /// Restored on its new node and announcing itself with RESUME until the
    /// partner answers.
    Resuming,
    /// The partner answered with the pause NAK: send nothing until RESUME.
    Paused,
}

/// Path MTU (IB enum values 1..=5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Mtu {
    Mtu256 = 1,
    Mtu512 = 2,
    Mtu1024 = 3,
    Mtu2048 = 4,
    Mtu4096 = 5,
}

impl Mtu {
    /// Payload bytes per packet.
    pub fn bytes(self) -> u32 {
        256 << (self as u32 - 1)
    }

    /// Parses the IB enum value (1..=5).
    pub fn from_ib(value: u8) -> Option<Mtu> {
        Some(match value {
            1 => Mtu::Mtu256,
            2 => Mtu::Mtu512,
            3 => Mtu::Mtu1024,
            4 => Mtu::Mtu2048,
            5 => Mtu::Mtu4096,
            _ => return None,
        })
    }

    /// The largest MTU whose payload fits in `bytes`.
    pub fn fitting(bytes: u32) -> Option<Mtu> {
        [
            Mtu::Mtu4096,
            Mtu::Mtu2048,
            Mtu::Mtu1024,
            Mtu::Mtu512,
            Mtu::Mtu256,
        ]
        .into_iter()
        .find(|m| m.bytes() <= bytes)
    }
}

/// Memory access rights (libibverbs `IBV_ACCESS_*` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Access(pub u32);

impl Access {
    pub const LOCAL_WRITE: Access = Access(1);
    pub const REMOTE_WRITE: Access = Access(2);
    pub const REMOTE_READ: Access = Access(4);
    pub const REMOTE_ATOMIC: Access = Access(8);
    /// Memory windows may be bound to the region.
    pub const MW_BIND: Access = Access(1 << 4);
    /// A memory window addressed from 0 rather than by virtual address.
    pub const ZERO_BASED: Access = Access(1 << 5);
    /// On-demand paging: accepted, as process memory is always reachable.
    pub const ON_DEMAND: Access = Access(1 << 6);
    pub const HUGETLB: Access = Access(1 << 7);
    pub const FLUSH_GLOBAL: Access = Access(1 << 8);
    pub const FLUSH_PERSISTENT: Access = Access(1 << 9);
    /// Hints a device may ignore (`IBV_ACCESS_OPTIONAL_RANGE`, e.g.
    /// relaxed ordering).
    pub const OPTIONAL_RANGE: Access = Access(0x3ff0_0000);

    pub fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether any bit of `other` is set.
    pub fn intersects(self, other: Access) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether these rights let a remote peer change the memory.
    pub fn remote_writable(self) -> bool {
        self.intersects(Access::REMOTE_WRITE | Access::REMOTE_ATOMIC)
    }
}

impl std::ops::BitOr for Access {
    type Output = Access;
    fn bitor(self, rhs: Access) -> Access {
        Access(self.0 | rhs.0)
    }
}

/// Scatter/gather element: local memory named by an lkey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sge {
    pub addr: u64,
    pub length: u32,
    pub lkey: u32,
}

/// Where a UD send goes (the address handle's content plus the remote QP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UdDest {
    pub addr: IpAddr,
    pub remote_qpn: Qpn,
    pub remote_qkey: u32,
}

/// The type of a memory window (`enum ibv_mw_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MwType {
    /// Bound with `ibv_bind_mw`, to any QP of its PD; invalidated only by
    /// binding it again.
    Type1 = 1,
    /// Bound by a BIND_MW work request to the QP that posted it; freed by
    /// LOCAL_INV or SEND_WITH_INV.
    Type2 = 2,
}

/// A BIND_MW work request: bind window `mw_rkey` (its current rkey) to
/// `length` bytes at `addr` of the region `mr_lkey`, with `access`; the
/// window's rkey becomes `new_rkey` (only its low 8 bits, the key, may
/// change). `length` 0 unbinds a type 1 window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MwBind {
    pub mw_rkey: u32,
    pub new_rkey: u32,
    pub mr_lkey: u32,
    pub addr: u64,
    pub length: u64,
    pub access: Access,
}

/// The operation of a send work request, with its operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WrOpcode {
    Send,
    SendWithImm {
        imm: u32,
    },
    SendWithInv {
        rkey: u32,
    },
    RdmaWrite {
        remote_addr: u64,
        rkey: u32,
    },
    RdmaWriteWithImm {
        remote_addr: u64,
        rkey: u32,
        imm: u32,
    },
    RdmaRead {
        remote_addr: u64,
        rkey: u32,
    },
    AtomicCmpSwap {
        remote_addr: u64,
        rkey: u32,
        compare: u64,
        swap: u64,
    },
    AtomicFetchAdd {
        remote_addr: u64,
        rkey: u32,
        add: u64,
    },
    /// Invalidates a type 2 memory window (executed locally, in order).
    LocalInv {
        rkey: u32,
    },
    /// Binds a memory window (executed locally, in order).
    BindMw(MwBind),
    /// Writes the WR's 8 data bytes at `remote_addr` as one atomic store.
    AtomicWrite {
        remote_addr: u64,
        rkey: u32,
    },
}

impl WrOpcode {
    /// The opcode of this operation's send completion.
    pub fn wc_opcode(self) -> WcOpcode {
        match self {
            WrOpcode::Send | WrOpcode::SendWithImm { .. } | WrOpcode::SendWithInv { .. } => {
                WcOpcode::Send
            }
            WrOpcode::RdmaWrite { .. } | WrOpcode::RdmaWriteWithImm { .. } => WcOpcode::RdmaWrite,
            WrOpcode::RdmaRead { .. } => WcOpcode::RdmaRead,
            WrOpcode::AtomicCmpSwap { .. } => WcOpcode::CompSwap,
            WrOpcode::AtomicFetchAdd { .. } => WcOpcode::FetchAdd,
            WrOpcode::LocalInv { .. } => WcOpcode::LocalInv,
            WrOpcode::BindMw(_) => WcOpcode::BindMw,
            WrOpcode::AtomicWrite { .. } => WcOpcode::AtomicWrite,
        }
    }

    /// Whether the device executes the WR itself, without a packet
    /// (LOCAL_INV, BIND_MW).
    pub fn is_local(self) -> bool {
        matches!(self, WrOpcode::LocalInv { .. } | WrOpcode::BindMw(_))
    }
}

/// Send flags (libibverbs `IBV_SEND_*` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SendFlags(pub u32);

impl SendFlags {
    pub const FENCE: SendFlags = SendFlags(1);
    pub const SIGNALED: SendFlags = SendFlags(2);
    pub const SOLICITED: SendFlags = SendFlags(4);
    pub const INLINE: SendFlags = SendFlags(8);

    pub fn contains(self, other: SendFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for SendFlags {
    type Output = SendFlags;
    fn bitor(self, rhs: SendFlags) -> SendFlags {
        SendFlags(self.0 | rhs.0)
    }
}

/// The local data of a send work request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SendData {
    /// Gathered from registered memory when the packets are built.
    Sges(Vec<Sge>),
    /// Copied at post time (`IBV_SEND_INLINE`).
    Inline(Vec<u8>),
}

/// A send work request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendWr {
    pub wr_id: u64,
    pub opcode: WrOpcode,
    pub flags: SendFlags,
    /// For SEND and WRITE: the data sent; for READ and atomics: where the
    /// response lands (an atomic needs one 8-byte SGE).
    pub data: SendData,
    /// Destination of a UD send; ignored on connected QPs.
    pub ud: Option<UdDest>,
}

/// A receive work request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecvWr {
    pub wr_id: u64,
    pub sges: Vec<Sge>,
}

/// Work completion status (libibverbs `enum ibv_wc_status` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WcStatus {
    Success = 0,
    LocLenErr = 1,
    LocQpOpErr = 2,
    LocProtErr = 4,
    WrFlushErr = 5,
    MwBindErr = 6,
    BadRespErr = 7,
    LocAccessErr = 8,
    RemInvReqErr = 9,
    RemAccessErr = 10,
    RemOpErr = 11,
    RetryExcErr = 12,
    RnrRetryExcErr = 13,
    FatalErr = 19,
    RespTimeoutErr = 20,
    GeneralErr = 21,
}

/// Work completion opcode (libibverbs `enum ibv_wc_opcode` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WcOpcode {
    Send = 0,
    RdmaWrite = 1,
    RdmaRead = 2,
    CompSwap = 3,
    FetchAdd = 4,
    BindMw = 5,
    LocalInv = 6,
    AtomicWrite = 9,
    Recv = 128,
    RecvRdmaWithImm = 129,
}

/// A work completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkCompletion {
    pub wr_id: u64,
    pub status: WcStatus,
    pub opcode: WcOpcode,
    pub qp_num: Qpn,
    pub byte_len: u32,
    pub imm_data: Option<u32>,
    pub invalidated_rkey: Option<u32>,
    /// UD receives: the sender's QPN and address (the GRH).
    pub src_qp: Qpn,
    pub src_addr: Option<IpAddr>,
}

impl WorkCompletion {
    /// A completion with no immediate, invalidation or source fields.
    pub fn new(wr_id: u64, status: WcStatus, opcode: WcOpcode, qp_num: Qpn, byte_len: u32) -> Self {
        WorkCompletion {
            wr_id,
            status,
            opcode,
            qp_num,
            byte_len,
            imm_data: None,
            invalidated_rkey: None,
            src_qp: 0,
            src_addr: None,
        }
    }
}

/// Capacities of a QP's queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QpCap {
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    pub max_send_sge: u32,
    pub max_recv_sge: u32,
    pub max_inline_data: u32,
}

/// What `create_qp` needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QpInit {
    pub owner: OwnerId,
    pub qpn: Qpn,
    pub qp_type: QpType,
    pub pd: Pdn,
    pub send_cq: Cqn,
    pub recv_cq: Cqn,
    pub srq: Option<Srqn>,
    pub cap: QpCap,
    /// Every send WR generates a completion, whatever its flags.
    pub sq_sig_all: bool,
}

/// Which attributes of [`QpAttr`] a `modify_qp` call sets
/// (libibverbs `IBV_QP_*` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AttrMask(pub u32);

impl AttrMask {
    pub const STATE: AttrMask = AttrMask(1 << 0);
    pub const CUR_STATE: AttrMask = AttrMask(1 << 1);
    pub const EN_SQD_ASYNC_NOTIFY: AttrMask = AttrMask(1 << 2);
    pub const ACCESS_FLAGS: AttrMask = AttrMask(1 << 3);
    pub const PKEY_INDEX: AttrMask = AttrMask(1 << 4);
    pub const PORT: AttrMask = AttrMask(1 << 5);
    pub const QKEY: AttrMask = AttrMask(1 << 6);
    pub const AV: AttrMask = AttrMask(1 << 7);
    pub const PATH_MTU: AttrMask = AttrMask(1 << 8);
    pub const TIMEOUT: AttrMask = AttrMask(1 << 9);
    pub const RETRY_CNT: AttrMask = AttrMask(1 << 10);
    pub const RNR_RETRY: AttrMask = AttrMask(1 << 11);
    pub const RQ_PSN: AttrMask = AttrMask(1 << 12);
    pub const MAX_QP_RD_ATOMIC: AttrMask = AttrMask(1 << 13);
    pub const ALT_PATH: AttrMask = AttrMask(1 << 14);
    pub const MIN_RNR_TIMER: AttrMask = AttrMask(1 << 15);
    pub const SQ_PSN: AttrMask = AttrMask(1 << 16);
    pub const MAX_DEST_RD_ATOMIC: AttrMask = AttrMask(1 << 17);
    pub const PATH_MIG_STATE: AttrMask = AttrMask(1 << 18);
    pub const CAP: AttrMask = AttrMask(1 << 19);
    pub const DEST_QPN: AttrMask = AttrMask(1 << 20);

    /// RESET → INIT of a connected QP: its state, P_Key index, port and
    /// access flags.
    pub const RC_INIT: AttrMask =
        AttrMask(Self::STATE.0 | Self::PKEY_INDEX.0 | Self::PORT.0 | Self::ACCESS_FLAGS.0);
    /// INIT → RTR of an RC QP: the path, the remote QPN and first PSN, the
    /// READ/atomic depth it answers and its RNR timer (what
    /// `ibv_modify_qp(3)` requires).
    pub const RC_RTR: AttrMask = AttrMask(
        Self::STATE.0
            | Self::AV.0
            | Self::PATH_MTU.0
            | Self::DEST_QPN.0
            | Self::RQ_PSN.0
            | Self::MAX_DEST_RD_ATOMIC.0
            | Self::MIN_RNR_TIMER.0,
    );
    /// RTR → RTS of an RC QP: its first PSN, ACK timeout, retry counts and
    /// the READ/atomic depth it issues.
    pub const RC_RTS: AttrMask = AttrMask(
        Self::STATE.0
            | Self::SQ_PSN.0
            | Self::TIMEOUT.0
            | Self::RETRY_CNT.0
            | Self::RNR_RETRY.0
            | Self::MAX_QP_RD_ATOMIC.0,
    );

    pub fn contains(self, other: AttrMask) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn empty() -> AttrMask {
        AttrMask(0)
    }
}

impl std::ops::BitOr for AttrMask {
    type Output = AttrMask;
    fn bitor(self, rhs: AttrMask) -> AttrMask {
        AttrMask(self.0 | rhs.0)
    }
}

/// QP attributes, as in `struct ibv_qp_attr` (the fields a RoCE device uses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QpAttr {
    pub qp_state: QpState,
    pub cur_qp_state: QpState,
    pub path_mtu: Mtu,
    pub qkey: u32,
    pub rq_psn: u32,
    pub sq_psn: u32,
    pub dest_qp_num: Qpn,
    pub qp_access_flags: Access,
    pub cap: QpCap,
    /// The remote device's address (the AV's destination GID).
    pub dest_addr: Option<IpAddr>,
    pub pkey_index: u16,
    pub port_num: u8,
    pub max_rd_atomic: u8,
    pub max_dest_rd_atomic: u8,
    pub min_rnr_timer: u8,
    pub timeout: u8,
    pub retry_cnt: u8,
    pub rnr_retry: u8,
    pub sq_draining: bool,
    pub migration: MigrationState,
}

impl Default for QpAttr {
    fn default() -> Self {
        QpAttr {
            qp_state: QpState::Reset,
            cur_qp_state: QpState::Reset,
            path_mtu: Mtu::Mtu1024,
            qkey: 0,
            rq_psn: 0,
            sq_psn: 0,
            dest_qp_num: 0,
            qp_access_flags: Access::default(),
            cap: QpCap::default(),
            dest_addr: None,
            pkey_index: 0,
            port_num: 1,
            max_rd_atomic: 0,
            max_dest_rd_atomic: 0,
            min_rnr_timer: 0,
            timeout: 0,
            retry_cnt: 0,
            rnr_retry: 0,
            sq_draining: false,
            migration: MigrationState::Running,
        }
    }
}

/// A memory region as registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MrSpec {
    pub owner: OwnerId,
    pub pd: Pdn,
    /// Where the region lies in the owner's address space.
    pub addr: u64,
    pub length: u64,
    /// The region's I/O virtual address: SGEs, RETHs and memory window
    /// binds name its bytes from here (`ibv_reg_mr_iova`; usually `addr`).
    pub iova: u64,
    pub lkey: u32,
    pub rkey: u32,
    pub access: Access,
}

/// Something a device user must react to (wake a poller, raise an async event).
///
/// The asynchronous events of verbs (`enum ibv_event_type`) are the
/// variants that name one; the others are for the device's user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceEvent {
    /// A completion was added to this CQ while it was empty.
    Completion { cq: Cqn },
    /// The CQ was armed (`ibv_req_notify_cq`) and got a completion that
    /// satisfies the arming; it is disarmed again (the completion
    /// channel's event).
    CqNotify { cq: Cqn },
    /// IBV_EVENT_QP_FATAL: the QP failed for a reason no completion
    /// reports (an undecodable work request, a lost partner).
    QpError { qpn: Qpn },
    /// IBV_EVENT_QP_REQ_ERR: the responder refused an invalid request and
    /// the QP failed.
    QpRequestError { qpn: Qpn },
    /// IBV_EVENT_QP_ACCESS_ERR: the responder refused a request that
    /// violated memory protection and the QP failed.
    QpAccessError { qpn: Qpn },
    /// IBV_EVENT_COMM_EST: a connected QP in RTR received its first packet.
    CommEstablished { qpn: Qpn },
    /// IBV_EVENT_SQ_DRAINED: the send queue drained after a move to SQD.
    SqDrained { qpn: Qpn },
    /// IBV_EVENT_SRQ_LIMIT_REACHED: the SRQ fell below its limit (which
    /// disarms).
    SrqLimitReached { srq: Srqn },
    /// IBV_EVENT_QP_LAST_WQE_REACHED: a QP taking receives from an SRQ
    /// entered the error state and will take no more.
    LastWqeReached { qpn: Qpn },
    /// IBV_EVENT_CQ_ERR: a completion was lost because the CQ was full.
    CqError { cq: Cqn },
    /// The QP stayed paused longer than the pause timeout.
    PauseTimeout { qpn: Qpn },
}
