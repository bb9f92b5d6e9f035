//! Unit tests of the responder: each refusal and what the requester sees (RC NAKs, UC drops).

use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::device::{DeviceConfig, NoMemory};
use crate::qp::Objects;

fn qp(qp_type: QpType) -> Qp {
    let mut qp = Qp::new(QpInit {
        owner: 1,
        qpn: 0x11,
        qp_type,
        pd: 2,
        send_cq: 3,
        recv_cq: 3,
        srq: None,
        cap: QpCap::default(),
        sq_sig_all: false,
    });
    qp.attr.qp_state = QpState::Rts;
    qp.attr.min_rnr_timer = 12;
    qp.resp.epsn = Psn::new(100);
    qp.resp.msn = 7;
    qp
}

/// What `refuse` leaves behind: the QP (its state), the answers
/// queued, the events raised.
fn refused(qp_type: QpType, refusal: Refusal) -> (Qp, Vec<(Psn, AckSyndrome)>, Vec<DeviceEvent>) {
    let mut qp = qp(qp_type);
    let mut objs = Objects::default();
    let config = DeviceConfig::new(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut env = Env {
        mem: &mut NoMemory,
        objs: &mut objs,
        config: &config,
    };
    qp.refuse(refusal, Psn::new(105), &mut env);
    // The device counts what its QPs count, for after they are gone.
    let dev = objs.counters;
    assert_eq!(
        (dev.naks_sent, dev.rnr_naks_sent, dev.rx_dropped),
        (
            qp.counters.naks_sent,
            qp.counters.rnr_naks_sent,
            qp.counters.rx_dropped
        ),
        "{refusal:?}"
    );
    let answers = qp
        .resp
        .out
        .iter()
        .map(|r| match r {
            Response::Ack { psn, syndrome, msn } => {
                assert_eq!(*msn, 7);
                (*psn, AckSyndrome::decode(*syndrome))
            }
            other => panic!("a refusal answers with an ACK-class packet, not {other:?}"),
        })
        .collect();
    let events = objs.events.drain(..).collect();
    (qp, answers, events)
}

#[test]
fn each_rc_refusal_has_its_nak() {
    use NakCode::*;
    let nak = AckSyndrome::Nak;
    let invalid = Some((105, nak(InvalidRequest)));
    // (refusal, the answer queued: PSN and syndrome, whether the QP fails)
    let cases = [
        (
            Refusal::PsnOutOfSeq,
            Some((100, nak(PsnSequenceError))),
            false,
        ),
        (
            Refusal::Rnr,
            Some((105, AckSyndrome::RnrNak { timer: 12 })),
            false,
        ),
        (Refusal::Drop, None, false),
        (Refusal::MissingOpcodeFirst, invalid, true),
        (Refusal::MissingOpcodeLast, invalid, true),
        (Refusal::UnsupportedOpcode, invalid, true),
        (Refusal::Length, invalid, true),
        (Refusal::MisalignedAtomic, invalid, true),
        (Refusal::TooManyRdAtomic, invalid, true),
        (Refusal::InvalidateRkey, invalid, true),
        (
            Refusal::RkeyViolation,
            Some((105, nak(RemoteAccessError))),
            true,
        ),
        (
            Refusal::MalformedWqe,
            Some((105, nak(RemoteOperationalError))),
            true,
        ),
    ];
    for (refusal, answer, fails) in cases {
        let (qp, answers, events) = refused(QpType::Rc, refusal);
        let expected: Vec<_> = answer.map(|(p, s)| (Psn::new(p), s)).into_iter().collect();
        assert_eq!(answers, expected, "{refusal:?}");
        let state = if fails { QpState::Err } else { QpState::Rts };
        assert_eq!(qp.state(), state, "{refusal:?}");
        // The asynchronous event of the failure (IBA 11.6.3).
        let event = match refusal {
            _ if !fails => None,
            Refusal::RkeyViolation => Some(DeviceEvent::QpAccessError { qpn: 0x11 }),
            Refusal::MalformedWqe => Some(DeviceEvent::QpError { qpn: 0x11 }),
            _ => Some(DeviceEvent::QpRequestError { qpn: 0x11 }),
        };
        assert_eq!(events, event.into_iter().collect::<Vec<_>>(), "{refusal:?}");
        let (naks, rnr_naks) = (qp.counters.naks_sent, qp.counters.rnr_naks_sent);
        let counted = match refusal {
            Refusal::Drop => (0, 0),
            Refusal::Rnr => (0, 1),
            _ => (1, 0),
        };
        assert_eq!((naks, rnr_naks), counted, "{refusal:?}");
    }
}

#[test]
fn stopped_rc_answers_with_the_pause_nak_and_uc_drops() {
    let (qp, answers, _) = refused(QpType::Rc, Refusal::Stopped);
    assert!(answers.is_empty() && qp.resp.pause_nak);
    let (qp, answers, _) = refused(QpType::Uc, Refusal::Stopped);
    assert!(answers.is_empty() && !qp.resp.pause_nak);
    assert_eq!(qp.counters.rx_dropped, 1);
    assert_eq!(qp.resp.epsn, Psn::new(100), "nothing else changes");
}

#[test]
fn uc_drops_the_message_for_any_refusal() {
    for refusal in [
        Refusal::Drop,
        Refusal::Rnr,
        Refusal::Length,
        Refusal::RkeyViolation,
    ] {
        let (qp, answers, events) = refused(QpType::Uc, refusal);
        assert!(events.is_empty(), "{refusal:?}: uc fails nothing");
        assert!(answers.is_empty(), "{refusal:?}");
        assert_eq!(qp.state(), QpState::Rts, "{refusal:?}");
        assert!(
            qp.resp.uc_skip,
            "{refusal:?}: skips to the next FIRST or ONLY"
        );
        assert_eq!(qp.resp.epsn, Psn::new(106), "{refusal:?}");
    }
}
