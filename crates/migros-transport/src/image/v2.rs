//! Image format version 2: an owner's PDs, memory regions, CQs, SRQs and
//! QPs with all their transport state, encoded as JSON (readable by
//! operators, diffable in tests). PSNs are plain `u32`s, timers the
//! nanoseconds they had left when the image was taken. Unknown fields are
//! refused: a field this version does not name is a different format.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use migros_proto::counters::QpCounters;
use migros_proto::verbs::{
    Cqn, OwnerId, Pdn, QpAttr, QpInit, Qpn, RecvWr, SendWr, Srqn, WcStatus, WorkCompletion,
};

/// This format's version number.
pub const VERSION: u32 = 2;

/// Every verbs object of one owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerImage {
    /// Always [`VERSION`].
    pub version: u32,
    pub owner: OwnerId,
    pub pds: Vec<Pdn>,
    pub mrs: Vec<MrImage>,
    pub cqs: Vec<CqImage>,
    pub srqs: Vec<SrqImage>,
    pub qps: Vec<QpImage>,
}

/// A memory region (its owner is the image's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MrImage {
    pub pd: Pdn,
    pub addr: u64,
    pub length: u64,
    pub lkey: u32,
    pub rkey: u32,
    /// libibverbs access flags.
    pub access: u32,
}

/// A completion queue: its completions not yet handed to the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CqImage {
    pub cq: Cqn,
    /// Completions it holds before counting an overrun.
    pub capacity: u32,
    /// Oldest first.
    pub completions: Vec<WorkCompletion>,
    /// Completions lost so far because it was full.
    pub overflows: u64,
}

/// A shared receive queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SrqImage {
    pub srq: Srqn,
    pub pd: Pdn,
    pub max_wr: u32,
    /// The armed limit (0: disarmed).
    pub limit: u32,
    /// Posted receives, oldest first.
    pub queue: Vec<RecvWr>,
}

/// A queue pair with everything its engines hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QpImage {
    pub init: QpInit,
    pub attr: QpAttr,
    /// Posted receives, oldest first (none with an SRQ).
    pub recv_queue: Vec<RecvWr>,
    pub requester: RequesterImage,
    pub responder: ResponderImage,
    pub timers: TimersImage,
    pub counters: QpCounters,
    /// UD: the (address, QPN) peers it talked to, told when it resumes.
    pub ud_peers: Vec<(IpAddr, Qpn)>,
    /// UD/UC: RESUMEs still to send to these peers.
    pub announce: Vec<(IpAddr, Qpn)>,
}

/// The send side: posted WRs and how far they went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequesterImage {
    /// Posted WRs not yet completed, oldest first.
    pub send_queue: Vec<SendWqeImage>,
    /// Index in `send_queue` of the WR being sent.
    pub next_index: u64,
    /// Bytes of that WR already sent.
    pub next_offset: u64,
    pub next_psn: u32,
    /// Oldest unacknowledged PSN.
    pub una: u32,
    /// One past the highest PSN ever sent.
    pub high_psn: u32,
    /// READ/atomic requests sent and not completed.
    pub rd_atomic_outstanding: u32,
    pub retry_left: u8,
    pub rnr_left: u8,
    /// PSN the last go-back-N rewound to.
    pub rewound_at: Option<u32>,
    /// One past the highest PSN sent at the last rewind.
    pub retry_fence: Option<u32>,
    /// Packets since the last one that asked for an ACK.
    pub since_ack_req: u32,
    pub window: WindowImage,
}

/// The RC send window after a loss.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowImage {
    /// The shrunk window in packets (`None`: the whole window).
    pub shrunk: Option<u32>,
    /// Slow-start threshold in packets.
    pub threshold: u32,
    /// Acknowledged packets not yet turned into growth.
    pub credit: u32,
}

/// A posted send WR and its progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendWqeImage {
    pub wr: SendWr,
    /// Message length in bytes.
    pub len: u64,
    /// PSN of its first packet (valid once sent).
    pub first_psn: u32,
    /// PSNs the message uses.
    pub npkts: u32,
    /// The first packet went out at least once.
    pub sent: bool,
    /// READ: response bytes already placed.
    pub read_done: u64,
    /// Failed locally: completes with this status at the head.
    pub local_error: Option<WcStatus>,
}

/// The receive side: what it expects next and what it still owes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponderImage {
    /// Expected PSN of the next request.
    pub epsn: u32,
    /// Messages completed (message sequence number).
    pub msn: u32,
    /// A sequence NAK was sent for `epsn` and not yet answered.
    pub nak_sent: bool,
    /// UC: dropping packets until the next FIRST or ONLY.
    pub uc_skip: bool,
    /// A multi-packet message being received.
    pub current: Option<InboundImage>,
    /// Executed READs and atomics, kept for duplicates.
    pub resources: Vec<RdResourceImage>,
    /// Responses waiting to be sent.
    pub responses: Vec<ResponseImage>,
    /// Stopped: answering with the pause NAK.
    pub pause_nak: bool,
}

/// A multi-packet message being received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum InboundImage {
    Send {
        recv: RecvWr,
        offset: u64,
    },
    Write {
        va: u64,
        rkey: u32,
        len: u64,
        offset: u64,
    },
}

/// An executed READ or atomic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum RdResourceImage {
    Read { first_psn: u32, last_psn: u32 },
    Atomic { psn: u32, orig: u64 },
}

/// A response waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum ResponseImage {
    Ack {
        psn: u32,
        syndrome: u8,
        msn: u32,
    },
    Read {
        next_psn: u32,
        va: u64,
        rkey: u32,
        remaining: u64,
        first: bool,
        msn: u32,
    },
    AtomicAck {
        psn: u32,
        orig: u64,
        msn: u32,
    },
}

/// Armed timers, as nanoseconds left when the image was taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimersImage {
    pub retransmit_ns: Option<u64>,
    pub rnr_ns: Option<u64>,
    pub pause_ns: Option<u64>,
    pub resume_ns: Option<u64>,
}
