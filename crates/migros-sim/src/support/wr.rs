//! Work request builders. Every send WR is signaled.

use migros_test_support::rc::signaled_send as signaled;
use migros_transport::{Access, MwBind, RecvWr, SendWr, Sge, UdDest, WrOpcode};

pub fn send(wr_id: u64, sges: Vec<Sge>) -> SendWr {
    signaled(wr_id, WrOpcode::Send, sges)
}

pub fn send_imm(wr_id: u64, sges: Vec<Sge>, imm: u32) -> SendWr {
    signaled(wr_id, WrOpcode::SendWithImm { imm }, sges)
}

pub fn write(wr_id: u64, sges: Vec<Sge>, remote_addr: u64, rkey: u32) -> SendWr {
    signaled(wr_id, WrOpcode::RdmaWrite { remote_addr, rkey }, sges)
}

pub fn write_imm(wr_id: u64, sges: Vec<Sge>, remote_addr: u64, rkey: u32, imm: u32) -> SendWr {
    let op = WrOpcode::RdmaWriteWithImm {
        remote_addr,
        rkey,
        imm,
    };
    signaled(wr_id, op, sges)
}

pub fn read(wr_id: u64, sges: Vec<Sge>, remote_addr: u64, rkey: u32) -> SendWr {
    signaled(wr_id, WrOpcode::RdmaRead { remote_addr, rkey }, sges)
}

/// `result` is the 8-byte SGE the original value lands in.
pub fn cmp_swap(
    wr_id: u64,
    result: Sge,
    remote_addr: u64,
    rkey: u32,
    compare: u64,
    swap: u64,
) -> SendWr {
    let op = WrOpcode::AtomicCmpSwap {
        remote_addr,
        rkey,
        compare,
        swap,
    };
    signaled(wr_id, op, vec![result])
}

/// `result` is the 8-byte SGE the original value lands in.
pub fn fetch_add(wr_id: u64, result: Sge, remote_addr: u64, rkey: u32, add: u64) -> SendWr {
    let op = WrOpcode::AtomicFetchAdd {
        remote_addr,
        rkey,
        add,
    };
    signaled(wr_id, op, vec![result])
}

pub fn send_inv(wr_id: u64, sges: Vec<Sge>, rkey: u32) -> SendWr {
    signaled(wr_id, WrOpcode::SendWithInv { rkey }, sges)
}

/// ATOMIC WRITE of the 8 bytes `value` names (one 8-byte SGE).
pub fn atomic_write(wr_id: u64, value: Sge, remote_addr: u64, rkey: u32) -> SendWr {
    signaled(
        wr_id,
        WrOpcode::AtomicWrite { remote_addr, rkey },
        vec![value],
    )
}

/// BIND_MW of window `mw_rkey` (its current rkey) to `length` bytes at
/// I/O address `addr` of region `mr_lkey`, the window's key byte becoming
/// `new_rkey`'s.
pub fn bind_mw(
    wr_id: u64,
    mw_rkey: u32,
    new_rkey: u32,
    (mr_lkey, addr, length): (u32, u64, u64),
    access: Access,
) -> SendWr {
    let bind = MwBind {
        mw_rkey,
        new_rkey,
        mr_lkey,
        addr,
        length,
        access,
    };
    signaled(wr_id, WrOpcode::BindMw(bind), Vec::new())
}

pub fn local_inv(wr_id: u64, rkey: u32) -> SendWr {
    signaled(wr_id, WrOpcode::LocalInv { rkey }, Vec::new())
}

/// `rkey` with the next key byte (libibverbs' `ibv_inc_rkey`).
pub fn inc_rkey(rkey: u32) -> u32 {
    (rkey & !0xff) | (rkey.wrapping_add(1) & 0xff)
}

pub fn ud_send(wr_id: u64, sges: Vec<Sge>, dest: UdDest) -> SendWr {
    SendWr {
        ud: Some(dest),
        ..send(wr_id, sges)
    }
}

pub fn recv(wr_id: u64, sges: Vec<Sge>) -> RecvWr {
    RecvWr { wr_id, sges }
}
