//! Completion queues and shared receive queues: plain queues of the
//! transport, drained by the device's user.

use std::collections::VecDeque;

use migros_proto::verbs::{OwnerId, Pdn, RecvWr, WcStatus, WorkCompletion};

/// How a CQ is armed (`ibv_req_notify_cq`, rxe's `cq->notify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arm {
    #[default]
    Disarmed,
    /// The next completion notifies.
    NextCompletion,
    /// The next solicited completion notifies: a receive whose message
    /// asked for it (the SE bit), or any completion in error.
    Solicited,
}

/// What [`Cq::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// The queue was empty before.
    pub was_empty: bool,
    /// The arming was satisfied: notify (the CQ is disarmed now).
    pub notify: bool,
    /// The completion was lost, the first time the queue overflowed.
    pub first_overflow: bool,
}

/// A completion queue.
#[derive(Debug, Clone)]
pub struct Cq {
    pub owner: OwnerId,
    pub capacity: u32,
    pub entries: VecDeque<WorkCompletion>,
    /// Completions lost because the queue was full.
    pub overflows: u64,
    pub arm: Arm,
}

impl Cq {
    pub fn new(owner: OwnerId, capacity: u32) -> Cq {
        Cq {
            owner,
            capacity,
            entries: VecDeque::new(),
            overflows: 0,
            arm: Arm::Disarmed,
        }
    }

    /// Adds a completion; `solicited` says whether its message asked for
    /// an event (IBA 11.4.2.2: a completion in error always does).
    pub fn push(&mut self, wc: WorkCompletion, solicited: bool) -> Pushed {
        if self.entries.len() >= self.capacity as usize {
            self.overflows += 1;
            return Pushed {
                was_empty: false,
                notify: false,
                first_overflow: self.overflows == 1,
            };
        }
        let solicited = solicited || wc.status != WcStatus::Success;
        let notify = match self.arm {
            Arm::Disarmed => false,
            Arm::NextCompletion => true,
            Arm::Solicited => solicited,
        };
        if notify {
            self.arm = Arm::Disarmed;
        }
        let was_empty = self.entries.is_empty();
        self.entries.push_back(wc);
        Pushed {
            was_empty,
            notify,
            first_overflow: false,
        }
    }

    /// `ibv_req_notify_cq`: arms for the next completion, or the next
    /// solicited one. Arming for any completion wins over solicited only.
    pub fn arm(&mut self, solicited_only: bool) {
        self.arm = match (self.arm, solicited_only) {
            (Arm::NextCompletion, _) | (_, false) => Arm::NextCompletion,
            _ => Arm::Solicited,
        };
    }
}

/// A shared receive queue.
#[derive(Debug, Clone)]
pub struct Srq {
    pub owner: OwnerId,
    pub pd: Pdn,
    pub max_wr: u32,
    /// When the queue falls below this many entries the limit event fires
    /// once and the limit disarms (0: disarmed).
    pub limit: u32,
    pub queue: VecDeque<RecvWr>,
}
