//! Explicit conversions between the live objects of a snapshot and image
//! format [`v3`]. Every live field is named here, one way or the other: a
//! field added to an engine without its place in the image fails to build
//! (struct literals), not to migrate.

use migros_proto::verbs::{Access, MrSpec, OwnerId};
use migros_wire::Psn;

use super::v3::{self, *};
use crate::error::VerbsError;
use crate::mw::{MemoryWindow, MwState};
use crate::qp::{Qp, Timers};
use crate::queues::{Arm, Cq, Srq};
use crate::requester::{Requester, SendWqe};
use crate::responder::{Inbound, RdResource, Responder, Response};
use crate::snapshot::OwnerSnapshot;
use crate::time::Instant;
use crate::window::Window;

impl OwnerSnapshot {
    /// The image of this snapshot (format [`v3`]).
    pub fn to_image(&self) -> OwnerImage {
        OwnerImage {
            version: v3::VERSION,
            owner: self.owner,
            pds: self.pds.clone(),
            mrs: self.mrs.iter().map(mr_image).collect(),
            mws: self.mws.iter().map(mw_image).collect(),
            cqs: self.cqs.iter().map(|(n, c)| cq_image(*n, c)).collect(),
            srqs: self.srqs.iter().map(|(n, s)| srq_image(*n, s)).collect(),
            qps: self.qps.iter().map(qp_image).collect(),
        }
    }

    /// The snapshot of `image`, validated (every reference resolves, every
    /// cursor lies in its queue); an image of another version is refused.
    pub fn from_image(image: OwnerImage) -> Result<OwnerSnapshot, VerbsError> {
        super::check_version(image.version)?;
        let owner = image.owner;
        let qps = image
            .qps
            .into_iter()
            .map(qp_from_image)
            .collect::<Result<_, _>>()?;
        let snap = OwnerSnapshot {
            owner,
            pds: image.pds,
            mrs: image.mrs.iter().map(|m| mr_from_image(owner, m)).collect(),
            mws: image.mws.iter().map(|w| mw_from_image(owner, w)).collect(),
            cqs: image
                .cqs
                .into_iter()
                .map(|c| (c.cq, cq_from_image(owner, c)))
                .collect(),
            srqs: image
                .srqs
                .into_iter()
                .map(|s| (s.srq, srq_from_image(owner, s)))
                .collect(),
            qps,
        };
        snap.validate()?;
        Ok(snap)
    }
}

// ---- memory regions, CQs, SRQs ----

fn mr_image(m: &MrSpec) -> MrImage {
    MrImage {
        pd: m.pd,
        addr: m.addr,
        length: m.length,
        iova: m.iova,
        lkey: m.lkey,
        rkey: m.rkey,
        access: m.access.0,
    }
}

fn mr_from_image(owner: OwnerId, m: &MrImage) -> MrSpec {
    MrSpec {
        owner,
        pd: m.pd,
        addr: m.addr,
        length: m.length,
        iova: m.iova,
        lkey: m.lkey,
        rkey: m.rkey,
        access: Access(m.access),
    }
}

fn mw_image(w: &MemoryWindow) -> MwImage {
    MwImage {
        pd: w.pd,
        mw_type: w.mw_type,
        rkey: w.rkey,
        free: w.state == MwState::Free,
        access: w.access.0,
        addr: w.addr,
        length: w.length,
        mr_lkey: w.mr_lkey,
        qpn: w.qpn,
    }
}

/// Whether the window is consistent (a free window is a type 2 bound to
/// nothing) is `OwnerSnapshot::validate`'s to check.
fn mw_from_image(owner: OwnerId, w: &MwImage) -> MemoryWindow {
    MemoryWindow {
        owner,
        pd: w.pd,
        mw_type: w.mw_type,
        rkey: w.rkey,
        state: if w.free {
            MwState::Free
        } else {
            MwState::Valid
        },
        access: Access(w.access),
        addr: w.addr,
        length: w.length,
        mr_lkey: w.mr_lkey,
        qpn: w.qpn,
    }
}

fn arm_image(a: Arm) -> ArmImage {
    match a {
        Arm::Disarmed => ArmImage::Disarmed,
        Arm::NextCompletion => ArmImage::NextCompletion,
        Arm::Solicited => ArmImage::Solicited,
    }
}

fn arm_from_image(a: ArmImage) -> Arm {
    match a {
        ArmImage::Disarmed => Arm::Disarmed,
        ArmImage::NextCompletion => Arm::NextCompletion,
        ArmImage::Solicited => Arm::Solicited,
    }
}

fn cq_image(cq: u32, c: &Cq) -> CqImage {
    CqImage {
        cq,
        capacity: c.capacity,
        completions: c.entries.iter().cloned().collect(),
        overflows: c.overflows,
        arm: arm_image(c.arm),
    }
}

fn cq_from_image(owner: OwnerId, c: CqImage) -> Cq {
    Cq {
        owner,
        capacity: c.capacity,
        entries: c.completions.into(),
        overflows: c.overflows,
        arm: arm_from_image(c.arm),
    }
}

fn srq_image(srq: u32, s: &Srq) -> SrqImage {
    SrqImage {
        srq,
        pd: s.pd,
        max_wr: s.max_wr,
        limit: s.limit,
        queue: s.queue.iter().cloned().collect(),
    }
}

fn srq_from_image(owner: OwnerId, s: SrqImage) -> Srq {
    Srq {
        owner,
        pd: s.pd,
        max_wr: s.max_wr,
        limit: s.limit,
        queue: s.queue.into(),
    }
}

// ---- QPs ----

fn qp_image(qp: &Qp) -> QpImage {
    QpImage {
        init: qp.init.clone(),
        attr: qp.attr.clone(),
        recv_queue: qp.rq.iter().cloned().collect(),
        requester: requester_image(&qp.req),
        responder: responder_image(&qp.resp),
        timers: timers_image(&qp.timers),
        counters: qp.counters,
        ud_peers: qp.ud_peers.iter().copied().collect(),
        announce: qp.announce.iter().copied().collect(),
        comm_established: qp.comm_established,
        resume_key: qp.resume_key,
    }
}

fn qp_from_image(q: QpImage) -> Result<Qp, VerbsError> {
    Ok(Qp {
        init: q.init,
        attr: q.attr,
        rq: q.recv_queue.into(),
        req: requester_from_image(q.requester)?,
        resp: responder_from_image(q.responder),
        timers: timers_from_image(q.timers),
        counters: q.counters,
        ud_peers: q.ud_peers.into_iter().collect(),
        announce: q.announce.into(),
        comm_established: q.comm_established,
        // A QP that moves while paused does not count that pause.
        paused_at: None,
        resume_key: q.resume_key,
        // Learned again from the partner's old location after the move.
        keys: Default::default(),
    })
}

/// Timers in a snapshot are time remaining (see `snapshot::to_remaining`).
fn timers_image(t: &Timers) -> TimersImage {
    let ns = |t: Option<Instant>| t.map(Instant::as_nanos);
    TimersImage {
        retransmit_ns: ns(t.retransmit),
        rnr_ns: ns(t.rnr),
        pause_ns: ns(t.pause),
        resume_ns: ns(t.resume),
    }
}

fn timers_from_image(t: TimersImage) -> Timers {
    Timers {
        retransmit: t.retransmit_ns.map(Instant::from_nanos),
        rnr: t.rnr_ns.map(Instant::from_nanos),
        pause: t.pause_ns.map(Instant::from_nanos),
        resume: t.resume_ns.map(Instant::from_nanos),
    }
}

// ---- the requester ----

fn requester_image(r: &Requester) -> RequesterImage {
    RequesterImage {
        send_queue: r.sq.iter().map(send_wqe_image).collect(),
        next_index: r.next_idx as u64,
        next_offset: r.next_off,
        next_psn: r.next_psn.value(),
        una: r.una.value(),
        high_psn: r.high_psn.value(),
        rd_atomic_outstanding: r.rd_atomic_outstanding,
        retry_left: r.retry_left,
        rnr_left: r.rnr_left,
        rewound_at: r.rewound_at.map(Psn::value),
        retry_fence: r.retry_fence.map(Psn::value),
        since_ack_req: r.since_ack_req,
        window: r.window.to_image(),
    }
}

fn requester_from_image(r: RequesterImage) -> Result<Requester, VerbsError> {
    let next_idx = usize::try_from(r.next_index)
        .map_err(|_| VerbsError::BadSnapshot("send cursor out of range".into()))?;
    Ok(Requester {
        sq: r.send_queue.into_iter().map(send_wqe_from_image).collect(),
        next_idx,
        next_off: r.next_offset,
        next_psn: Psn::new(r.next_psn),
        una: Psn::new(r.una),
        high_psn: Psn::new(r.high_psn),
        rd_atomic_outstanding: r.rd_atomic_outstanding,
        retry_left: r.retry_left,
        rnr_left: r.rnr_left,
        rewound_at: r.rewound_at.map(Psn::new),
        retry_fence: r.retry_fence.map(Psn::new),
        since_ack_req: r.since_ack_req,
        window: Window::from_image(r.window),
        // Transient (see the field): a restored QP goes back from its
        // oldest unacknowledged PSN until its partner tells it more.
        told: None,
    })
}

fn send_wqe_image(w: &SendWqe) -> SendWqeImage {
    SendWqeImage {
        wr: w.wr.clone(),
        len: w.len,
        first_psn: w.first_psn.value(),
        npkts: w.npkts,
        sent: w.sent,
        read_done: w.read_done,
        local_error: w.local_error,
    }
}

fn send_wqe_from_image(w: SendWqeImage) -> SendWqe {
    SendWqe {
        wr: w.wr,
        len: w.len,
        first_psn: Psn::new(w.first_psn),
        npkts: w.npkts,
        sent: w.sent,
        read_done: w.read_done,
        local_error: w.local_error,
    }
}

// ---- the responder ----

fn responder_image(r: &Responder) -> ResponderImage {
    ResponderImage {
        epsn: r.epsn.value(),
        msn: r.msn,
        nak_sent: r.nak_sent,
        uc_skip: r.uc_skip,
        current: r.current.as_ref().map(|m| match m {
            Inbound::Send { recv, offset } => InboundImage::Send {
                recv: recv.clone(),
                offset: *offset,
            },
            Inbound::Write {
                va,
                rkey,
                len,
                offset,
            } => InboundImage::Write {
                va: *va,
                rkey: *rkey,
                len: *len,
                offset: *offset,
            },
        }),
        resources: r
            .resources
            .iter()
            .map(|res| match *res {
                RdResource::Read {
                    first_psn,
                    last_psn,
                } => RdResourceImage::Read {
                    first_psn: first_psn.value(),
                    last_psn: last_psn.value(),
                },
                RdResource::Atomic { psn, orig } => RdResourceImage::Atomic {
                    psn: psn.value(),
                    orig,
                },
                RdResource::AtomicWrite { psn } => {
                    RdResourceImage::AtomicWrite { psn: psn.value() }
                }
            })
            .collect(),
        responses: r.out.iter().map(response_image).collect(),
        pause_nak: r.pause_nak,
    }
}

fn responder_from_image(r: ResponderImage) -> Responder {
    Responder {
        epsn: Psn::new(r.epsn),
        msn: r.msn,
        nak_sent: r.nak_sent,
        uc_skip: r.uc_skip,
        current: r.current.map(|m| match m {
            InboundImage::Send { recv, offset } => Inbound::Send { recv, offset },
            InboundImage::Write {
                va,
                rkey,
                len,
                offset,
            } => Inbound::Write {
                va,
                rkey,
                len,
                offset,
            },
        }),
        resources: r
            .resources
            .into_iter()
            .map(|res| match res {
                RdResourceImage::Read {
                    first_psn,
                    last_psn,
                } => RdResource::Read {
                    first_psn: Psn::new(first_psn),
                    last_psn: Psn::new(last_psn),
                },
                RdResourceImage::Atomic { psn, orig } => RdResource::Atomic {
                    psn: Psn::new(psn),
                    orig,
                },
                RdResourceImage::AtomicWrite { psn } => {
                    RdResource::AtomicWrite { psn: Psn::new(psn) }
                }
            })
            .collect(),
        out: r.responses.into_iter().map(response_from_image).collect(),
        pause_nak: r.pause_nak,
    }
}

fn response_image(r: &Response) -> ResponseImage {
    match *r {
        Response::Ack { psn, syndrome, msn } => ResponseImage::Ack {
            psn: psn.value(),
            syndrome,
            msn,
        },
        Response::Read {
            next_psn,
            va,
            rkey,
            remaining,
            first,
            msn,
        } => ResponseImage::Read {
            next_psn: next_psn.value(),
            va,
            rkey,
            remaining,
            first,
            msn,
        },
        Response::AtomicAck { psn, orig, msn } => ResponseImage::AtomicAck {
            psn: psn.value(),
            orig,
            msn,
        },
        Response::AtomicWriteAck { psn, msn } => ResponseImage::AtomicWriteAck {
            psn: psn.value(),
            msn,
        },
    }
}

fn response_from_image(r: ResponseImage) -> Response {
    match r {
        ResponseImage::Ack { psn, syndrome, msn } => Response::Ack {
            psn: Psn::new(psn),
            syndrome,
            msn,
        },
        ResponseImage::Read {
            next_psn,
            va,
            rkey,
            remaining,
            first,
            msn,
        } => Response::Read {
            next_psn: Psn::new(next_psn),
            va,
            rkey,
            remaining,
            first,
            msn,
        },
        ResponseImage::AtomicAck { psn, orig, msn } => Response::AtomicAck {
            psn: Psn::new(psn),
            orig,
            msn,
        },
        ResponseImage::AtomicWriteAck { psn, msn } => Response::AtomicWriteAck {
            psn: Psn::new(psn),
            msn,
        },
    }
}
