//! The CM messages (IBA vol. 1, 12.6; the layouts of the kernel's
//! `ibta_vol1_c12.h`): REQ, MRA, REJ, REP, RTU, DREQ, DREP, SIDR_REQ and
//! SIDR_REP. LAP and APR (alternate paths, which RoCE does not use) parse
//! as [`CmMessage::Other`].
//!
//! Each message has one table of [`Field`]s (offsets from the start of the
//! attribute data, after the MAD header), used by both `parse` and `emit`.
//! Private data always has the full length the message reserves for it
//! (92 bytes in a REQ, …): a parser hands out all of it, an emitter
//! zero-pads what it is given and refuses more.

use std::ops::Range;

use crate::bits::Field;
use crate::error::MadError;
use crate::mad::{MadHeader, CM_DATA_LEN, MAD_HDR_LEN, MAD_LEN};

/// Attribute IDs of the CM class.
pub mod attr {
    pub const CLASS_PORT_INFO: u16 = 0x0001;
    pub const REQ: u16 = 0x0010;
    pub const MRA: u16 = 0x0011;
    pub const REJ: u16 = 0x0012;
    pub const REP: u16 = 0x0013;
    pub const RTU: u16 = 0x0014;
    pub const DREQ: u16 = 0x0015;
    pub const DREP: u16 = 0x0016;
    pub const SIDR_REQ: u16 = 0x0017;
    pub const SIDR_REP: u16 = 0x0018;
    pub const LAP: u16 = 0x0019;
    pub const APR: u16 = 0x001a;
}

/// Private data bytes each message carries.
pub mod private_data_len {
    pub const REQ: usize = 92;
    pub const MRA: usize = 222;
    pub const REJ: usize = 148;
    pub const REP: usize = 196;
    pub const RTU: usize = 224;
    pub const DREQ: usize = 220;
    pub const DREP: usize = 224;
    pub const SIDR_REQ: usize = 216;
    pub const SIDR_REP: usize = 136;
}

/// Which message an MRA or REJ answers (`MessageMRAed`, `MessageRejected`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgResponse {
    Req = 0,
    Rep = 1,
    Other = 2,
}

impl MsgResponse {
    fn from_bits(v: u64) -> MsgResponse {
        match v {
            0 => MsgResponse::Req,
            1 => MsgResponse::Rep,
            _ => MsgResponse::Other,
        }
    }
}

/// Reasons of a REJ (IBA table 112; `enum ib_cm_rej_reason`).
pub mod rej_reason {
    pub const NO_QP: u16 = 1;
    pub const NO_RESOURCES: u16 = 3;
    pub const TIMEOUT: u16 = 4;
    pub const UNSUPPORTED: u16 = 5;
    pub const INVALID_COMM_ID: u16 = 6;
    pub const INVALID_SERVICE_ID: u16 = 8;
    pub const INVALID_TRANSPORT_TYPE: u16 = 9;
    pub const STALE_CONN: u16 = 10;
    pub const INVALID_GID: u16 = 12;
    pub const INVALID_MTU: u16 = 26;
    pub const CONSUMER_DEFINED: u16 = 28;
    pub const INVALID_CLASS_VERSION: u16 = 31;
    pub const VENDOR_OPTION_NOT_SUPPORTED: u16 = 35;
}

/// Status of a SIDR_REP (`enum ib_cm_sidr_status`).
pub mod sidr_status {
    pub const SUCCESS: u8 = 0;
    pub const UNSUPPORTED: u8 = 1;
    pub const REJECT: u8 = 2;
    pub const NO_QP: u8 = 3;
    pub const REDIRECT: u8 = 4;
    pub const UNSUPPORTED_VERSION: u8 = 5;
}

/// Transport service of a REQ (`TransportServiceType` plus
/// `ExtendedTransportType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceType {
    Rc,
    Uc,
    /// RD or XRC: parsed so the agent can refuse it.
    Other {
        tst: u8,
        ett: u8,
    },
}

/// A path as a REQ describes it (primary or alternate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PathInfo {
    pub local_lid: u16,
    pub remote_lid: u16,
    pub local_gid: [u8; 16],
    pub remote_gid: [u8; 16],
    pub flow_label: u32,
    pub packet_rate: u8,
    pub traffic_class: u8,
    pub hop_limit: u8,
    pub sl: u8,
    pub subnet_local: bool,
    pub local_ack_timeout: u8,
}

/// Offsets of a path inside a REQ, from the path's first byte.
mod path {
    use super::Field;
    pub const LOCAL_LID: Field = Field::at(0, 16);
    pub const REMOTE_LID: Field = Field::at(2, 16);
    pub const LOCAL_GID: usize = 4;
    pub const REMOTE_GID: usize = 20;
    pub const FLOW_LABEL: Field = Field::at(36, 20);
    pub const PACKET_RATE: Field = Field::bits(39, 2, 6);
    pub const TRAFFIC_CLASS: Field = Field::at(40, 8);
    pub const HOP_LIMIT: Field = Field::at(41, 8);
    pub const SL: Field = Field::at(42, 4);
    pub const SUBNET_LOCAL: Field = Field::bits(42, 4, 1);
    pub const LOCAL_ACK_TIMEOUT: Field = Field::at(43, 5);
}

/// A field of a path that starts at `base`.
fn shifted(f: Field, base: usize) -> Field {
    Field {
        byte: f.byte + base,
        ..f
    }
}

impl PathInfo {
    fn parse(d: &[u8; CM_DATA_LEN], base: usize) -> PathInfo {
        let g = |f: Field| get(d, shifted(f, base));
        PathInfo {
            local_lid: g(path::LOCAL_LID) as u16,
            remote_lid: g(path::REMOTE_LID) as u16,
            local_gid: gid(d, base + path::LOCAL_GID),
            remote_gid: gid(d, base + path::REMOTE_GID),
            flow_label: g(path::FLOW_LABEL) as u32,
            packet_rate: g(path::PACKET_RATE) as u8,
            traffic_class: g(path::TRAFFIC_CLASS) as u8,
            hop_limit: g(path::HOP_LIMIT) as u8,
            sl: g(path::SL) as u8,
            subnet_local: g(path::SUBNET_LOCAL) != 0,
            local_ack_timeout: g(path::LOCAL_ACK_TIMEOUT) as u8,
        }
    }

    fn emit(&self, d: &mut [u8; CM_DATA_LEN], base: usize) {
        let mut s = |f: Field, v: u64| set(d, shifted(f, base), v);
        s(path::LOCAL_LID, self.local_lid.into());
        s(path::REMOTE_LID, self.remote_lid.into());
        s(path::FLOW_LABEL, self.flow_label.into());
        s(path::PACKET_RATE, self.packet_rate.into());
        s(path::TRAFFIC_CLASS, self.traffic_class.into());
        s(path::HOP_LIMIT, self.hop_limit.into());
        s(path::SL, self.sl.into());
        s(path::SUBNET_LOCAL, self.subnet_local.into());
        s(path::LOCAL_ACK_TIMEOUT, self.local_ack_timeout.into());
        let lg = base + path::LOCAL_GID;
        let rg = base + path::REMOTE_GID;
        d[lg..lg + 16].copy_from_slice(&self.local_gid);
        d[rg..rg + 16].copy_from_slice(&self.remote_gid);
    }
}

/// Table 106 (REQ).
mod req {
    use super::*;
    pub const LOCAL_COMM_ID: Field = Field::at(0, 32);
    pub const SERVICE_ID: Field = Field::at(8, 64);
    pub const LOCAL_CA_GUID: Field = Field::at(16, 64);
    pub const LOCAL_Q_KEY: Field = Field::at(28, 32);
    pub const LOCAL_QPN: Field = Field::at(32, 24);
    pub const RESPONDER_RESOURCES: Field = Field::at(35, 8);
    pub const LOCAL_EECN: Field = Field::at(36, 24);
    pub const INITIATOR_DEPTH: Field = Field::at(39, 8);
    pub const REMOTE_EECN: Field = Field::at(40, 24);
    pub const REMOTE_CM_RESPONSE_TIMEOUT: Field = Field::at(43, 5);
    pub const TRANSPORT_SERVICE_TYPE: Field = Field::bits(43, 5, 2);
    pub const END_TO_END_FLOW_CONTROL: Field = Field::bits(43, 7, 1);
    pub const STARTING_PSN: Field = Field::at(44, 24);
    pub const LOCAL_CM_RESPONSE_TIMEOUT: Field = Field::at(47, 5);
    pub const RETRY_COUNT: Field = Field::bits(47, 5, 3);
    pub const PARTITION_KEY: Field = Field::at(48, 16);
    pub const PATH_MTU: Field = Field::at(50, 4);
    pub const RDC_EXISTS: Field = Field::bits(50, 4, 1);
    pub const RNR_RETRY_COUNT: Field = Field::bits(50, 5, 3);
    pub const MAX_CM_RETRIES: Field = Field::at(51, 4);
    pub const SRQ: Field = Field::bits(51, 4, 1);
    pub const EXTENDED_TRANSPORT_TYPE: Field = Field::bits(51, 5, 3);
    pub const PRIMARY_PATH: usize = 52;
    pub const ALTERNATE_PATH: usize = 96;
    pub const SAP_SUPPORTED: Field = Field::bits(139, 5, 1);
    pub const PRIVATE_DATA: Range<usize> = 140..CM_DATA_LEN;
}

/// Connection request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Req {
    pub local_comm_id: u32,
    pub service_id: u64,
    pub local_ca_guid: u64,
    pub local_qkey: u32,
    pub local_qpn: u32,
    pub responder_resources: u8,
    pub local_eecn: u32,
    pub initiator_depth: u8,
    pub remote_eecn: u32,
    pub remote_cm_response_timeout: u8,
    pub service_type: ServiceType,
    pub flow_control: bool,
    pub starting_psn: u32,
    pub local_cm_response_timeout: u8,
    pub retry_count: u8,
    pub pkey: u16,
    /// IB MTU code: 1 = 256 … 5 = 4096.
    pub path_mtu: u8,
    pub rdc_exists: bool,
    pub rnr_retry_count: u8,
    pub max_cm_retries: u8,
    pub srq: bool,
    pub primary: PathInfo,
    /// All zero when the REQ has no alternate path.
    pub alternate: PathInfo,
    pub sap_supported: bool,
    pub private_data: Vec<u8>,
}

/// Table 107 (MRA).
mod mra {
    use super::*;
    pub const LOCAL_COMM_ID: Field = Field::at(0, 32);
    pub const REMOTE_COMM_ID: Field = Field::at(4, 32);
    pub const MESSAGE_MRAED: Field = Field::at(8, 2);
    pub const SERVICE_TIMEOUT: Field = Field::at(9, 5);
    pub const PRIVATE_DATA: Range<usize> = 10..CM_DATA_LEN;
}

/// Message receipt acknowledgement: "I got it, the answer takes longer".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mra {
    pub local_comm_id: u32,
    pub remote_comm_id: u32,
    pub message_mraed: MsgResponse,
    /// 4.096 µs × 2^service_timeout.
    pub service_timeout: u8,
    pub private_data: Vec<u8>,
}

/// Table 108 (REJ).
mod rej {
    use super::*;
    pub const LOCAL_COMM_ID: Field = Field::at(0, 32);
    pub const REMOTE_COMM_ID: Field = Field::at(4, 32);
    pub const MESSAGE_REJECTED: Field = Field::at(8, 2);
    pub const REJECTED_INFO_LENGTH: Field = Field::at(9, 7);
    pub const REASON: Field = Field::at(10, 16);
    pub const ARI: Range<usize> = 12..84;
    pub const PRIVATE_DATA: Range<usize> = 84..CM_DATA_LEN;
}

/// Reject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rej {
    pub local_comm_id: u32,
    pub remote_comm_id: u32,
    pub message_rejected: MsgResponse,
    /// Additional rejection information (up to 72 bytes).
    pub ari: Vec<u8>,
    pub reason: u16,
    pub private_data: Vec<u8>,
}

/// Table 110 (REP).
mod rep {
    use super::*;
    pub const LOCAL_COMM_ID: Field = Field::at(0, 32);
    pub const REMOTE_COMM_ID: Field = Field::at(4, 32);
    pub const LOCAL_Q_KEY: Field = Field::at(8, 32);
    pub const LOCAL_QPN: Field = Field::at(12, 24);
    pub const LOCAL_EECN: Field = Field::at(16, 24);
    pub const STARTING_PSN: Field = Field::at(20, 24);
    pub const RESPONDER_RESOURCES: Field = Field::at(24, 8);
    pub const INITIATOR_DEPTH: Field = Field::at(25, 8);
    pub const TARGET_ACK_DELAY: Field = Field::at(26, 5);
    pub const FAILOVER_ACCEPTED: Field = Field::bits(26, 5, 2);
    pub const END_TO_END_FLOW_CONTROL: Field = Field::bits(26, 7, 1);
    pub const RNR_RETRY_COUNT: Field = Field::at(27, 3);
    pub const SRQ: Field = Field::bits(27, 3, 1);
    pub const LOCAL_CA_GUID: Field = Field::at(28, 64);
    pub const PRIVATE_DATA: Range<usize> = 36..CM_DATA_LEN;
}

/// Reply to a REQ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rep {
    pub local_comm_id: u32,
    pub remote_comm_id: u32,
    pub local_qkey: u32,
    pub local_qpn: u32,
    pub local_eecn: u32,
    pub starting_psn: u32,
    pub responder_resources: u8,
    pub initiator_depth: u8,
    pub target_ack_delay: u8,
    pub failover_accepted: u8,
    pub flow_control: bool,
    pub rnr_retry_count: u8,
    pub srq: bool,
    pub local_ca_guid: u64,
    pub private_data: Vec<u8>,
}

/// Tables 111 (RTU), 112 (DREQ) and 113 (DREP) share their first words.
mod pair {
    use super::*;
    pub const LOCAL_COMM_ID: Field = Field::at(0, 32);
    pub const REMOTE_COMM_ID: Field = Field::at(4, 32);
    pub const DREQ_REMOTE_QPN: Field = Field::at(8, 24);
    pub const RTU_PRIVATE_DATA: Range<usize> = 8..CM_DATA_LEN;
    pub const DREQ_PRIVATE_DATA: Range<usize> = 12..CM_DATA_LEN;
    pub const DREP_PRIVATE_DATA: Range<usize> = 8..CM_DATA_LEN;
}

/// Ready to use (REP received, QP ready).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtu {
    pub local_comm_id: u32,
    pub remote_comm_id: u32,
    pub private_data: Vec<u8>,
}

/// Disconnect request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dreq {
    pub local_comm_id: u32,
    pub remote_comm_id: u32,
    /// The receiver's QPN (the kernel drops a DREQ naming another QP).
    pub remote_qpn: u32,
    pub private_data: Vec<u8>,
}

/// Disconnect reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drep {
    pub local_comm_id: u32,
    pub remote_comm_id: u32,
    pub private_data: Vec<u8>,
}

/// Tables 119 (SIDR_REQ) and 120 (SIDR_REP).
mod sidr {
    use super::*;
    pub const REQUEST_ID: Field = Field::at(0, 32);
    pub const REQ_PARTITION_KEY: Field = Field::at(4, 16);
    pub const REQ_SERVICE_ID: Field = Field::at(8, 64);
    pub const REQ_PRIVATE_DATA: Range<usize> = 16..CM_DATA_LEN;
    pub const REP_STATUS: Field = Field::at(4, 8);
    pub const REP_ADDITIONAL_INFO_LENGTH: Field = Field::at(5, 8);
    pub const REP_QPN: Field = Field::at(8, 24);
    pub const REP_SERVICE_ID: Field = Field::at(12, 64);
    pub const REP_Q_KEY: Field = Field::at(20, 32);
    pub const REP_ADDITIONAL_INFO: Range<usize> = 24..96;
    pub const REP_PRIVATE_DATA: Range<usize> = 96..CM_DATA_LEN;
}

/// Service ID resolution request (UD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidrReq {
    pub request_id: u32,
    pub pkey: u16,
    pub service_id: u64,
    pub private_data: Vec<u8>,
}

/// Service ID resolution reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidrRep {
    pub request_id: u32,
    pub status: u8,
    pub qpn: u32,
    pub service_id: u64,
    pub qkey: u32,
    pub additional_info: Vec<u8>,
    pub private_data: Vec<u8>,
}

/// Any CM message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmMessage {
    Req(Req),
    Mra(Mra),
    Rej(Rej),
    Rep(Rep),
    Rtu(Rtu),
    Dreq(Dreq),
    Drep(Drep),
    SidrReq(SidrReq),
    SidrRep(SidrRep),
    /// LAP, APR or ClassPortInfo: valid CM attributes the agent ignores
    /// (RoCE has no alternate paths).
    Other(u16),
}

fn get(d: &[u8; CM_DATA_LEN], f: Field) -> u64 {
    // Every table field lies inside the 232 bytes (checked by a test).
    f.get(d).unwrap_or(0)
}

fn set(d: &mut [u8; CM_DATA_LEN], f: Field, v: u64) {
    let ok = f.set(d, v);
    debug_assert!(ok, "field {f:?} outside the message");
}

fn gid(d: &[u8; CM_DATA_LEN], at: usize) -> [u8; 16] {
    let mut g = [0u8; 16];
    g.copy_from_slice(&d[at..at + 16]);
    g
}

fn bytes(d: &[u8; CM_DATA_LEN], r: Range<usize>) -> Vec<u8> {
    d[r].to_vec()
}

/// Copies `src` into `r`, zero-padding; errors if it does not fit.
fn put(d: &mut [u8; CM_DATA_LEN], r: Range<usize>, src: &[u8]) -> Result<(), MadError> {
    let max = r.len();
    if src.len() > max {
        return Err(MadError::PrivateData {
            len: src.len(),
            max,
        });
    }
    let dst = &mut d[r];
    dst[..src.len()].copy_from_slice(src);
    dst[src.len()..].fill(0);
    Ok(())
}

impl CmMessage {
    /// The attribute ID this message travels under.
    pub fn attr_id(&self) -> u16 {
        match self {
            CmMessage::Req(_) => attr::REQ,
            CmMessage::Mra(_) => attr::MRA,
            CmMessage::Rej(_) => attr::REJ,
            CmMessage::Rep(_) => attr::REP,
            CmMessage::Rtu(_) => attr::RTU,
            CmMessage::Dreq(_) => attr::DREQ,
            CmMessage::Drep(_) => attr::DREP,
            CmMessage::SidrReq(_) => attr::SIDR_REQ,
            CmMessage::SidrRep(_) => attr::SIDR_REP,
            CmMessage::Other(a) => *a,
        }
    }

    /// Parses a whole CM MAD (exactly 256 bytes).
    pub fn parse(mad: &[u8]) -> Result<(MadHeader, CmMessage), MadError> {
        let mad: &[u8; MAD_LEN] = mad.try_into().map_err(|_| MadError::Truncated(mad.len()))?;
        let hdr = MadHeader::parse(mad)?;
        hdr.check_cm()?;
        let mut d = [0u8; CM_DATA_LEN];
        d.copy_from_slice(&mad[MAD_HDR_LEN..]);
        let d = &d;
        let msg = match hdr.attr_id {
            attr::REQ => {
                let tst = get(d, req::TRANSPORT_SERVICE_TYPE) as u8;
                let ett = get(d, req::EXTENDED_TRANSPORT_TYPE) as u8;
                CmMessage::Req(Req {
                    local_comm_id: get(d, req::LOCAL_COMM_ID) as u32,
                    service_id: get(d, req::SERVICE_ID),
                    local_ca_guid: get(d, req::LOCAL_CA_GUID),
                    local_qkey: get(d, req::LOCAL_Q_KEY) as u32,
                    local_qpn: get(d, req::LOCAL_QPN) as u32,
                    responder_resources: get(d, req::RESPONDER_RESOURCES) as u8,
                    local_eecn: get(d, req::LOCAL_EECN) as u32,
                    initiator_depth: get(d, req::INITIATOR_DEPTH) as u8,
                    remote_eecn: get(d, req::REMOTE_EECN) as u32,
                    remote_cm_response_timeout: get(d, req::REMOTE_CM_RESPONSE_TIMEOUT) as u8,
                    service_type: match (tst, ett) {
                        (0, _) => ServiceType::Rc,
                        (1, _) => ServiceType::Uc,
                        _ => ServiceType::Other { tst, ett },
                    },
                    flow_control: get(d, req::END_TO_END_FLOW_CONTROL) != 0,
                    starting_psn: get(d, req::STARTING_PSN) as u32,
                    local_cm_response_timeout: get(d, req::LOCAL_CM_RESPONSE_TIMEOUT) as u8,
                    retry_count: get(d, req::RETRY_COUNT) as u8,
                    pkey: get(d, req::PARTITION_KEY) as u16,
                    path_mtu: get(d, req::PATH_MTU) as u8,
                    rdc_exists: get(d, req::RDC_EXISTS) != 0,
                    rnr_retry_count: get(d, req::RNR_RETRY_COUNT) as u8,
                    max_cm_retries: get(d, req::MAX_CM_RETRIES) as u8,
                    srq: get(d, req::SRQ) != 0,
                    primary: PathInfo::parse(d, req::PRIMARY_PATH),
                    alternate: PathInfo::parse(d, req::ALTERNATE_PATH),
                    sap_supported: get(d, req::SAP_SUPPORTED) != 0,
                    private_data: bytes(d, req::PRIVATE_DATA),
                })
            }
            attr::MRA => CmMessage::Mra(Mra {
                local_comm_id: get(d, mra::LOCAL_COMM_ID) as u32,
                remote_comm_id: get(d, mra::REMOTE_COMM_ID) as u32,
                message_mraed: MsgResponse::from_bits(get(d, mra::MESSAGE_MRAED)),
                service_timeout: get(d, mra::SERVICE_TIMEOUT) as u8,
                private_data: bytes(d, mra::PRIVATE_DATA),
            }),
            attr::REJ => {
                let ari_len = (get(d, rej::REJECTED_INFO_LENGTH) as usize).min(rej::ARI.len());
                CmMessage::Rej(Rej {
                    local_comm_id: get(d, rej::LOCAL_COMM_ID) as u32,
                    remote_comm_id: get(d, rej::REMOTE_COMM_ID) as u32,
                    message_rejected: MsgResponse::from_bits(get(d, rej::MESSAGE_REJECTED)),
                    ari: d[rej::ARI.start..rej::ARI.start + ari_len].to_vec(),
                    reason: get(d, rej::REASON) as u16,
                    private_data: bytes(d, rej::PRIVATE_DATA),
                })
            }
            attr::REP => CmMessage::Rep(Rep {
                local_comm_id: get(d, rep::LOCAL_COMM_ID) as u32,
                remote_comm_id: get(d, rep::REMOTE_COMM_ID) as u32,
                local_qkey: get(d, rep::LOCAL_Q_KEY) as u32,
                local_qpn: get(d, rep::LOCAL_QPN) as u32,
                local_eecn: get(d, rep::LOCAL_EECN) as u32,
                starting_psn: get(d, rep::STARTING_PSN) as u32,
                responder_resources: get(d, rep::RESPONDER_RESOURCES) as u8,
                initiator_depth: get(d, rep::INITIATOR_DEPTH) as u8,
                target_ack_delay: get(d, rep::TARGET_ACK_DELAY) as u8,
                failover_accepted: get(d, rep::FAILOVER_ACCEPTED) as u8,
                flow_control: get(d, rep::END_TO_END_FLOW_CONTROL) != 0,
                rnr_retry_count: get(d, rep::RNR_RETRY_COUNT) as u8,
                srq: get(d, rep::SRQ) != 0,
                local_ca_guid: get(d, rep::LOCAL_CA_GUID),
                private_data: bytes(d, rep::PRIVATE_DATA),
            }),
            attr::RTU => CmMessage::Rtu(Rtu {
                local_comm_id: get(d, pair::LOCAL_COMM_ID) as u32,
                remote_comm_id: get(d, pair::REMOTE_COMM_ID) as u32,
                private_data: bytes(d, pair::RTU_PRIVATE_DATA),
            }),
            attr::DREQ => CmMessage::Dreq(Dreq {
                local_comm_id: get(d, pair::LOCAL_COMM_ID) as u32,
                remote_comm_id: get(d, pair::REMOTE_COMM_ID) as u32,
                remote_qpn: get(d, pair::DREQ_REMOTE_QPN) as u32,
                private_data: bytes(d, pair::DREQ_PRIVATE_DATA),
            }),
            attr::DREP => CmMessage::Drep(Drep {
                local_comm_id: get(d, pair::LOCAL_COMM_ID) as u32,
                remote_comm_id: get(d, pair::REMOTE_COMM_ID) as u32,
                private_data: bytes(d, pair::DREP_PRIVATE_DATA),
            }),
            attr::SIDR_REQ => CmMessage::SidrReq(SidrReq {
                request_id: get(d, sidr::REQUEST_ID) as u32,
                pkey: get(d, sidr::REQ_PARTITION_KEY) as u16,
                service_id: get(d, sidr::REQ_SERVICE_ID),
                private_data: bytes(d, sidr::REQ_PRIVATE_DATA),
            }),
            attr::SIDR_REP => {
                let info_len = (get(d, sidr::REP_ADDITIONAL_INFO_LENGTH) as usize)
                    .min(sidr::REP_ADDITIONAL_INFO.len());
                let at = sidr::REP_ADDITIONAL_INFO.start;
                CmMessage::SidrRep(SidrRep {
                    request_id: get(d, sidr::REQUEST_ID) as u32,
                    status: get(d, sidr::REP_STATUS) as u8,
                    qpn: get(d, sidr::REP_QPN) as u32,
                    service_id: get(d, sidr::REP_SERVICE_ID),
                    qkey: get(d, sidr::REP_Q_KEY) as u32,
                    additional_info: d[at..at + info_len].to_vec(),
                    private_data: bytes(d, sidr::REP_PRIVATE_DATA),
                })
            }
            a @ (attr::LAP | attr::APR | attr::CLASS_PORT_INFO) => CmMessage::Other(a),
            a => return Err(MadError::Attribute(a)),
        };
        Ok((hdr, msg))
    }

    /// The whole MAD of this message with transaction ID `tid`. Errors
    /// (never panics) when private data or ARI is longer than the message
    /// carries.
    pub fn emit(&self, tid: u64) -> Result<[u8; MAD_LEN], MadError> {
        let mut d = [0u8; CM_DATA_LEN];
        match self {
            CmMessage::Req(m) => {
                let (tst, ett) = match m.service_type {
                    ServiceType::Rc => (0, 0),
                    ServiceType::Uc => (1, 0),
                    ServiceType::Other { tst, ett } => (tst, ett),
                };
                for (f, v) in [
                    (req::LOCAL_COMM_ID, u64::from(m.local_comm_id)),
                    (req::SERVICE_ID, m.service_id),
                    (req::LOCAL_CA_GUID, m.local_ca_guid),
                    (req::LOCAL_Q_KEY, m.local_qkey.into()),
                    (req::LOCAL_QPN, m.local_qpn.into()),
                    (req::RESPONDER_RESOURCES, m.responder_resources.into()),
                    (req::LOCAL_EECN, m.local_eecn.into()),
                    (req::INITIATOR_DEPTH, m.initiator_depth.into()),
                    (req::REMOTE_EECN, m.remote_eecn.into()),
                    (
                        req::REMOTE_CM_RESPONSE_TIMEOUT,
                        m.remote_cm_response_timeout.into(),
                    ),
                    (req::TRANSPORT_SERVICE_TYPE, tst.into()),
                    (req::END_TO_END_FLOW_CONTROL, m.flow_control.into()),
                    (req::STARTING_PSN, m.starting_psn.into()),
                    (
                        req::LOCAL_CM_RESPONSE_TIMEOUT,
                        m.local_cm_response_timeout.into(),
                    ),
                    (req::RETRY_COUNT, m.retry_count.into()),
                    (req::PARTITION_KEY, m.pkey.into()),
                    (req::PATH_MTU, m.path_mtu.into()),
                    (req::RDC_EXISTS, m.rdc_exists.into()),
                    (req::RNR_RETRY_COUNT, m.rnr_retry_count.into()),
                    (req::MAX_CM_RETRIES, m.max_cm_retries.into()),
                    (req::SRQ, m.srq.into()),
                    (req::EXTENDED_TRANSPORT_TYPE, ett.into()),
                ] {
                    set(&mut d, f, v);
                }
                m.primary.emit(&mut d, req::PRIMARY_PATH);
                m.alternate.emit(&mut d, req::ALTERNATE_PATH);
                set(&mut d, req::SAP_SUPPORTED, m.sap_supported.into());
                put(&mut d, req::PRIVATE_DATA, &m.private_data)?;
            }
            CmMessage::Mra(m) => {
                set(&mut d, mra::LOCAL_COMM_ID, m.local_comm_id.into());
                set(&mut d, mra::REMOTE_COMM_ID, m.remote_comm_id.into());
                set(&mut d, mra::MESSAGE_MRAED, m.message_mraed as u64);
                set(&mut d, mra::SERVICE_TIMEOUT, m.service_timeout.into());
                put(&mut d, mra::PRIVATE_DATA, &m.private_data)?;
            }
            CmMessage::Rej(m) => {
                set(&mut d, rej::LOCAL_COMM_ID, m.local_comm_id.into());
                set(&mut d, rej::REMOTE_COMM_ID, m.remote_comm_id.into());
                set(&mut d, rej::MESSAGE_REJECTED, m.message_rejected as u64);
                set(&mut d, rej::REJECTED_INFO_LENGTH, m.ari.len() as u64);
                set(&mut d, rej::REASON, m.reason.into());
                put(&mut d, rej::ARI, &m.ari)?;
                put(&mut d, rej::PRIVATE_DATA, &m.private_data)?;
            }
            CmMessage::Rep(m) => {
                for (f, v) in [
                    (rep::LOCAL_COMM_ID, u64::from(m.local_comm_id)),
                    (rep::REMOTE_COMM_ID, m.remote_comm_id.into()),
                    (rep::LOCAL_Q_KEY, m.local_qkey.into()),
                    (rep::LOCAL_QPN, m.local_qpn.into()),
                    (rep::LOCAL_EECN, m.local_eecn.into()),
                    (rep::STARTING_PSN, m.starting_psn.into()),
                    (rep::RESPONDER_RESOURCES, m.responder_resources.into()),
                    (rep::INITIATOR_DEPTH, m.initiator_depth.into()),
                    (rep::TARGET_ACK_DELAY, m.target_ack_delay.into()),
                    (rep::FAILOVER_ACCEPTED, m.failover_accepted.into()),
                    (rep::END_TO_END_FLOW_CONTROL, m.flow_control.into()),
                    (rep::RNR_RETRY_COUNT, m.rnr_retry_count.into()),
                    (rep::SRQ, m.srq.into()),
                    (rep::LOCAL_CA_GUID, m.local_ca_guid),
                ] {
                    set(&mut d, f, v);
                }
                put(&mut d, rep::PRIVATE_DATA, &m.private_data)?;
            }
            CmMessage::Rtu(m) => {
                set(&mut d, pair::LOCAL_COMM_ID, m.local_comm_id.into());
                set(&mut d, pair::REMOTE_COMM_ID, m.remote_comm_id.into());
                put(&mut d, pair::RTU_PRIVATE_DATA, &m.private_data)?;
            }
            CmMessage::Dreq(m) => {
                set(&mut d, pair::LOCAL_COMM_ID, m.local_comm_id.into());
                set(&mut d, pair::REMOTE_COMM_ID, m.remote_comm_id.into());
                set(&mut d, pair::DREQ_REMOTE_QPN, m.remote_qpn.into());
                put(&mut d, pair::DREQ_PRIVATE_DATA, &m.private_data)?;
            }
            CmMessage::Drep(m) => {
                set(&mut d, pair::LOCAL_COMM_ID, m.local_comm_id.into());
                set(&mut d, pair::REMOTE_COMM_ID, m.remote_comm_id.into());
                put(&mut d, pair::DREP_PRIVATE_DATA, &m.private_data)?;
            }
            CmMessage::SidrReq(m) => {
                set(&mut d, sidr::REQUEST_ID, m.request_id.into());
                set(&mut d, sidr::REQ_PARTITION_KEY, m.pkey.into());
                set(&mut d, sidr::REQ_SERVICE_ID, m.service_id);
                put(&mut d, sidr::REQ_PRIVATE_DATA, &m.private_data)?;
            }
            CmMessage::SidrRep(m) => {
                set(&mut d, sidr::REQUEST_ID, m.request_id.into());
                set(&mut d, sidr::REP_STATUS, m.status.into());
                set(
                    &mut d,
                    sidr::REP_ADDITIONAL_INFO_LENGTH,
                    m.additional_info.len() as u64,
                );
                set(&mut d, sidr::REP_QPN, m.qpn.into());
                set(&mut d, sidr::REP_SERVICE_ID, m.service_id);
                set(&mut d, sidr::REP_Q_KEY, m.qkey.into());
                put(&mut d, sidr::REP_ADDITIONAL_INFO, &m.additional_info)?;
                put(&mut d, sidr::REP_PRIVATE_DATA, &m.private_data)?;
            }
            CmMessage::Other(_) => {}
        }
        let mut out = [0u8; MAD_LEN];
        MadHeader::cm(self.attr_id(), tid).emit(&mut out);
        out[MAD_HDR_LEN..].copy_from_slice(&d);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_lies_inside_the_message() {
        let all = [
            req::LOCAL_COMM_ID,
            req::SERVICE_ID,
            req::LOCAL_CA_GUID,
            req::LOCAL_Q_KEY,
            req::LOCAL_QPN,
            req::RESPONDER_RESOURCES,
            req::LOCAL_EECN,
            req::INITIATOR_DEPTH,
            req::REMOTE_EECN,
            req::REMOTE_CM_RESPONSE_TIMEOUT,
            req::TRANSPORT_SERVICE_TYPE,
            req::END_TO_END_FLOW_CONTROL,
            req::STARTING_PSN,
            req::LOCAL_CM_RESPONSE_TIMEOUT,
            req::RETRY_COUNT,
            req::PARTITION_KEY,
            req::PATH_MTU,
            req::RDC_EXISTS,
            req::RNR_RETRY_COUNT,
            req::MAX_CM_RETRIES,
            req::SRQ,
            req::EXTENDED_TRANSPORT_TYPE,
            req::SAP_SUPPORTED,
            shifted(path::LOCAL_ACK_TIMEOUT, req::ALTERNATE_PATH),
            rep::LOCAL_CA_GUID,
            sidr::REP_Q_KEY,
        ];
        for f in all {
            assert!(f.end() <= CM_DATA_LEN, "{f:?}");
        }
        assert_eq!(req::PRIVATE_DATA.len(), private_data_len::REQ);
        assert_eq!(mra::PRIVATE_DATA.len(), private_data_len::MRA);
        assert_eq!(rej::PRIVATE_DATA.len(), private_data_len::REJ);
        assert_eq!(rep::PRIVATE_DATA.len(), private_data_len::REP);
        assert_eq!(pair::RTU_PRIVATE_DATA.len(), private_data_len::RTU);
        assert_eq!(pair::DREQ_PRIVATE_DATA.len(), private_data_len::DREQ);
        assert_eq!(pair::DREP_PRIVATE_DATA.len(), private_data_len::DREP);
        assert_eq!(sidr::REQ_PRIVATE_DATA.len(), private_data_len::SIDR_REQ);
        assert_eq!(sidr::REP_PRIVATE_DATA.len(), private_data_len::SIDR_REP);
    }

    #[test]
    fn private_data_that_does_not_fit_is_an_error() {
        let m = CmMessage::Rtu(Rtu {
            local_comm_id: 1,
            remote_comm_id: 2,
            private_data: vec![0; 225],
        });
        assert_eq!(m.emit(7), Err(MadError::PrivateData { len: 225, max: 224 }));
    }
}
