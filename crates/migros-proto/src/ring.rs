//! Layouts of the rings in a client's memory, and their codecs.
//!
//! Rings are arrays of fixed-size entries indexed by free-running `u32`
//! counters (slot = index % entries); every ring has a power-of-two number
//! of entries, so the counters may wrap. Values are little-endian, as client
//! and daemon share a machine.
//! - Send ring: [`SQ_WQE_SIZE`]-byte send WQEs, written by the client; the
//!   daemon reads them after a doorbell and writes its consumer index into
//!   the QP control block ([`QP_CTRL_SQ_CI`]).
//! - Receive ring (QP or SRQ): [`RQ_WQE_SIZE`]-byte WQEs, likewise
//!   ([`QP_CTRL_RQ_CI`], or [`SRQ_CTRL_CI`]).
//! - Completion ring: [`CQE_SIZE`]-byte CQEs written by the daemon; the last
//!   byte is the phase, written after the rest, and valid when it equals
//!   [`phase`] of the entry's index. The client publishes its consumer index
//!   at [`CQ_CTRL_CI`] so the daemon never overwrites an unread entry.
//!
//! Each layout is one table of byte ranges ([`send_wqe`], [`recv_wqe`],
//! [`sge`], [`cqe`], [`qp_ctrl`], [`cq_ctrl`], [`srq_ctrl`]) read by the
//! encoders (the client) and the decoders (the daemon) alike; the sizes
//! and offsets named `SQ_WQE_SIZE`, `QP_CTRL_SQ_CI`, … derive from them.

use std::net::{IpAddr, Ipv6Addr};
use std::ops::Range;

use thiserror::Error;

use crate::verbs::*;

/// Bytes `start..end` of an entry or control block.
pub type Field = Range<usize>;

/// The send WQE: what a client writes for one send WR. The data area holds
/// up to [`MAX_SEND_SGE`] SGEs ([`sge`]) or up to [`MAX_INLINE`] inline bytes.
pub mod send_wqe {
    use super::Field;

    pub const WR_ID: Field = 0..8;
    /// Send opcode (0 SEND … 7 FETCH_ADD, as in [`super::encode_send`]).
    pub const OPCODE: usize = 8;
    /// `SendFlags` (low four bits).
    pub const FLAGS: usize = 9;
    /// SGEs in the data area (when not inline).
    pub const NUM_SGE: usize = 10;
    /// Non-zero: the UD destination below is valid.
    pub const HAS_UD: usize = 11;
    pub const INLINE_LEN: Field = 12..16;
    /// Immediate data, or the rkey a SEND with invalidate names.
    pub const IMM_OR_INV: Field = 16..20;
    pub const RKEY: Field = 20..24;
    pub const REMOTE_ADDR: Field = 24..32;
    /// Atomics: the compare value (CAS) or the addend (FETCH_ADD).
    pub const COMPARE_ADD: Field = 32..40;
    pub const SWAP: Field = 40..48;
    pub const UD_QPN: Field = 48..52;
    pub const UD_QKEY: Field = 52..56;
    /// UD destination address (IPv4 addresses mapped into IPv6).
    pub const UD_ADDR: Field = 56..72;
    /// SGEs or inline data.
    pub const DATA: Field = 128..256;
    pub const SIZE: usize = DATA.end;
}

/// The receive WQE (QP receive queues and SRQs).
pub mod recv_wqe {
    use super::Field;

    pub const WR_ID: Field = 0..8;
    pub const NUM_SGE: Field = 8..12;
    /// Up to [`super::MAX_RECV_SGE`] SGEs ([`super::sge`]).
    pub const SGES: Field = 16..80;
    pub const SIZE: usize = SGES.end;
}

/// One scatter/gather element inside a WQE.
pub mod sge {
    use super::Field;

    pub const ADDR: Field = 0..8;
    pub const LENGTH: Field = 8..12;
    pub const LKEY: Field = 12..16;
    pub const SIZE: usize = LKEY.end;
}

/// The completion entry the daemon writes; [`cqe::PHASE`] is written last.
pub mod cqe {
    use super::Field;

    pub const WR_ID: Field = 0..8;
    pub const BYTE_LEN: Field = 8..12;
    pub const QP_NUM: Field = 12..16;
    pub const SRC_QP: Field = 16..20;
    /// Immediate data ([`super::CQE_FLAG_IMM`]) or an invalidated rkey
    /// ([`super::CQE_FLAG_INV`]).
    pub const IMM_OR_INV: Field = 20..24;
    /// `WcStatus` (libibverbs numbering).
    pub const STATUS: usize = 28;
    /// `WcOpcode` (libibverbs numbering).
    pub const OPCODE: usize = 29;
    /// `CQE_FLAG_*`.
    pub const FLAGS: usize = 30;
    /// The sender's address ([`super::CQE_FLAG_GRH`]).
    pub const SRC_ADDR: Field = 32..48;
    /// See [`super::phase`].
    pub const PHASE: usize = 63;
    pub const SIZE: usize = PHASE + 1;
}

/// A QP's control block: the daemon's consumer indices (`u32` each).
pub mod qp_ctrl {
    use super::Field;

    pub const SQ_CI: Field = 0..4;
    pub const RQ_CI: Field = 4..8;
    pub const SIZE: usize = RQ_CI.end;
}

/// A CQ's control block: the client's consumer index.
pub mod cq_ctrl {
    use super::Field;

    pub const CI: Field = 0..4;
    pub const SIZE: usize = CI.end;
}

/// An SRQ's control block: the daemon's consumer index.
pub mod srq_ctrl {
    use super::Field;

    pub const CI: Field = 0..4;
    pub const SIZE: usize = CI.end;
}

pub const SQ_WQE_SIZE: usize = send_wqe::SIZE;
pub const RQ_WQE_SIZE: usize = recv_wqe::SIZE;
pub const CQE_SIZE: usize = cqe::SIZE;
/// SGEs a send WQE holds.
pub const MAX_SEND_SGE: usize = (send_wqe::DATA.end - send_wqe::DATA.start) / sge::SIZE;
/// SGEs a receive WQE holds.
pub const MAX_RECV_SGE: usize = (recv_wqe::SGES.end - recv_wqe::SGES.start) / sge::SIZE;
/// Inline bytes a send WQE holds.
pub const MAX_INLINE: usize = send_wqe::DATA.end - send_wqe::DATA.start;
/// Bytes of a QP's control block ([`qp_ctrl`]).
pub const QP_CTRL_SIZE: usize = qp_ctrl::SIZE;
pub const QP_CTRL_SQ_CI: u64 = qp_ctrl::SQ_CI.start as u64;
pub const QP_CTRL_RQ_CI: u64 = qp_ctrl::RQ_CI.start as u64;
/// Bytes of a CQ's control block ([`cq_ctrl`]).
pub const CQ_CTRL_SIZE: usize = cq_ctrl::SIZE;
pub const CQ_CTRL_CI: u64 = cq_ctrl::CI.start as u64;
/// Bytes of an SRQ's control block ([`srq_ctrl`]).
pub const SRQ_CTRL_SIZE: usize = srq_ctrl::SIZE;
pub const SRQ_CTRL_CI: u64 = srq_ctrl::CI.start as u64;
/// Offset of the phase byte in a CQE.
pub const CQE_PHASE: usize = cqe::PHASE;

// The fields of each layout fit their entry and do not overlap (checked
// field by field in the tests); the sizes are what both sides allocate.
const _: () = {
    assert!(SQ_WQE_SIZE == 256 && RQ_WQE_SIZE == 80 && CQE_SIZE == 64);
    assert!(MAX_SEND_SGE == 8 && MAX_RECV_SGE == 4 && MAX_INLINE == 128);
    assert!(send_wqe::UD_ADDR.end <= send_wqe::DATA.start);
    assert!(cqe::SRC_ADDR.end <= cqe::PHASE);
};

/// Why a ring entry could not be decoded (the client wrote garbage).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RingError {
    #[error("unknown send opcode {0}")]
    Opcode(u8),
    #[error("unknown send flags {0:#x}")]
    Flags(u8),
    #[error("{0} sges exceed the entry's room")]
    TooManySges(usize),
    #[error("{0} inline bytes exceed the entry's room")]
    InlineTooLong(usize),
    #[error("unknown completion status or opcode")]
    Completion,
}

/// The phase byte that marks entry `index` of a ring of `entries` as valid:
/// 1 on even laps, 2 on odd ones (zeroed memory is never valid).
pub fn phase(index: u32, entries: u32) -> u8 {
    ((index / entries.max(1)) & 1) as u8 + 1
}

fn put_u32(b: &mut [u8], f: Field, v: u32) {
    b[f].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], f: Field, v: u64) {
    b[f].copy_from_slice(&v.to_le_bytes());
}
fn get_u32(b: &[u8], f: Field) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[f]);
    u32::from_le_bytes(a)
}
fn get_u64(b: &[u8], f: Field) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[f]);
    u64::from_le_bytes(a)
}
fn put_addr(b: &mut [u8], f: Field, a: IpAddr) {
    let v6 = match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    b[f].copy_from_slice(&v6.octets());
}
fn get_addr(b: &[u8], f: Field) -> IpAddr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[f]);
    let v6 = Ipv6Addr::from(o);
    v6.to_ipv4_mapped()
        .map(IpAddr::V4)
        .unwrap_or(IpAddr::V6(v6))
}

/// `field` of SGE number `i` in an SGE array starting at `area`.
fn sge_field(area: usize, i: usize, field: Field) -> Field {
    let at = area + i * sge::SIZE;
    at + field.start..at + field.end
}
fn put_sges(b: &mut [u8], area: usize, sges: &[Sge]) {
    for (i, s) in sges.iter().enumerate() {
        put_u64(b, sge_field(area, i, sge::ADDR), s.addr);
        put_u32(b, sge_field(area, i, sge::LENGTH), s.length);
        put_u32(b, sge_field(area, i, sge::LKEY), s.lkey);
    }
}
fn get_sges(b: &[u8], area: usize, n: usize) -> Vec<Sge> {
    (0..n)
        .map(|i| Sge {
            addr: get_u64(b, sge_field(area, i, sge::ADDR)),
            length: get_u32(b, sge_field(area, i, sge::LENGTH)),
            lkey: get_u32(b, sge_field(area, i, sge::LKEY)),
        })
        .collect()
}

/// The `wr_id` of a send WQE, readable even when the rest does not decode
/// (the daemon fails that WR with it).
pub fn send_wr_id(b: &[u8; SQ_WQE_SIZE]) -> u64 {
    get_u64(b, send_wqe::WR_ID)
}

/// The `wr_id` of a receive WQE, readable even when the rest does not decode.
pub fn recv_wr_id(b: &[u8; RQ_WQE_SIZE]) -> u64 {
    get_u64(b, recv_wqe::WR_ID)
}

/// Encodes a send WR into a send WQE.
pub fn encode_send(wr: &SendWr, out: &mut [u8; SQ_WQE_SIZE]) -> Result<(), RingError> {
    use send_wqe as f;
    out.fill(0);
    put_u64(out, f::WR_ID, wr.wr_id);
    let (code, imm_or_inv, rkey, raddr, cmp_add, swap) = match wr.opcode {
        WrOpcode::Send => (0, 0, 0, 0, 0, 0),
        WrOpcode::SendWithImm { imm } => (1, imm, 0, 0, 0, 0),
        WrOpcode::SendWithInv { rkey } => (2, rkey, 0, 0, 0, 0),
        WrOpcode::RdmaWrite { remote_addr, rkey } => (3, 0, rkey, remote_addr, 0, 0),
        WrOpcode::RdmaWriteWithImm {
            remote_addr,
            rkey,
            imm,
        } => (4, imm, rkey, remote_addr, 0, 0),
        WrOpcode::RdmaRead { remote_addr, rkey } => (5, 0, rkey, remote_addr, 0, 0),
        WrOpcode::AtomicCmpSwap {
            remote_addr,
            rkey,
            compare,
            swap,
        } => (6, 0, rkey, remote_addr, compare, swap),
        WrOpcode::AtomicFetchAdd {
            remote_addr,
            rkey,
            add,
        } => (7, 0, rkey, remote_addr, add, 0),
    };
    out[f::OPCODE] = code;
    out[f::FLAGS] = (wr.flags.0 & 0x0f) as u8;
    put_u32(out, f::IMM_OR_INV, imm_or_inv);
    put_u32(out, f::RKEY, rkey);
    put_u64(out, f::REMOTE_ADDR, raddr);
    put_u64(out, f::COMPARE_ADD, cmp_add);
    put_u64(out, f::SWAP, swap);
    if let Some(ud) = wr.ud {
        out[f::HAS_UD] = 1;
        put_u32(out, f::UD_QPN, ud.remote_qpn);
        put_u32(out, f::UD_QKEY, ud.remote_qkey);
        put_addr(out, f::UD_ADDR, ud.addr);
    }
    match &wr.data {
        SendData::Sges(sges) => {
            if sges.len() > MAX_SEND_SGE {
                return Err(RingError::TooManySges(sges.len()));
            }
            out[f::NUM_SGE] = sges.len() as u8;
            put_sges(out, f::DATA.start, sges);
        }
        SendData::Inline(data) => {
            if data.len() > MAX_INLINE {
                return Err(RingError::InlineTooLong(data.len()));
            }
            out[f::FLAGS] |= SendFlags::INLINE.0 as u8;
            put_u32(out, f::INLINE_LEN, data.len() as u32);
            out[f::DATA.start..f::DATA.start + data.len()].copy_from_slice(data);
        }
    }
    Ok(())
}

/// Decodes a send WQE; never panics on what a client wrote.
pub fn decode_send(b: &[u8; SQ_WQE_SIZE]) -> Result<SendWr, RingError> {
    use send_wqe as f;
    let flags = b[f::FLAGS];
    if flags & !0x0f != 0 {
        return Err(RingError::Flags(flags));
    }
    let (imm_or_inv, rkey, raddr, cmp_add, swap) = (
        get_u32(b, f::IMM_OR_INV),
        get_u32(b, f::RKEY),
        get_u64(b, f::REMOTE_ADDR),
        get_u64(b, f::COMPARE_ADD),
        get_u64(b, f::SWAP),
    );
    let opcode = match b[f::OPCODE] {
        0 => WrOpcode::Send,
        1 => WrOpcode::SendWithImm { imm: imm_or_inv },
        2 => WrOpcode::SendWithInv { rkey: imm_or_inv },
        3 => WrOpcode::RdmaWrite {
            remote_addr: raddr,
            rkey,
        },
        4 => WrOpcode::RdmaWriteWithImm {
            remote_addr: raddr,
            rkey,
            imm: imm_or_inv,
        },
        5 => WrOpcode::RdmaRead {
            remote_addr: raddr,
            rkey,
        },
        6 => WrOpcode::AtomicCmpSwap {
            remote_addr: raddr,
            rkey,
            compare: cmp_add,
            swap,
        },
        7 => WrOpcode::AtomicFetchAdd {
            remote_addr: raddr,
            rkey,
            add: cmp_add,
        },
        other => return Err(RingError::Opcode(other)),
    };
    let data = if flags & SendFlags::INLINE.0 as u8 != 0 {
        let len = get_u32(b, f::INLINE_LEN) as usize;
        if len > MAX_INLINE {
            return Err(RingError::InlineTooLong(len));
        }
        SendData::Inline(b[f::DATA.start..f::DATA.start + len].to_vec())
    } else {
        let n = usize::from(b[f::NUM_SGE]);
        if n > MAX_SEND_SGE {
            return Err(RingError::TooManySges(n));
        }
        SendData::Sges(get_sges(b, f::DATA.start, n))
    };
    let ud = (b[f::HAS_UD] != 0).then(|| UdDest {
        addr: get_addr(b, f::UD_ADDR),
        remote_qpn: get_u32(b, f::UD_QPN),
        remote_qkey: get_u32(b, f::UD_QKEY),
    });
    Ok(SendWr {
        wr_id: get_u64(b, f::WR_ID),
        opcode,
        flags: SendFlags(u32::from(flags)),
        data,
        ud,
    })
}

/// Encodes a receive WR into a receive WQE.
pub fn encode_recv(wr: &RecvWr, out: &mut [u8; RQ_WQE_SIZE]) -> Result<(), RingError> {
    if wr.sges.len() > MAX_RECV_SGE {
        return Err(RingError::TooManySges(wr.sges.len()));
    }
    out.fill(0);
    put_u64(out, recv_wqe::WR_ID, wr.wr_id);
    put_u32(out, recv_wqe::NUM_SGE, wr.sges.len() as u32);
    put_sges(out, recv_wqe::SGES.start, &wr.sges);
    Ok(())
}

/// Decodes a receive WQE; never panics on what a client wrote.
pub fn decode_recv(b: &[u8; RQ_WQE_SIZE]) -> Result<RecvWr, RingError> {
    let n = get_u32(b, recv_wqe::NUM_SGE) as usize;
    if n > MAX_RECV_SGE {
        return Err(RingError::TooManySges(n));
    }
    Ok(RecvWr {
        wr_id: get_u64(b, recv_wqe::WR_ID),
        sges: get_sges(b, recv_wqe::SGES.start, n),
    })
}

/// CQE flag: `imm_data` is valid.
pub const CQE_FLAG_IMM: u8 = 1;
/// CQE flag: the first 40 bytes of the receive buffer hold a GRH (UD).
pub const CQE_FLAG_GRH: u8 = 2;
/// CQE flag: `imm_data` holds an invalidated rkey.
pub const CQE_FLAG_INV: u8 = 4;

/// Encodes a completion into a CQE, phase byte included.
pub fn encode_cqe(wc: &WorkCompletion, phase: u8, out: &mut [u8; CQE_SIZE]) {
    out.fill(0);
    put_u64(out, cqe::WR_ID, wc.wr_id);
    put_u32(out, cqe::BYTE_LEN, wc.byte_len);
    put_u32(out, cqe::QP_NUM, wc.qp_num);
    put_u32(out, cqe::SRC_QP, wc.src_qp);
    let mut flags = 0;
    if let Some(imm) = wc.imm_data {
        put_u32(out, cqe::IMM_OR_INV, imm);
        flags |= CQE_FLAG_IMM;
    } else if let Some(rkey) = wc.invalidated_rkey {
        put_u32(out, cqe::IMM_OR_INV, rkey);
        flags |= CQE_FLAG_INV;
    }
    out[cqe::STATUS] = wc.status as u8;
    out[cqe::OPCODE] = wc.opcode as u8;
    if let Some(a) = wc.src_addr {
        put_addr(out, cqe::SRC_ADDR, a);
        flags |= CQE_FLAG_GRH;
    }
    out[cqe::FLAGS] = flags;
    out[cqe::PHASE] = phase;
}

/// Decodes a CQE written by the daemon.
pub fn decode_cqe(b: &[u8; CQE_SIZE]) -> Result<WorkCompletion, RingError> {
    let status = match b[cqe::STATUS] {
        0 => WcStatus::Success,
        1 => WcStatus::LocLenErr,
        2 => WcStatus::LocQpOpErr,
        4 => WcStatus::LocProtErr,
        5 => WcStatus::WrFlushErr,
        7 => WcStatus::BadRespErr,
        8 => WcStatus::LocAccessErr,
        9 => WcStatus::RemInvReqErr,
        10 => WcStatus::RemAccessErr,
        11 => WcStatus::RemOpErr,
        12 => WcStatus::RetryExcErr,
        13 => WcStatus::RnrRetryExcErr,
        19 => WcStatus::FatalErr,
        20 => WcStatus::RespTimeoutErr,
        21 => WcStatus::GeneralErr,
        _ => return Err(RingError::Completion),
    };
    let opcode = match b[cqe::OPCODE] {
        0 => WcOpcode::Send,
        1 => WcOpcode::RdmaWrite,
        2 => WcOpcode::RdmaRead,
        3 => WcOpcode::CompSwap,
        4 => WcOpcode::FetchAdd,
        128 => WcOpcode::Recv,
        129 => WcOpcode::RecvRdmaWithImm,
        _ => return Err(RingError::Completion),
    };
    let flags = b[cqe::FLAGS];
    let word = get_u32(b, cqe::IMM_OR_INV);
    Ok(WorkCompletion {
        wr_id: get_u64(b, cqe::WR_ID),
        status,
        opcode,
        qp_num: get_u32(b, cqe::QP_NUM),
        byte_len: get_u32(b, cqe::BYTE_LEN),
        imm_data: (flags & CQE_FLAG_IMM != 0).then_some(word),
        invalidated_rkey: (flags & CQE_FLAG_INV != 0).then_some(word),
        src_qp: get_u32(b, cqe::SRC_QP),
        src_addr: (flags & CQE_FLAG_GRH != 0).then(|| get_addr(b, cqe::SRC_ADDR)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sge(i: u32) -> Sge {
        Sge {
            addr: 0x7f00_0000_0000 + u64::from(i) * 4096,
            length: 100 + i,
            lkey: 7 + i,
        }
    }

    #[test]
    fn send_wqes_round_trip() {
        let ud = Some(UdDest {
            addr: "198.18.0.2".parse().unwrap(),
            remote_qpn: 0x42,
            remote_qkey: 0x1111_1111,
        });
        let wrs = [
            SendWr {
                wr_id: 1,
                opcode: WrOpcode::Send,
                flags: SendFlags::SIGNALED,
                data: SendData::Sges(vec![sge(0)]),
                ud: None,
            },
            SendWr {
                wr_id: 2,
                opcode: WrOpcode::RdmaWriteWithImm {
                    remote_addr: 0xdead_beef_0000,
                    rkey: 9,
                    imm: 0x1122_3344,
                },
                flags: SendFlags::SIGNALED | SendFlags::FENCE,
                data: SendData::Sges((0..8).map(sge).collect()),
                ud: None,
            },
            SendWr {
                wr_id: 3,
                opcode: WrOpcode::AtomicCmpSwap {
                    remote_addr: 8,
                    rkey: 1,
                    compare: 5,
                    swap: 9,
                },
                flags: SendFlags::default(),
                data: SendData::Sges(vec![sge(1)]),
                ud: None,
            },
            SendWr {
                wr_id: 4,
                opcode: WrOpcode::SendWithImm { imm: 3 },
                flags: SendFlags::INLINE,
                data: SendData::Inline(vec![7; 128]),
                ud,
            },
        ];
        for wr in wrs {
            let mut b = [0u8; SQ_WQE_SIZE];
            encode_send(&wr, &mut b).unwrap();
            assert_eq!(decode_send(&b).unwrap(), wr);
        }
    }

    #[test]
    fn oversized_entries_are_refused() {
        let mut b = [0u8; SQ_WQE_SIZE];
        let wr = SendWr {
            wr_id: 1,
            opcode: WrOpcode::Send,
            flags: SendFlags::default(),
            data: SendData::Sges((0..9).map(sge).collect()),
            ud: None,
        };
        assert_eq!(encode_send(&wr, &mut b), Err(RingError::TooManySges(9)));
        b[send_wqe::NUM_SGE] = 200;
        assert_eq!(decode_send(&b), Err(RingError::TooManySges(200)));
        b[send_wqe::OPCODE] = 99;
        assert_eq!(decode_send(&b), Err(RingError::Opcode(99)));
    }

    #[test]
    fn recv_and_cqe_round_trip() {
        let wr = RecvWr {
            wr_id: 77,
            sges: vec![sge(0), sge(1)],
        };
        let mut b = [0u8; RQ_WQE_SIZE];
        encode_recv(&wr, &mut b).unwrap();
        assert_eq!(decode_recv(&b).unwrap(), wr);
        let wc = WorkCompletion {
            wr_id: 5,
            status: WcStatus::Success,
            opcode: WcOpcode::Recv,
            qp_num: 0x33,
            byte_len: 240,
            imm_data: Some(0xabcd),
            invalidated_rkey: None,
            src_qp: 0x44,
            src_addr: Some("198.18.0.7".parse().unwrap()),
        };
        let mut c = [0u8; CQE_SIZE];
        encode_cqe(&wc, 2, &mut c);
        assert_eq!(c[CQE_PHASE], 2);
        assert_eq!(decode_cqe(&c).unwrap(), wc);
    }

    /// Every field lies inside its entry and no two overlap.
    #[test]
    fn layouts_are_disjoint_and_fit() {
        fn byte(at: usize) -> Field {
            at..at + 1
        }
        let layouts: [(&str, usize, Vec<Field>); 7] = [
            (
                "send_wqe",
                SQ_WQE_SIZE,
                vec![
                    send_wqe::WR_ID,
                    byte(send_wqe::OPCODE),
                    byte(send_wqe::FLAGS),
                    byte(send_wqe::NUM_SGE),
                    byte(send_wqe::HAS_UD),
                    send_wqe::INLINE_LEN,
                    send_wqe::IMM_OR_INV,
                    send_wqe::RKEY,
                    send_wqe::REMOTE_ADDR,
                    send_wqe::COMPARE_ADD,
                    send_wqe::SWAP,
                    send_wqe::UD_QPN,
                    send_wqe::UD_QKEY,
                    send_wqe::UD_ADDR,
                    send_wqe::DATA,
                ],
            ),
            (
                "recv_wqe",
                RQ_WQE_SIZE,
                vec![recv_wqe::WR_ID, recv_wqe::NUM_SGE, recv_wqe::SGES],
            ),
            ("sge", sge::SIZE, vec![sge::ADDR, sge::LENGTH, sge::LKEY]),
            (
                "cqe",
                CQE_SIZE,
                vec![
                    cqe::WR_ID,
                    cqe::BYTE_LEN,
                    cqe::QP_NUM,
                    cqe::SRC_QP,
                    cqe::IMM_OR_INV,
                    byte(cqe::STATUS),
                    byte(cqe::OPCODE),
                    byte(cqe::FLAGS),
                    cqe::SRC_ADDR,
                    byte(cqe::PHASE),
                ],
            ),
            (
                "qp_ctrl",
                QP_CTRL_SIZE,
                vec![qp_ctrl::SQ_CI, qp_ctrl::RQ_CI],
            ),
            ("cq_ctrl", CQ_CTRL_SIZE, vec![cq_ctrl::CI]),
            ("srq_ctrl", SRQ_CTRL_SIZE, vec![srq_ctrl::CI]),
        ];
        for (name, size, fields) in layouts {
            let mut used = vec![false; size];
            for f in fields {
                assert!(f.start < f.end && f.end <= size, "{name}: {f:?}");
                for b in f.clone() {
                    assert!(!used[b], "{name}: byte {b} of {f:?} is taken");
                    used[b] = true;
                }
            }
        }
    }

    /// The daemon reads the `wr_id` of an entry it cannot decode.
    #[test]
    fn wr_ids_of_undecodable_entries() {
        let mut b = [0u8; SQ_WQE_SIZE];
        let wr = SendWr {
            wr_id: 0x1234_5678_9abc,
            opcode: WrOpcode::Send,
            flags: SendFlags::default(),
            data: SendData::Sges(vec![sge(0)]),
            ud: None,
        };
        encode_send(&wr, &mut b).unwrap();
        b[send_wqe::OPCODE] = 99;
        assert!(decode_send(&b).is_err());
        assert_eq!(send_wr_id(&b), wr.wr_id);
        let mut r = [0u8; RQ_WQE_SIZE];
        encode_recv(
            &RecvWr {
                wr_id: 77,
                sges: vec![],
            },
            &mut r,
        )
        .unwrap();
        r[recv_wqe::NUM_SGE.start] = 200;
        assert!(decode_recv(&r).is_err());
        assert_eq!(recv_wr_id(&r), 77);
    }

    #[test]
    fn phase_alternates_per_lap_and_is_never_zero() {
        assert_eq!(phase(0, 4), 1);
        assert_eq!(phase(3, 4), 1);
        assert_eq!(phase(4, 4), 2);
        assert_eq!(phase(8, 4), 1);
        assert_eq!(phase(u32::MAX, 1), 2);
    }
}
