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

use std::net::{IpAddr, Ipv6Addr};

use thiserror::Error;

use crate::verbs::*;

pub const SQ_WQE_SIZE: usize = 256;
pub const RQ_WQE_SIZE: usize = 80;
pub const CQE_SIZE: usize = 64;
/// SGEs a send WQE holds.
pub const MAX_SEND_SGE: usize = 8;
/// SGEs a receive WQE holds.
pub const MAX_RECV_SGE: usize = 4;
/// Inline bytes a send WQE holds.
pub const MAX_INLINE: usize = 128;
/// Bytes of a QP's control block: `sq_ci: u32`, `rq_ci: u32`.
pub const QP_CTRL_SIZE: usize = 8;
pub const QP_CTRL_SQ_CI: u64 = 0;
pub const QP_CTRL_RQ_CI: u64 = 4;
/// A CQ's control block: the client's consumer index (`u32`).
pub const CQ_CTRL_SIZE: usize = 4;
pub const CQ_CTRL_CI: u64 = 0;
/// An SRQ's control block: the daemon's consumer index (`u32`).
pub const SRQ_CTRL_SIZE: usize = 4;
pub const SRQ_CTRL_CI: u64 = 0;
/// Offset of the phase byte in a CQE.
pub const CQE_PHASE: usize = CQE_SIZE - 1;

const SGE_AREA: usize = 128;
const SGE_SIZE: usize = 16;

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

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}
fn put_addr(b: &mut [u8], at: usize, a: IpAddr) {
    let v6 = match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    b[at..at + 16].copy_from_slice(&v6.octets());
}
fn get_addr(b: &[u8], at: usize) -> IpAddr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[at..at + 16]);
    let v6 = Ipv6Addr::from(o);
    v6.to_ipv4_mapped()
        .map(IpAddr::V4)
        .unwrap_or(IpAddr::V6(v6))
}

fn put_sges(b: &mut [u8], at: usize, sges: &[Sge]) {
    for (i, s) in sges.iter().enumerate() {
        let o = at + i * SGE_SIZE;
        put_u64(b, o, s.addr);
        put_u32(b, o + 8, s.length);
        put_u32(b, o + 12, s.lkey);
    }
}
fn get_sges(b: &[u8], at: usize, n: usize) -> Vec<Sge> {
    (0..n)
        .map(|i| {
            let o = at + i * SGE_SIZE;
            Sge {
                addr: get_u64(b, o),
                length: get_u32(b, o + 8),
                lkey: get_u32(b, o + 12),
            }
        })
        .collect()
}

/// Encodes a send WR into a send WQE.
pub fn encode_send(wr: &SendWr, out: &mut [u8; SQ_WQE_SIZE]) -> Result<(), RingError> {
    out.fill(0);
    put_u64(out, 0, wr.wr_id);
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
        WrOpcode::LocalInv { rkey } => (8, rkey, 0, 0, 0, 0),
        WrOpcode::BindMw(b) => (
            9,
            b.new_rkey,
            b.mw_rkey,
            b.addr,
            b.length,
            u64::from(b.mr_lkey) | u64::from(b.access.0) << 32,
        ),
        WrOpcode::AtomicWrite { remote_addr, rkey } => (10, 0, rkey, remote_addr, 0, 0),
    };
    out[8] = code;
    out[9] = (wr.flags.0 & 0x0f) as u8;
    put_u32(out, 16, imm_or_inv);
    put_u32(out, 20, rkey);
    put_u64(out, 24, raddr);
    put_u64(out, 32, cmp_add);
    put_u64(out, 40, swap);
    if let Some(ud) = wr.ud {
        out[11] = 1;
        put_u32(out, 48, ud.remote_qpn);
        put_u32(out, 52, ud.remote_qkey);
        put_addr(out, 56, ud.addr);
    }
    match &wr.data {
        SendData::Sges(sges) => {
            if sges.len() > MAX_SEND_SGE {
                return Err(RingError::TooManySges(sges.len()));
            }
            out[10] = sges.len() as u8;
            put_sges(out, SQ_WQE_SIZE - SGE_AREA, sges);
        }
        SendData::Inline(data) => {
            if data.len() > MAX_INLINE {
                return Err(RingError::InlineTooLong(data.len()));
            }
            out[9] |= SendFlags::INLINE.0 as u8;
            put_u32(out, 12, data.len() as u32);
            out[SQ_WQE_SIZE - SGE_AREA..SQ_WQE_SIZE - SGE_AREA + data.len()].copy_from_slice(data);
        }
    }
    Ok(())
}

/// Decodes a send WQE; never panics on what a client wrote.
pub fn decode_send(b: &[u8; SQ_WQE_SIZE]) -> Result<SendWr, RingError> {
    let flags = b[9];
    if flags & !0x0f != 0 {
        return Err(RingError::Flags(flags));
    }
    let (imm_or_inv, rkey, raddr, cmp_add, swap) = (
        get_u32(b, 16),
        get_u32(b, 20),
        get_u64(b, 24),
        get_u64(b, 32),
        get_u64(b, 40),
    );
    let opcode = match b[8] {
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
        8 => WrOpcode::LocalInv { rkey: imm_or_inv },
        9 => WrOpcode::BindMw(MwBind {
            mw_rkey: rkey,
            new_rkey: imm_or_inv,
            mr_lkey: swap as u32,
            addr: raddr,
            length: cmp_add,
            access: Access((swap >> 32) as u32),
        }),
        10 => WrOpcode::AtomicWrite {
            remote_addr: raddr,
            rkey,
        },
        other => return Err(RingError::Opcode(other)),
    };
    let area = SQ_WQE_SIZE - SGE_AREA;
    let data = if flags & SendFlags::INLINE.0 as u8 != 0 {
        let len = get_u32(b, 12) as usize;
        if len > MAX_INLINE {
            return Err(RingError::InlineTooLong(len));
        }
        SendData::Inline(b[area..area + len].to_vec())
    } else {
        let n = usize::from(b[10]);
        if n > MAX_SEND_SGE {
            return Err(RingError::TooManySges(n));
        }
        SendData::Sges(get_sges(b, area, n))
    };
    let ud = (b[11] != 0).then(|| UdDest {
        addr: get_addr(b, 56),
        remote_qpn: get_u32(b, 48),
        remote_qkey: get_u32(b, 52),
    });
    Ok(SendWr {
        wr_id: get_u64(b, 0),
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
    put_u64(out, 0, wr.wr_id);
    put_u32(out, 8, wr.sges.len() as u32);
    put_sges(out, 16, &wr.sges);
    Ok(())
}

/// Decodes a receive WQE; never panics on what a client wrote.
pub fn decode_recv(b: &[u8; RQ_WQE_SIZE]) -> Result<RecvWr, RingError> {
    let n = get_u32(b, 8) as usize;
    if n > MAX_RECV_SGE {
        return Err(RingError::TooManySges(n));
    }
    Ok(RecvWr {
        wr_id: get_u64(b, 0),
        sges: get_sges(b, 16, n),
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
    put_u64(out, 0, wc.wr_id);
    put_u32(out, 8, wc.byte_len);
    put_u32(out, 12, wc.qp_num);
    put_u32(out, 16, wc.src_qp);
    let mut flags = 0;
    if let Some(imm) = wc.imm_data {
        put_u32(out, 20, imm);
        flags |= CQE_FLAG_IMM;
    } else if let Some(rkey) = wc.invalidated_rkey {
        put_u32(out, 20, rkey);
        flags |= CQE_FLAG_INV;
    }
    out[28] = wc.status as u8;
    out[29] = wc.opcode as u8;
    if let Some(a) = wc.src_addr {
        put_addr(out, 32, a);
        flags |= CQE_FLAG_GRH;
    }
    out[30] = flags;
    out[CQE_PHASE] = phase;
}

/// Decodes a CQE written by the daemon.
pub fn decode_cqe(b: &[u8; CQE_SIZE]) -> Result<WorkCompletion, RingError> {
    let status = match b[28] {
        0 => WcStatus::Success,
        1 => WcStatus::LocLenErr,
        2 => WcStatus::LocQpOpErr,
        4 => WcStatus::LocProtErr,
        5 => WcStatus::WrFlushErr,
        6 => WcStatus::MwBindErr,
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
    let opcode = match b[29] {
        0 => WcOpcode::Send,
        1 => WcOpcode::RdmaWrite,
        2 => WcOpcode::RdmaRead,
        3 => WcOpcode::CompSwap,
        4 => WcOpcode::FetchAdd,
        5 => WcOpcode::BindMw,
        6 => WcOpcode::LocalInv,
        9 => WcOpcode::AtomicWrite,
        128 => WcOpcode::Recv,
        129 => WcOpcode::RecvRdmaWithImm,
        _ => return Err(RingError::Completion),
    };
    let flags = b[30];
    let word = get_u32(b, 20);
    Ok(WorkCompletion {
        wr_id: get_u64(b, 0),
        status,
        opcode,
        qp_num: get_u32(b, 12),
        byte_len: get_u32(b, 8),
        imm_data: (flags & CQE_FLAG_IMM != 0).then_some(word),
        invalidated_rkey: (flags & CQE_FLAG_INV != 0).then_some(word),
        src_qp: get_u32(b, 16),
        src_addr: (flags & CQE_FLAG_GRH != 0).then(|| get_addr(b, 32)),
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
                wr_id: 5,
                opcode: WrOpcode::BindMw(MwBind {
                    mw_rkey: 0x1234_5601,
                    new_rkey: 0x1234_5602,
                    mr_lkey: 0xfeed,
                    addr: 0x7f00_0000_1000,
                    length: 1 << 33,
                    access: Access::REMOTE_WRITE | Access::ZERO_BASED,
                }),
                flags: SendFlags::SIGNALED,
                data: SendData::Sges(vec![]),
                ud: None,
            },
            SendWr {
                wr_id: 6,
                opcode: WrOpcode::LocalInv { rkey: 0xabcd_ef01 },
                flags: SendFlags::FENCE,
                data: SendData::Sges(vec![]),
                ud: None,
            },
            SendWr {
                wr_id: 7,
                opcode: WrOpcode::AtomicWrite {
                    remote_addr: 0x1000,
                    rkey: 3,
                },
                flags: SendFlags::INLINE,
                data: SendData::Inline(vec![1, 2, 3, 4, 5, 6, 7, 8]),
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
        b[10] = 200;
        assert_eq!(decode_send(&b), Err(RingError::TooManySges(200)));
        b[8] = 99;
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

    #[test]
    fn phase_alternates_per_lap_and_is_never_zero() {
        assert_eq!(phase(0, 4), 1);
        assert_eq!(phase(3, 4), 1);
        assert_eq!(phase(4, 4), 2);
        assert_eq!(phase(8, 4), 1);
        assert_eq!(phase(u32::MAX, 1), 2);
    }
}
