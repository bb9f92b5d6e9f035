//! Completion queues: a ring in this process's memory that the daemon fills.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use migros_proto::msg::{Request, Response};
use migros_proto::verbs::{Cqn, WorkCompletion};

use crate::channel::{ChannelShared, CompChannel};
use crate::conn::{lock, unexpected};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::ring::{destroy_or_keep, finish_resize, ring_entries, CqRing, DaemonRing};

/// A completion queue. QPs using it keep it alive.
pub struct Cq {
    pub handle: Cqn,
    pub(crate) inner: Arc<CqShared>,
}

pub(crate) struct CqShared {
    ctx: Context,
    handle: Cqn,
    ring: Mutex<CqRing>,
    /// After the connection is lost: the flush completions not yet
    /// polled (`None` until they are made, once).
    flushed: Mutex<Option<VecDeque<WorkCompletion>>>,
    /// Kept alive while the CQ reports to it.
    _channel: Option<Arc<ChannelShared>>,
}

impl Cq {
    pub(crate) fn create(ctx: &Context, entries: u32, channel: Option<&CompChannel>) -> Result<Cq> {
        let entries = ring_entries(entries)?;
        let mut ring = CqRing::new(entries)?;
        let handle = match ctx.request(&Request::CreateCq {
            entries,
            ring: ring.addr(),
            ctrl: ring.ctrl_addr(),
            channel: channel.map(|c| c.id()),
        }) {
            Ok(Response::Cq { cq }) => cq,
            Ok(other) => {
                ring.leak_on_drop();
                return Err(unexpected("CreateCq", &other));
            }
            Err(e) => {
                if !matches!(e, crate::Error::Daemon { .. }) {
                    ring.leak_on_drop();
                }
                return Err(e);
            }
        };
        Ok(Cq {
            handle,
            inner: Arc::new(CqShared {
                ctx: ctx.clone(),
                handle,
                ring: Mutex::new(ring),
                flushed: Mutex::new(None),
                _channel: channel.map(|c| c.inner.clone()),
            }),
        })
    }

    /// Moves up to `max` completions into `out`; returns how many. No system call.
    ///
    /// Once the connection is known to be lost and the ring is empty, the
    /// work requests still outstanding on the CQ's QPs come out as
    /// `WrFlushErr` completions (see the crate docs).
    pub fn poll(&self, out: &mut Vec<WorkCompletion>, max: usize) -> Result<usize> {
        let s = &self.inner;
        let start = out.len();
        let polled = lock(&s.ring).poll(out, max);
        s.ctx.account(&out[start..]);
        let n = polled?;
        if n >= max || !s.ctx.is_lost() {
            return Ok(n);
        }
        let mut flushed = lock(&s.flushed);
        let queue = flushed.get_or_insert_with(|| s.ctx.flush(s.handle));
        let more = queue.len().min(max - n);
        out.extend(queue.drain(..more));
        Ok(n + more)
    }

    /// Whether a completion is waiting in the ring (peeks, takes nothing).
    pub fn has_completion(&self) -> bool {
        lock(&self.inner.ring).has_completion()
            || lock(&self.inner.flushed)
                .as_ref()
                .is_some_and(|q| !q.is_empty())
    }

    /// Arms the CQ: the next completion raises an event on its channel.
    pub fn req_notify(&self, solicited_only: bool) -> Result<()> {
        self.inner.ctx.request_ok(&Request::ReqNotifyCq {
            cq: self.handle,
            solicited_only,
        })
    }

    /// The ring's entries (the requested size rounded up to a power of two).
    pub fn entries(&self) -> u32 {
        lock(&self.inner.ring).entries()
    }

    /// `ibv_resize_cq`: the CQ holds at least `entries` completions from
    /// now on (rounded up to a power of two); the ones not yet polled stay,
    /// in order. Fewer than those, or more than the device's `max_cqe`, is
    /// refused (EINVAL, as rxe's `rxe_cq_chk_attr`).
    pub fn resize(&self, entries: u32) -> Result<()> {
        let s = &self.inner;
        let max = s.ctx.device().max_cqe;
        if entries == 0 || entries > max {
            return Err(Error::InvalidArgument(format!(
                "a cq of {entries} entries (the device allows 1 to {max})"
            )));
        }
        let entries = ring_entries(entries)?;
        let mut ring = lock(&s.ring);
        let new = CqRing::new(entries)?;
        // The daemon copies what is between our published consumer index
        // and its producer index; the ring lock keeps this process from
        // polling meanwhile.
        let result = s.ctx.request_ok(&Request::ResizeCq {
            cq: s.handle,
            entries,
            ring: new.addr(),
            ctrl: new.ctrl_addr(),
        });
        finish_resize(&mut *ring, new, result)
    }
}

impl Drop for CqShared {
    fn drop(&mut self) {
        destroy_or_keep(
            &self.ctx,
            &Request::DestroyCq { cq: self.handle },
            &self.ring,
        );
    }
}

impl std::fmt::Debug for Cq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cq({})", self.handle)
    }
}
