//! The verbs rules for `modify_qp`: which state transitions exist and which
//! attributes each one requires or allows, per transport service (IBA
//! 11.2.5, the table the kernel keeps in `ib_modify_qp_is_ok`).

use migros_proto::verbs::{AttrMask, QpState, QpType};

/// Attributes a transition requires and those it also accepts.
struct Rule {
    required: u32,
    optional: u32,
}

const STATE: u32 = AttrMask::STATE.0;
const ACCESS: u32 = AttrMask::ACCESS_FLAGS.0;
const PKEY: u32 = AttrMask::PKEY_INDEX.0;
const PORT: u32 = AttrMask::PORT.0;
const QKEY: u32 = AttrMask::QKEY.0;
const AV: u32 = AttrMask::AV.0;
const MTU: u32 = AttrMask::PATH_MTU.0;
const TIMEOUT: u32 = AttrMask::TIMEOUT.0;
const RETRY: u32 = AttrMask::RETRY_CNT.0;
const RNR_RETRY: u32 = AttrMask::RNR_RETRY.0;
const RQ_PSN: u32 = AttrMask::RQ_PSN.0;
const RD_ATOMIC: u32 = AttrMask::MAX_QP_RD_ATOMIC.0;
const ALT: u32 = AttrMask::ALT_PATH.0;
const MIN_RNR: u32 = AttrMask::MIN_RNR_TIMER.0;
const SQ_PSN: u32 = AttrMask::SQ_PSN.0;
const DEST_RD_ATOMIC: u32 = AttrMask::MAX_DEST_RD_ATOMIC.0;
const MIG: u32 = AttrMask::PATH_MIG_STATE.0;
const CAP: u32 = AttrMask::CAP.0;
const DEST_QPN: u32 = AttrMask::DEST_QPN.0;
const CUR: u32 = AttrMask::CUR_STATE.0;
const SQD_NOTIFY: u32 = AttrMask::EN_SQD_ASYNC_NOTIFY.0;

/// Checks a `modify_qp` call: `Ok(())` if moving from `from` to `to` with
/// `mask` is allowed for this service type, else why not.
pub fn check(qp_type: QpType, from: QpState, to: QpState, mask: AttrMask) -> Result<(), String> {
    let mask = mask.0;
    let rule = rule(qp_type, from, to)
        .ok_or_else(|| format!("no transition from {from:?} to {to:?} for {qp_type:?} qps"))?;
    let missing = rule.required & !mask;
    if missing != 0 {
        return Err(format!(
            "{from:?} to {to:?} requires attribute mask bits {missing:#x}"
        ));
    }
    let extra = mask & !(rule.required | rule.optional | STATE | CUR);
    if extra != 0 {
        return Err(format!(
            "{from:?} to {to:?} does not accept attribute mask bits {extra:#x}"
        ));
    }
    Ok(())
}

fn rule(qp_type: QpType, from: QpState, to: QpState) -> Option<Rule> {
    use QpState::*;
    use QpType::*;
    let r = |required: u32, optional: u32| Some(Rule { required, optional });
    match (from, to) {
        // Any state may go to RESET or ERR with nothing else.
        (_, Reset) => r(STATE, 0),
        (_, Err) => r(STATE, 0),
        (Reset, Init) => match qp_type {
            Ud => r(STATE | PKEY | PORT | QKEY, 0),
            Rc | Uc => r(STATE | PKEY | PORT | ACCESS, 0),
        },
        (Init, Init) => match qp_type {
            Ud => r(STATE, PKEY | PORT | QKEY),
            Rc | Uc => r(STATE, PKEY | PORT | ACCESS),
        },
        (Init, Rtr) => match qp_type {
            Ud => r(STATE, PKEY | QKEY),
            Uc => r(STATE | AV | MTU | DEST_QPN | RQ_PSN, ALT | ACCESS | PKEY),
            Rc => r(
                STATE | AV | MTU | DEST_QPN | RQ_PSN | DEST_RD_ATOMIC | MIN_RNR,
                ALT | ACCESS | PKEY,
            ),
        },
        (Rtr, Rts) => match qp_type {
            Ud => r(STATE | SQ_PSN, QKEY),
            Uc => r(STATE | SQ_PSN, CUR | ACCESS | ALT | MIG),
            Rc => r(
                STATE | SQ_PSN | TIMEOUT | RETRY | RNR_RETRY | RD_ATOMIC,
                CUR | ACCESS | MIN_RNR | ALT | MIG,
            ),
        },
        (Rts, Rts) => match qp_type {
            Ud => r(STATE, CUR | QKEY),
            Uc => r(STATE, CUR | ACCESS | ALT | MIG),
            Rc => r(STATE, CUR | ACCESS | ALT | MIG | MIN_RNR),
        },
        (Rts, Sqd) => r(STATE, SQD_NOTIFY),
        (Sqd, Rts) => match qp_type {
            Ud => r(STATE, CUR | QKEY),
            Uc => r(STATE, CUR | ACCESS | ALT | MIG),
            Rc => r(STATE, CUR | ACCESS | ALT | MIG | MIN_RNR),
        },
        (Sqd, Sqd) => match qp_type {
            Ud => r(STATE, PKEY | QKEY),
            Uc => r(STATE, AV | ALT | ACCESS | PKEY | MIG),
            Rc => r(
                STATE,
                AV | TIMEOUT
                    | RETRY
                    | RNR_RETRY
                    | RD_ATOMIC
                    | ALT
                    | ACCESS
                    | PKEY
                    | MIN_RNR
                    | DEST_RD_ATOMIC
                    | MIG,
            ),
        },
        (Sqe, Rts) => match qp_type {
            Ud | Uc => r(STATE, CUR | QKEY | ACCESS),
            Rc => None,
        },
        _ => None,
    }
    .map(|rule: Rule| {
        // CAP is accepted wherever the queues may be resized (RESET->INIT).
        if from == QpState::Reset && to == QpState::Init {
            Rule {
                required: rule.required,
                optional: rule.optional | CAP,
            }
        } else {
            rule
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(bits: &[AttrMask]) -> AttrMask {
        bits.iter().fold(AttrMask::empty(), |a, b| a | *b)
    }

    #[test]
    fn rc_path_to_rts_with_perftest_masks() {
        // The masks perftest uses: INIT 0x39, RTR 0x129181, RTS 0x12e01.
        assert!(check(QpType::Rc, QpState::Reset, QpState::Init, AttrMask(0x39)).is_ok());
        assert!(check(QpType::Rc, QpState::Init, QpState::Rtr, AttrMask(0x129181)).is_ok());
        assert!(check(QpType::Rc, QpState::Rtr, QpState::Rts, AttrMask(0x12e01)).is_ok());
    }

    #[test]
    fn missing_required_attribute_is_refused() {
        let mask = m(&[
            AttrMask::STATE,
            AttrMask::AV,
            AttrMask::PATH_MTU,
            AttrMask::DEST_QPN,
        ]);
        let err = check(QpType::Rc, QpState::Init, QpState::Rtr, mask).unwrap_err();
        assert!(err.contains("requires"), "{err}");
    }

    #[test]
    fn unknown_transition_is_refused() {
        assert!(check(QpType::Rc, QpState::Reset, QpState::Rts, AttrMask::STATE).is_err());
        assert!(check(QpType::Rc, QpState::Init, QpState::Rts, AttrMask::STATE).is_err());
    }

    #[test]
    fn error_and_reset_are_reachable_from_anywhere() {
        for from in [
            QpState::Reset,
            QpState::Init,
            QpState::Rtr,
            QpState::Rts,
            QpState::Sqd,
            QpState::Sqe,
            QpState::Err,
        ] {
            assert!(check(QpType::Ud, from, QpState::Err, AttrMask::STATE).is_ok());
            assert!(check(QpType::Rc, from, QpState::Reset, AttrMask::STATE).is_ok());
        }
    }

    #[test]
    fn ud_needs_qkey_not_access() {
        let mask = m(&[
            AttrMask::STATE,
            AttrMask::PKEY_INDEX,
            AttrMask::PORT,
            AttrMask::QKEY,
        ]);
        assert!(check(QpType::Ud, QpState::Reset, QpState::Init, mask).is_ok());
        assert!(check(QpType::Rc, QpState::Reset, QpState::Init, mask).is_err());
    }
}
