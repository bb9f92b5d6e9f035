//! Image format version 2 of the daemon: the transport's image of the
//! session's owner ([`migros_transport::image::v2`]) and the state of every
//! ring in client memory (addresses, sizes, the daemon's indices, CQ arm
//! state), with the channels and the start of a request cut short.
//! Unknown fields are refused.

use serde::{Deserialize, Serialize};

use migros_proto::msg::ChannelId;
use migros_transport::image::v2::OwnerImage;
use migros_transport::{Cqn, Qpn, Srqn};

/// This format's version number.
pub const VERSION: u32 = 2;

/// A session's image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Always [`super::IMAGE_FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u32,
    /// The transport's objects of the session's owner.
    pub transport: OwnerImage,
    pub qps: Vec<QpRingsImage>,
    pub cqs: Vec<CqRingImage>,
    pub srqs: Vec<SrqRingImage>,
    pub channels: Vec<ChannelId>,
    /// The start of a request the process was writing when it was frozen
    /// (admin checkpoints only): read first on the restored connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbox: Vec<u8>,
}

/// A work queue ring in client memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WqRingImage {
    pub addr: u64,
    pub entries: u32,
    /// Next entry the daemon reads.
    pub ci: u32,
    /// Producer index of the last doorbell.
    pub pi: u32,
}

/// A QP's rings and control block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QpRingsImage {
    pub qpn: Qpn,
    pub ctrl: u64,
    pub sq: WqRingImage,
    /// `None` when the QP receives from an SRQ.
    pub rq: Option<WqRingImage>,
    pub send_cq: Cqn,
    pub recv_cq: Cqn,
}

/// An SRQ's ring and control block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SrqRingImage {
    pub srq: Srqn,
    pub ctrl: u64,
    pub rq: WqRingImage,
}

/// A CQ's ring and control block (its completions are in the transport's
/// CQ of the same number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CqRingImage {
    pub cq: Cqn,
    pub addr: u64,
    pub entries: u32,
    pub ctrl: u64,
    /// Next entry the daemon writes.
    pub pi: u32,
    /// The client's consumer index, as last read.
    pub client_ci: u32,
    pub armed: bool,
    pub solicited_only: bool,
    pub channel: Option<ChannelId>,
}
