//! Queue pairs and shared receive queues: rings this process fills, with a
//! doorbell per batch.
//!
//! Posting follows the kernel's rxe: a QP in RESET, INIT or RTR refuses
//! send WRs and one in RESET receives (EINVAL); a full queue refuses the
//! WR (ENOMEM). A list is posted up to the WR that fails, and the error
//! says how many went ([`PostError`]), so `bad_wr` can point at the right
//! one; [`Qp::post_send_all`] (the `ibv_wr_*` batch) posts all or none.
//! The QP's state is the one its owner last set or queried: the device
//! moves it only to ERR (and SQE), which allow posting.

use std::sync::atomic::{fence, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use migros_proto::msg::{Request, Response, SrqResize};
use migros_proto::ring::{self as layout, RQ_WQE_SIZE, SQ_WQE_SIZE};
use migros_proto::verbs::*;

use crate::conn::{lock, unexpected};
use crate::context::Context;
use crate::cq::{Cq, CqShared};
use crate::error::{Error, PostError, Result};
use crate::flush::WrTrack;
use crate::memory::{Pd, PdShared};
use crate::ring::{destroy_or_keep, finish_resize, ring_entries, Ctrl, DaemonRing, Producer};

/// What `Pd::create_qp` needs.
#[derive(Debug, Clone)]
pub struct QpInitAttr<'a> {
    pub qp_type: QpType,
    pub send_cq: &'a Cq,
    pub recv_cq: &'a Cq,
    pub srq: Option<&'a Srq>,
    pub cap: QpCap,
    pub sq_sig_all: bool,
}

/// A queue pair. Keeps its PD, CQs and SRQ alive; destroyed on drop.
pub struct Qp {
    pub qpn: Qpn,
    ctx: Context,
    qp_type: QpType,
    cap: QpCap,
    sq: Mutex<Producer>,
    /// `None` when receives come from an SRQ.
    rq: Option<Mutex<Producer>>,
    ctrl: Ctrl,
    sq_sig_all: bool,
    /// The QP's state as its owner last set or saw it (a `QpState`).
    state: AtomicU8,
    /// Posted WRs not yet completed (flushed if the daemon dies).
    track: Arc<WrTrack>,
    _pd: Arc<PdShared>,
    _send_cq: Arc<CqShared>,
    _recv_cq: Arc<CqShared>,
    _srq: Option<Arc<SrqShared>>,
}

impl Qp {
    pub(crate) fn create(pd: &Pd, attr: &QpInitAttr) -> Result<Qp> {
        let want = attr.cap;
        check_cap("max_send_sge", want.max_send_sge, layout::MAX_SEND_SGE)?;
        check_cap("max_recv_sge", want.max_recv_sge, layout::MAX_RECV_SGE)?;
        check_cap("max_inline_data", want.max_inline_data, layout::MAX_INLINE)?;
        let cap = QpCap {
            max_send_wr: ring_entries(want.max_send_wr)?,
            max_recv_wr: match attr.srq {
                Some(_) => 0,
                None => ring_entries(want.max_recv_wr)?,
            },
            ..want
        };
        let mut sq = Producer::new(cap.max_send_wr, SQ_WQE_SIZE)?;
        let mut rq = match attr.srq {
            Some(_) => None,
            None => Some(Producer::new(cap.max_recv_wr, RQ_WQE_SIZE)?),
        };
        let mut ctrl = Ctrl::new(layout::QP_CTRL_SIZE)?;
        let ctx = &pd.inner.ctx;
        let answer = ctx.request(&Request::CreateQp {
            pd: pd.handle,
            qp_type: attr.qp_type,
            send_cq: attr.send_cq.handle,
            recv_cq: attr.recv_cq.handle,
            srq: attr.srq.map(|s| s.handle),
            cap,
            sq_sig_all: attr.sq_sig_all,
            sq_ring: sq.addr(),
            rq_ring: rq.as_ref().map_or(0, Producer::addr),
            ctrl: ctrl.addr(),
        });
        let qpn = match answer {
            Ok(Response::Qp { qpn }) => qpn,
            other => {
                // Only a refusal is sure to leave the daemon without our rings.
                if !matches!(other, Err(Error::Daemon { .. })) {
                    sq.leak_on_drop();
                    if let Some(rq) = rq.as_mut() {
                        rq.leak_on_drop();
                    }
                    ctrl.leak_on_drop();
                }
                return Err(match other {
                    Ok(resp) => unexpected("CreateQp", &resp),
                    Err(e) => e,
                });
            }
        };
        let track = Arc::new(WrTrack::new(
            qpn,
            attr.send_cq.handle,
            attr.srq.is_none().then_some(attr.recv_cq.handle),
            cap.max_send_wr,
            cap.max_recv_wr,
        ));
        ctx.track(&track);
        Ok(Qp {
            qpn,
            ctx: ctx.clone(),
            qp_type: attr.qp_type,
            cap,
            sq: Mutex::new(sq),
            rq: rq.map(Mutex::new),
            ctrl,
            sq_sig_all: attr.sq_sig_all,
            state: AtomicU8::new(QpState::Reset as u8),
            track,
            _pd: pd.inner.clone(),
            _send_cq: attr.send_cq.inner.clone(),
            _recv_cq: attr.recv_cq.inner.clone(),
            _srq: attr.srq.map(|s| s.inner.clone()),
        })
    }

    pub fn qp_type(&self) -> QpType {
        self.qp_type
    }

    /// The capacities in effect: work request counts are the ring sizes
    /// (the requested ones rounded up to powers of two).
    pub fn cap(&self) -> QpCap {
        self.cap
    }

    pub fn modify(&self, attr: &QpAttr, mask: AttrMask) -> Result<()> {
        self.ctx.request_ok(&Request::ModifyQp {
            qpn: self.qpn,
            attr: attr.clone(),
            mask,
        })?;
        if mask.contains(AttrMask::STATE) {
            self.state.store(attr.qp_state as u8, Ordering::Release);
        }
        Ok(())
    }

    pub fn query(&self) -> Result<QpAttr> {
        match self.ctx.request(&Request::QueryQp { qpn: self.qpn })? {
            Response::QpAttr(attr) => {
                self.state.store(attr.qp_state as u8, Ordering::Release);
                Ok(attr)
            }
            other => Err(unexpected("QueryQp", &other)),
        }
    }

    /// The state the QP's owner last set or saw.
    pub fn state(&self) -> QpState {
        match self.state.load(Ordering::Acquire) {
            0 => QpState::Reset,
            1 => QpState::Init,
            2 => QpState::Rtr,
            3 => QpState::Rts,
            4 => QpState::Sqd,
            5 => QpState::Sqe,
            _ => QpState::Err,
        }
    }

    /// Send WRs need RTS or later (rxe's `rxe_post_send`: EINVAL below).
    fn check_send_state(&self) -> Result<()> {
        match self.state() {
            s @ (QpState::Reset | QpState::Init | QpState::Rtr) => Err(Error::InvalidArgument(
                format!("a qp in {s:?} cannot send (it needs RTS)"),
            )),
            _ => Ok(()),
        }
    }

    /// Posts send WRs (one doorbell for the batch).
    ///
    /// On an error (a QP not yet in RTS, a WR that does not fit the QP, or
    /// a full ring) the WRs before the failing one are posted and the rest
    /// are not, as with `ibv_post_send`; [`Qp::post_send_counted`] says
    /// how many.
    pub fn post_send(&self, wrs: &[SendWr]) -> Result<()> {
        self.post_send_counted(wrs).map_err(Error::from)
    }

    /// [`Qp::post_send`], saying on error how many WRs were posted.
    pub fn post_send_counted(&self, wrs: &[SendWr]) -> std::result::Result<(), PostError> {
        self.post_sends(wrs, false)
    }

    /// Posts every WR of `wrs` or none (the `ibv_wr_start` …
    /// `ibv_wr_complete` batch).
    pub fn post_send_all(&self, wrs: &[SendWr]) -> Result<()> {
        self.post_sends(wrs, true).map_err(Error::from)
    }

    fn post_sends(&self, wrs: &[SendWr], whole: bool) -> std::result::Result<(), PostError> {
        let none = |error| PostError { posted: 0, error };
        self.ctx.check_alive().map_err(none)?;
        self.check_send_state().map_err(none)?;
        let mut sq = lock(&self.sq);
        let start = sq.pi();
        let ci = || self.ctrl.ci(layout::QP_CTRL_SQ_CI);
        let mut wqe = [0u8; SQ_WQE_SIZE];
        let mut result = Ok(());
        if whole {
            let mut entries = Vec::with_capacity(wrs.len());
            for wr in wrs {
                encode_send(self.qp_type, &self.cap, wr, &mut wqe).map_err(none)?;
                entries.push(wqe);
            }
            if (sq.room(ci()) as usize) < entries.len() {
                return Err(none(Error::QueueFull));
            }
            for entry in &entries {
                // Room was checked for all of them.
                sq.push(ci(), entry).map_err(none)?;
            }
        } else {
            for (posted, wr) in wrs.iter().enumerate() {
                let step = encode_send(self.qp_type, &self.cap, wr, &mut wqe)
                    .and_then(|()| sq.push(ci(), &wqe));
                if let Err(error) = step {
                    result = Err(PostError { posted, error });
                    break;
                }
            }
        }
        if sq.pi() != start {
            // Recorded before the daemon can complete them.
            let posted = sq.pi().wrapping_sub(start) as usize;
            let kept = self.track.post_send(wrs[..posted].iter().map(|wr| {
                let signalled = self.sq_sig_all || wr.flags.contains(SendFlags::SIGNALED);
                (wr.wr_id, signalled)
            }));
            // The WQEs are written before the daemon hears of them.
            fence(Ordering::Release);
            if let Err(e) = self.ctx.doorbell(&Request::SqDoorbell {
                qpn: self.qpn,
                pi: sq.pi(),
            }) {
                self.track.unpost_send(kept);
                return Err(none(e));
            }
        }
        result
    }

    /// Posts receive WRs (one doorbell for the batch); errors as in
    /// [`Qp::post_send`] (a QP in RESET refuses them). A QP with an SRQ
    /// has no receive queue.
    pub fn post_recv(&self, wrs: &[RecvWr]) -> Result<()> {
        self.post_recv_counted(wrs).map_err(Error::from)
    }

    /// [`Qp::post_recv`], saying on error how many WRs were posted.
    pub fn post_recv_counted(&self, wrs: &[RecvWr]) -> std::result::Result<(), PostError> {
        let none = |error| PostError { posted: 0, error };
        let Some(rq) = &self.rq else {
            return Err(none(Error::InvalidArgument(
                "the qp takes its receives from an srq".into(),
            )));
        };
        if self.state() == QpState::Reset {
            // C10-97.2.1, rxe's rxe_post_recv.
            return Err(none(Error::InvalidArgument(
                "a qp in RESET takes no receives".into(),
            )));
        }
        let ci = || self.ctrl.ci(layout::QP_CTRL_RQ_CI);
        post_recv(
            &self.ctx,
            &mut lock(rq),
            &ci,
            self.cap.max_recv_sge,
            wrs,
            Some(&self.track),
            |pi| Request::RqDoorbell { qpn: self.qpn, pi },
        )
    }
}

impl Drop for Qp {
    fn drop(&mut self) {
        if self
            .ctx
            .request_ok(&Request::DestroyQp { qpn: self.qpn })
            .is_err()
        {
            // The daemon may still read the rings and write the control block.
            lock(&self.sq).leak_on_drop();
            if let Some(rq) = &self.rq {
                lock(rq).leak_on_drop();
            }
            self.ctrl.leak_on_drop();
        }
    }
}

impl std::fmt::Debug for Qp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Qp({:#x}, {:?})", self.qpn, self.qp_type)
    }
}

/// A shared receive queue. QPs using it keep it alive.
pub struct Srq {
    pub handle: Srqn,
    pub(crate) inner: Arc<SrqShared>,
}

pub(crate) struct SrqShared {
    ctx: Context,
    handle: Srqn,
    max_sge: u32,
    ring: Mutex<SrqRing>,
    _pd: Arc<PdShared>,
}

/// An SRQ's ring and the control word the daemon publishes its consumer
/// index in (both replaced when the SRQ is resized).
struct SrqRing {
    rq: Producer,
    ctrl: Ctrl,
}

impl DaemonRing for SrqRing {
    fn leak_on_drop(&mut self) {
        self.rq.leak_on_drop();
        self.ctrl.leak_on_drop();
    }
}

impl Srq {
    pub(crate) fn create(pd: &Pd, max_wr: u32, max_sge: u32, limit: u32) -> Result<Srq> {
        check_cap("max_sge", max_sge, layout::MAX_RECV_SGE)?;
        let entries = ring_entries(max_wr)?;
        let mut rq = Producer::new(entries, RQ_WQE_SIZE)?;
        let mut ctrl = Ctrl::new(layout::SRQ_CTRL_SIZE)?;
        let ctx = &pd.inner.ctx;
        let answer = ctx.request(&Request::CreateSrq {
            pd: pd.handle,
            max_wr: entries,
            max_sge,
            limit,
            ring: rq.addr(),
            ctrl: ctrl.addr(),
        });
        let handle = match answer {
            Ok(Response::Srq { srq }) => srq,
            other => {
                if !matches!(other, Err(Error::Daemon { .. })) {
                    rq.leak_on_drop();
                    ctrl.leak_on_drop();
                }
                return Err(match other {
                    Ok(resp) => unexpected("CreateSrq", &resp),
                    Err(e) => e,
                });
            }
        };
        Ok(Srq {
            handle,
            inner: Arc::new(SrqShared {
                ctx: ctx.clone(),
                handle,
                max_sge,
                ring: Mutex::new(SrqRing { rq, ctrl }),
                _pd: pd.inner.clone(),
            }),
        })
    }

    /// The ring's entries (the requested size rounded up to a power of two).
    pub fn entries(&self) -> u32 {
        lock(&self.inner.ring).rq.entries()
    }

    /// Posts receive WRs (one doorbell for the batch); errors as in
    /// [`Qp::post_send`].
    pub fn post_recv(&self, wrs: &[RecvWr]) -> Result<()> {
        self.post_recv_counted(wrs).map_err(Error::from)
    }

    /// [`Srq::post_recv`], saying on error how many WRs were posted.
    pub fn post_recv_counted(&self, wrs: &[RecvWr]) -> std::result::Result<(), PostError> {
        let s = &self.inner;
        let mut ring = lock(&s.ring);
        let SrqRing { rq, ctrl } = &mut *ring;
        let ci = || ctrl.ci(layout::SRQ_CTRL_CI);
        post_recv(&s.ctx, rq, &ci, s.max_sge, wrs, None, |pi| {
            Request::SrqDoorbell { srq: s.handle, pi }
        })
    }

    /// Arms the SRQ limit event (0 disarms); at most the SRQ's size
    /// (EINVAL, as rxe).
    pub fn modify_limit(&self, limit: u32) -> Result<()> {
        self.modify(None, Some(limit))
    }

    /// `ibv_modify_srq`, both attributes in one step (rxe checks both
    /// before changing either): `max_wr` makes the SRQ take up to that
    /// many receives (rounded up to a power of two) from a new ring,
    /// keeping those posted and not yet taken (fewer than those, or than
    /// the limit, is EINVAL); `limit` arms the limit event (0 disarms; more
    /// than the SRQ's size is EINVAL).
    pub fn modify(&self, max_wr: Option<u32>, limit: Option<u32>) -> Result<()> {
        let s = &self.inner;
        let Some(max_wr) = max_wr else {
            return s.ctx.request_ok(&Request::ModifySrq {
                srq: s.handle,
                limit,
                resize: None,
            });
        };
        let entries = ring_entries(max_wr)?;
        let mut ring = lock(&s.ring);
        let new = SrqRing {
            rq: Producer::new(entries, RQ_WQE_SIZE)?,
            ctrl: Ctrl::new(layout::SRQ_CTRL_SIZE)?,
        };
        let resize = SrqResize {
            max_wr: entries,
            pi: ring.rq.pi(),
            ring: new.rq.addr(),
            ctrl: new.ctrl.addr(),
        };
        let result = s.ctx.request_ok(&Request::ModifySrq {
            srq: s.handle,
            limit,
            resize: Some(resize),
        });
        // On success the daemon took every entry of the old ring first.
        finish_resize(&mut *ring, new, result)
    }

    /// The most SGEs a receive of this SRQ may have.
    pub fn max_sge(&self) -> u32 {
        self.inner.max_sge
    }

    /// `ibv_query_srq`: the SRQ's size and its armed limit (0 once the
    /// limit event fired).
    pub fn query(&self) -> Result<(u32, u32)> {
        match self
            .inner
            .ctx
            .request(&Request::QuerySrq { srq: self.handle })?
        {
            Response::SrqAttr { max_wr, limit } => Ok((max_wr, limit)),
            other => Err(unexpected("QuerySrq", &other)),
        }
    }
}

impl Drop for SrqShared {
    fn drop(&mut self) {
        destroy_or_keep(
            &self.ctx,
            &Request::DestroySrq { srq: self.handle },
            &self.ring,
        );
    }
}

impl std::fmt::Debug for Srq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Srq({})", self.handle)
    }
}

/// Checks `wr` against a QP's type and capacities and encodes it into `wqe`.
fn encode_send(
    qp_type: QpType,
    cap: &QpCap,
    wr: &SendWr,
    wqe: &mut [u8; SQ_WQE_SIZE],
) -> Result<()> {
    match &wr.data {
        SendData::Sges(sges) if sges.len() > cap.max_send_sge as usize => {
            return Err(Error::InvalidArgument(format!(
                "{} sges exceed the qp's max_send_sge of {}",
                sges.len(),
                cap.max_send_sge
            )));
        }
        SendData::Inline(data)
            if data.len() > cap.max_inline_data as usize
                && !matches!(wr.opcode, WrOpcode::AtomicWrite { .. }) =>
        {
            return Err(Error::InvalidArgument(format!(
                "{} inline bytes exceed the qp's max_inline_data of {}",
                data.len(),
                cap.max_inline_data
            )));
        }
        _ => {}
    }
    if qp_type == QpType::Ud {
        if wr.ud.is_none() {
            return Err(Error::InvalidArgument(
                "a ud send needs a destination".into(),
            ));
        }
        if !matches!(wr.opcode, WrOpcode::Send | WrOpcode::SendWithImm { .. }) {
            return Err(Error::InvalidArgument(format!(
                "{:?} is not a ud operation",
                wr.opcode
            )));
        }
    }
    layout::encode_send(wr, wqe).map_err(|e| Error::InvalidArgument(e.to_string()))
}

fn check_cap(what: &str, value: u32, max: usize) -> Result<()> {
    if value as usize > max {
        return Err(Error::InvalidArgument(format!(
            "{what} of {value} exceeds {max}"
        )));
    }
    Ok(())
}

/// Writes receive WQEs into `ring` and rings one doorbell.
fn post_recv(
    ctx: &Context,
    rq: &mut Producer,
    ci: &dyn Fn() -> u32,
    max_sge: u32,
    wrs: &[RecvWr],
    track: Option<&WrTrack>,
    doorbell: impl Fn(u32) -> Request,
) -> std::result::Result<(), PostError> {
    let none = |error| PostError { posted: 0, error };
    ctx.check_alive().map_err(none)?;
    let start = rq.pi();
    let mut wqe = [0u8; RQ_WQE_SIZE];
    let mut result = Ok(());
    for (posted, wr) in wrs.iter().enumerate() {
        let step = if wr.sges.len() > max_sge as usize {
            Err(Error::InvalidArgument(format!(
                "{} sges exceed the queue's max_sge of {max_sge}",
                wr.sges.len()
            )))
        } else {
            layout::encode_recv(wr, &mut wqe)
                .map_err(|e| Error::InvalidArgument(e.to_string()))
                .and_then(|()| rq.push(ci(), &wqe))
        };
        if let Err(error) = step {
            result = Err(PostError { posted, error });
            break;
        }
    }
    if rq.pi() != start {
        let posted = rq.pi().wrapping_sub(start) as usize;
        let kept = track.map(|t| t.post_recv(wrs[..posted].iter().map(|wr| wr.wr_id)));
        fence(Ordering::Release);
        if let Err(e) = ctx.doorbell(&doorbell(rq.pi())) {
            if let (Some(t), Some(kept)) = (track, kept) {
                t.unpost_recv(kept);
            }
            return Err(none(e));
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap() -> QpCap {
        QpCap {
            max_send_wr: 4,
            max_recv_wr: 4,
            max_send_sge: 2,
            max_recv_sge: 1,
            max_inline_data: 16,
        }
    }

    fn sge(i: u64) -> Sge {
        Sge {
            addr: 0x1000 * i,
            length: 64,
            lkey: 0x77,
        }
    }

    fn write(sges: usize) -> SendWr {
        SendWr {
            wr_id: 9,
            opcode: WrOpcode::RdmaWrite {
                remote_addr: 0xabc0,
                rkey: 0x55,
            },
            flags: SendFlags::SIGNALED,
            data: SendData::Sges((0..sges as u64).map(sge).collect()),
            ud: None,
        }
    }

    #[test]
    fn send_wrs_encode_into_ring_slots() {
        let mut ring = Producer::new(2, SQ_WQE_SIZE).unwrap();
        let mut wqe = [0u8; SQ_WQE_SIZE];
        let wrs = [write(2), write(1)];
        for wr in &wrs {
            encode_send(QpType::Rc, &cap(), wr, &mut wqe).unwrap();
            ring.push(0, &wqe).unwrap();
        }
        assert!(matches!(ring.push(0, &wqe), Err(Error::QueueFull)));
        let mut slot = [0u8; SQ_WQE_SIZE];
        for (i, wr) in wrs.iter().enumerate() {
            slot.copy_from_slice(&ring.read_slot(i));
            assert_eq!(&layout::decode_send(&slot).unwrap(), wr);
        }
    }

    #[test]
    fn send_wrs_beyond_the_caps_are_refused() {
        let mut wqe = [0u8; SQ_WQE_SIZE];
        let err = encode_send(QpType::Rc, &cap(), &write(3), &mut wqe).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert_eq!(err.errno(), 22);
        let mut big = cap();
        big.max_send_sge = 64;
        let err = encode_send(QpType::Rc, &big, &write(9), &mut wqe).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        let inline = SendWr {
            data: SendData::Inline(vec![1; 17]),
            opcode: WrOpcode::Send,
            ..write(0)
        };
        assert!(encode_send(QpType::Rc, &cap(), &inline, &mut wqe).is_err());
        let ud_without_dest = SendWr {
            opcode: WrOpcode::Send,
            ..write(1)
        };
        assert!(encode_send(QpType::Ud, &cap(), &ud_without_dest, &mut wqe).is_err());
        assert!(encode_send(QpType::Ud, &cap(), &write(1), &mut wqe).is_err());
    }

    #[test]
    fn caps_are_checked_against_the_entry_layout() {
        assert!(check_cap("max_send_sge", 8, layout::MAX_SEND_SGE).is_ok());
        assert!(check_cap("max_send_sge", 9, layout::MAX_SEND_SGE).is_err());
    }
}
