//! Work requests the device executes itself (rxe's `rxe_do_local_ops`):
//! BIND_MW binds a memory window, LOCAL_INV frees a type 2 window. They
//! run when the send cursor reaches them, in order with the requests
//! around them; a fenced one waits until everything before it completed.
//! A failure completes the WR with `MwBindErr` (bind) or `LocQpOpErr`
//! (invalidate), as rxe, and the QP fails.

use crate::mw;
use crate::qp::{Env, Qp};
use migros_proto::verbs::*;

impl Qp {
    /// Executes the local operations at the send cursor, up to the first
    /// WR that sends packets (or a fenced one that must wait). Executed
    /// ones complete as soon as they are the oldest WR.
    pub(crate) fn run_local_ops(&mut self, env: &mut Env) {
        if self.state() != QpState::Rts || self.req.next_off > 0 {
            return;
        }
        loop {
            let idx = self.req.next_idx;
            let Some(wqe) = self.req.sq.get(idx) else {
                break;
            };
            if !wqe.is_local() || wqe.local_error.is_some() {
                break;
            }
            if !wqe.sent {
                if wqe.wr.flags.contains(SendFlags::FENCE) && idx > 0 {
                    break; // earlier WRs have not all completed
                }
                let result = match wqe.wr.opcode {
                    WrOpcode::BindMw(bind) => self.bind_window(&bind, env),
                    WrOpcode::LocalInv { rkey } => {
                        self.invalidate(rkey, env).map_err(|_| WcStatus::LocQpOpErr)
                    }
                    // is_local() holds for these two only.
                    _ => Err(WcStatus::LocQpOpErr),
                };
                if let Err(status) = result {
                    self.fail_wqe(idx, status, env);
                    return;
                }
                let psn = self.req.next_psn;
                let wqe = &mut self.req.sq[idx];
                wqe.sent = true;
                wqe.first_psn = psn;
            }
            self.req.next_idx += 1;
        }
        self.complete_local_error_at_head(env);
    }

    /// BIND_MW (rxe's `rxe_bind_mw`): the window named by its current rkey
    /// is bound to the region named by its lkey, if every check passes.
    fn bind_window(&mut self, bind: &MwBind, env: &mut Env) -> Result<(), WcStatus> {
        let (qpn, pd) = (self.qpn(), self.init.pd);
        let mrs = &mut env.objs.mrs;
        let mr = match bind.length {
            0 => None,
            _ => Some(*mrs.by_lkey(bind.mr_lkey).ok_or(WcStatus::MwBindErr)?),
        };
        let window = mrs.window_mut(bind.mw_rkey).ok_or(WcStatus::MwBindErr)?;
        mw::check_bind(window, pd, bind, mr.as_ref()).map_err(|_| WcStatus::MwBindErr)?;
        mw::do_bind(window, qpn, bind);
        Ok(())
    }
}
