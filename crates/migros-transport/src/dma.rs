//! Moving message bytes between packets and registered memory: gather from
//! a send WR's SGEs, scatter into a receive WR's SGEs, and remote accesses
//! checked against an rkey. Every access goes through the MR table first.

use crate::memory::{KeyError, Memory, MrTable, Reach};
use migros_proto::verbs::{Access, Pdn, Qpn, Sge, WcStatus};

/// Why a local data movement failed (each becomes a completion status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmaError {
    /// The SGE list is shorter than the message (`LocLenErr`).
    Length,
    /// An lkey check failed (`LocProtErr`).
    Protection,
    /// The memory behind a valid key could not be reached (`LocAccessErr`).
    Access,
}

impl DmaError {
    /// The completion status of a work request that failed this way.
    pub fn status(self) -> WcStatus {
        match self {
            DmaError::Length => WcStatus::LocLenErr,
            DmaError::Protection => WcStatus::LocProtErr,
            DmaError::Access => WcStatus::LocAccessErr,
        }
    }
}

/// Total bytes an SGE list covers (saturating; lengths are u32 each).
pub fn sge_total(sges: &[Sge]) -> u64 {
    sges.iter().map(|s| u64::from(s.length)).sum()
}

/// Visits the pieces of `sges` that cover `[offset, offset + len)`.
fn for_each_piece(
    sges: &[Sge],
    mut offset: u64,
    len: usize,
    mut f: impl FnMut(&Sge, u64, std::ops::Range<usize>) -> Result<(), DmaError>,
) -> Result<(), DmaError> {
    let mut done = 0usize;
    for sge in sges {
        if done == len {
            break;
        }
        let sge_len = u64::from(sge.length);
        if offset >= sge_len {
            offset -= sge_len;
            continue;
        }
        let take =
            usize::try_from((sge_len - offset).min((len - done) as u64)).unwrap_or(len - done);
        f(sge, sge.addr.wrapping_add(offset), done..done + take)?;
        done += take;
        offset = 0;
    }
    if done == len {
        Ok(())
    } else {
        Err(DmaError::Length)
    }
}

/// Reads `out.len()` bytes of the message described by `sges`, from `offset`.
pub fn gather(
    mem: &mut dyn Memory,
    mrs: &MrTable,
    pd: Pdn,
    sges: &[Sge],
    offset: u64,
    out: &mut [u8],
) -> Result<(), DmaError> {
    let len = out.len();
    for_each_piece(sges, offset, len, |sge, iova, range| {
        let at = mrs
            .check_local(sge.lkey, pd, iova, range.len() as u64, Access::default())
            .map_err(|_| DmaError::Protection)?;
        mem.read(at.owner, at.addr, &mut out[range])
            .map_err(|_| DmaError::Access)
    })
}

/// Writes `data` into the message buffer described by `sges`, at `offset`.
pub fn scatter(
    mem: &mut dyn Memory,
    mrs: &MrTable,
    pd: Pdn,
    sges: &[Sge],
    offset: u64,
    data: &[u8],
) -> Result<(), DmaError> {
    for_each_piece(sges, offset, data.len(), |sge, iova, range| {
        let at = mrs
            .check_local(sge.lkey, pd, iova, range.len() as u64, Access::LOCAL_WRITE)
            .map_err(|_| DmaError::Protection)?;
        mem.write(at.owner, at.addr, &data[range])
            .map_err(|_| DmaError::Access)
    })
}

/// Why a remote access was refused (the responder NAKs with remote access error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteError {
    Key(KeyError),
    Fault,
}

/// The QP a remote access arrives on: its PD and number (a type 2 memory
/// window answers only to the QP it is bound to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requestee {
    pub pd: Pdn,
    pub qpn: Qpn,
}

impl Requestee {
    /// Where `len` bytes at `va` through `rkey` are, if this requester
    /// may `need` them.
    fn reach(
        self,
        mrs: &MrTable,
        rkey: u32,
        va: u64,
        len: usize,
        need: Access,
    ) -> Result<Reach, RemoteError> {
        mrs.check_remote(rkey, self.pd, self.qpn, va, len as u64, need)
            .map_err(RemoteError::Key)
    }
}

/// Writes `data` at `va` through `rkey` (RDMA WRITE payload).
pub fn remote_write(
    mem: &mut dyn Memory,
    mrs: &MrTable,
    qp: Requestee,
    rkey: u32,
    va: u64,
    data: &[u8],
) -> Result<(), RemoteError> {
    let at = qp.reach(mrs, rkey, va, data.len(), Access::REMOTE_WRITE)?;
    mem.write(at.owner, at.addr, data)
        .map_err(|_| RemoteError::Fault)
}

/// Reads `out.len()` bytes at `va` through `rkey` (RDMA READ response).
pub fn remote_read(
    mem: &mut dyn Memory,
    mrs: &MrTable,
    qp: Requestee,
    rkey: u32,
    va: u64,
    out: &mut [u8],
) -> Result<(), RemoteError> {
    let at = qp.reach(mrs, rkey, va, out.len(), Access::REMOTE_READ)?;
    mem.read(at.owner, at.addr, out)
        .map_err(|_| RemoteError::Fault)
}
