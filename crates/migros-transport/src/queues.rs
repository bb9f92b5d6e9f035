//! Completion queues and shared receive queues: plain queues of the
//! transport, drained by the device's user.

use std::collections::VecDeque;

use migros_proto::verbs::{OwnerId, Pdn, RecvWr, WorkCompletion};

/// A completion queue.
#[derive(Debug, Clone)]
pub struct Cq {
    pub owner: OwnerId,
    pub capacity: u32,
    pub entries: VecDeque<WorkCompletion>,
    /// Completions lost because the queue was full.
    pub overflows: u64,
}

impl Cq {
    pub fn new(owner: OwnerId, capacity: u32) -> Cq {
        Cq {
            owner,
            capacity,
            entries: VecDeque::new(),
            overflows: 0,
        }
    }

    /// Adds a completion; returns whether the queue was empty before.
    pub fn push(&mut self, wc: WorkCompletion) -> bool {
        if self.entries.len() >= self.capacity as usize {
            self.overflows += 1;
            return false;
        }
        let was_empty = self.entries.is_empty();
        self.entries.push_back(wc);
        was_empty
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
