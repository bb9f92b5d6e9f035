//! QPs, CQs and SRQs made for an id (`rdma_create_qp`, `rdma_create_ep`,
//! `rdma_create_srq`), through the ordinary libibverbs calls, and the QP
//! attributes a connection's state calls for (`rdma_init_qp_attr`): INIT,
//! then RTR and RTS with what the REQ or REP said.

use migros_proto::cm::{CmQpType, ConnInfo};

use crate::id::{IdBlock, IdPriv};
use crate::sys::*;
use crate::util::lock;

/// `RDMA_UDP_QKEY`.
pub const UDP_QKEY: u32 = 0x0123_4567;

/// `verbs_get_ctx`: the extended context of a libibverbs context, as the
/// inline functions of `verbs.h` reach it.
///
/// # Safety
/// `ctx` is a live context.
unsafe fn vctx(ctx: *mut ibv_context) -> Option<*mut verbs_context> {
    // SAFETY: a live context (caller).
    if unsafe { (*ctx).abi_compat } as usize != usize::MAX {
        return None;
    }
    let off = core::mem::offset_of!(verbs_context, context);
    // SAFETY: an extended context embeds the ibv_context at `off`.
    Some(unsafe { ctx.cast::<u8>().sub(off) }.cast::<verbs_context>())
}

/// `ibv_create_qp_ex` (an inline function of `verbs.h`).
///
/// # Safety
/// `ctx` is live, `attr` valid.
pub(crate) unsafe fn create_qp_ex(
    ctx: *mut ibv_context,
    attr: *mut ibv_qp_init_attr_ex,
) -> *mut ibv_qp {
    // SAFETY: caller's contract.
    unsafe {
        let mask = (*attr).comp_mask;
        if mask & !ibv_qp_init_attr_mask_IBV_QP_INIT_ATTR_PD == 0 {
            // The plain call, as verbs.h does for a PD-only mask.
            return ibv_create_qp((*attr).pd, attr.cast());
        }
        match vctx(ctx).and_then(|v| (*v).create_qp_ex) {
            Some(f) => f(ctx, attr),
            None => {
                crate::util::set_errno(libc::EOPNOTSUPP);
                core::ptr::null_mut()
            }
        }
    }
}

/// `ibv_create_srq_ex` (an inline function of `verbs.h`).
///
/// # Safety
/// `ctx` is live, `attr` valid.
pub(crate) unsafe fn create_srq_ex(
    ctx: *mut ibv_context,
    attr: *mut ibv_srq_init_attr_ex,
) -> *mut ibv_srq {
    // SAFETY: caller's contract.
    unsafe {
        let mask = (*attr).comp_mask;
        let basic = ibv_srq_init_attr_mask_IBV_SRQ_INIT_ATTR_PD
            | ibv_srq_init_attr_mask_IBV_SRQ_INIT_ATTR_TYPE;
        if mask & !basic == 0
            && (mask & ibv_srq_init_attr_mask_IBV_SRQ_INIT_ATTR_TYPE == 0
                || (*attr).srq_type == ibv_srq_type_IBV_SRQT_BASIC)
        {
            return ibv_create_srq((*attr).pd, attr.cast());
        }
        match vctx(ctx).and_then(|v| (*v).create_srq_ex) {
            Some(f) => f(ctx, attr),
            None => {
                crate::util::set_errno(libc::EOPNOTSUPP);
                core::ptr::null_mut()
            }
        }
    }
}

/// `ucma_destroy_cqs`.
///
/// # Safety
/// `id` is a live id.
pub(crate) unsafe fn destroy_cqs(id: &mut rdma_cm_id) {
    // SAFETY: the CQs and channels were made by create_cqs.
    unsafe {
        if !id.recv_cq.is_null() {
            ibv_destroy_cq(id.recv_cq);
            if !id.send_cq.is_null() && id.send_cq != id.recv_cq {
                ibv_destroy_cq(id.send_cq);
            }
        }
        id.send_cq = core::ptr::null_mut();
        id.recv_cq = core::ptr::null_mut();
        if !id.recv_cq_channel.is_null() {
            ibv_destroy_comp_channel(id.recv_cq_channel);
            if !id.send_cq_channel.is_null() && id.send_cq_channel != id.recv_cq_channel {
                ibv_destroy_comp_channel(id.send_cq_channel);
            }
        }
        id.send_cq_channel = core::ptr::null_mut();
        id.recv_cq_channel = core::ptr::null_mut();
    }
}

/// `ucma_create_cqs`: a CQ with its own completion channel for each side
/// that needs one (size 0: none).
///
/// # Safety
/// `id` is a live id with `verbs` set.
pub(crate) unsafe fn create_cqs(id: &mut rdma_cm_id, send: u32, recv: u32) -> Result<(), i32> {
    let err = || crate::util::errno().max(1);
    // SAFETY: a live context (caller); results checked.
    unsafe {
        let me = (id as *mut rdma_cm_id).cast::<libc::c_void>();
        if recv > 0 {
            id.recv_cq_channel = ibv_create_comp_channel(id.verbs);
            if id.recv_cq_channel.is_null() {
                let e = err();
                destroy_cqs(id);
                return Err(e);
            }
            id.recv_cq = ibv_create_cq(id.verbs, recv as i32, me, id.recv_cq_channel, 0);
            if id.recv_cq.is_null() {
                let e = err();
                destroy_cqs(id);
                return Err(e);
            }
        }
        if send > 0 {
            id.send_cq_channel = ibv_create_comp_channel(id.verbs);
            if id.send_cq_channel.is_null() {
                let e = err();
                destroy_cqs(id);
                return Err(e);
            }
            id.send_cq = ibv_create_cq(id.verbs, send as i32, me, id.send_cq_channel, 0);
            if id.send_cq.is_null() {
                let e = err();
                destroy_cqs(id);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Whether an id's QPs are UD.
pub(crate) fn is_ud(t: ibv_qp_type) -> bool {
    t == ibv_qp_type_IBV_QPT_UD
}

/// The attributes of `state` for a QP of this id (`rdma_init_qp_attr`,
/// answered from what the connection manager said).
pub(crate) fn init_attr(
    p: &IdPriv,
    qp_type: ibv_qp_type,
    state: ibv_qp_state,
) -> Result<(ibv_qp_attr, i32), i32> {
    // SAFETY: all-zero is a valid ibv_qp_attr.
    let mut a: ibv_qp_attr = unsafe { core::mem::zeroed() };
    a.qp_state = state;
    let ud = is_ud(qp_type);
    match state {
        ibv_qp_state_IBV_QPS_INIT => {
            a.pkey_index = 0;
            a.port_num = 1;
            let mut mask = ibv_qp_attr_mask_IBV_QP_STATE
                | ibv_qp_attr_mask_IBV_QP_PKEY_INDEX
                | ibv_qp_attr_mask_IBV_QP_PORT;
            if ud {
                a.qkey = UDP_QKEY;
                mask |= ibv_qp_attr_mask_IBV_QP_QKEY;
            } else {
                // Before a connection: no remote access; once the CM knows
                // the peer, what it may do (cm_init_qp_init_attr).
                a.qp_access_flags = match &p.info {
                    Some(i) => {
                        let mut f = ibv_access_flags_IBV_ACCESS_REMOTE_WRITE;
                        if i.responder_resources > 0 {
                            f |= ibv_access_flags_IBV_ACCESS_REMOTE_READ
                                | ibv_access_flags_IBV_ACCESS_REMOTE_ATOMIC;
                        }
                        f
                    }
                    None => 0,
                };
                mask |= ibv_qp_attr_mask_IBV_QP_ACCESS_FLAGS;
            }
            Ok((a, mask as i32))
        }
        ibv_qp_state_IBV_QPS_RTR => {
            if ud {
                return Ok((a, ibv_qp_attr_mask_IBV_QP_STATE as i32));
            }
            let i = p.info.as_ref().ok_or(libc::EINVAL)?;
            set_ah(&mut a.ah_attr, i);
            a.path_mtu = u32::from(i.path_mtu);
            a.dest_qp_num = i.remote_qpn;
            a.rq_psn = i.rq_psn;
            let mut mask = ibv_qp_attr_mask_IBV_QP_STATE
                | ibv_qp_attr_mask_IBV_QP_AV
                | ibv_qp_attr_mask_IBV_QP_PATH_MTU
                | ibv_qp_attr_mask_IBV_QP_DEST_QPN
                | ibv_qp_attr_mask_IBV_QP_RQ_PSN;
            if qp_type == ibv_qp_type_IBV_QPT_RC {
                a.max_dest_rd_atomic = i.responder_resources;
                a.min_rnr_timer = 0;
                mask |= ibv_qp_attr_mask_IBV_QP_MAX_DEST_RD_ATOMIC
                    | ibv_qp_attr_mask_IBV_QP_MIN_RNR_TIMER;
            }
            Ok((a, mask as i32))
        }
        ibv_qp_state_IBV_QPS_RTS => {
            if ud {
                a.sq_psn = 0;
                return Ok((
                    a,
                    (ibv_qp_attr_mask_IBV_QP_STATE | ibv_qp_attr_mask_IBV_QP_SQ_PSN) as i32,
                ));
            }
            let i = p.info.as_ref().ok_or(libc::EINVAL)?;
            a.sq_psn = i.sq_psn;
            let mut mask = ibv_qp_attr_mask_IBV_QP_STATE | ibv_qp_attr_mask_IBV_QP_SQ_PSN;
            if qp_type == ibv_qp_type_IBV_QPT_RC {
                a.timeout = p.ack_timeout.unwrap_or(i.ack_timeout);
                a.retry_cnt = i.retry_count;
                a.rnr_retry = i.rnr_retry_count;
                a.max_rd_atomic = i.initiator_depth;
                mask |= ibv_qp_attr_mask_IBV_QP_TIMEOUT
                    | ibv_qp_attr_mask_IBV_QP_RETRY_CNT
                    | ibv_qp_attr_mask_IBV_QP_RNR_RETRY
                    | ibv_qp_attr_mask_IBV_QP_MAX_QP_RD_ATOMIC;
            }
            Ok((a, mask as i32))
        }
        _ => Err(libc::EINVAL),
    }
}

/// The address vector towards the peer of a connection (RoCE v2: global,
/// GID index 0 is the device's address).
pub(crate) fn set_ah(ah: &mut ibv_ah_attr, i: &ConnInfo) {
    ah.is_global = 1;
    ah.grh.dgid = ibv_gid { raw: i.remote_gid };
    ah.grh.sgid_index = 0;
    ah.grh.hop_limit = i.hop_limit.max(1);
    ah.grh.traffic_class = i.traffic_class;
    ah.grh.flow_label = i.flow_label;
    ah.sl = i.sl;
    ah.port_num = 1;
    ah.dlid = 0;
}

/// Moves the QP to `state` with the connection's attributes; a
/// libibverbs error becomes errno.
///
/// # Safety
/// `qp` is a live QP.
pub(crate) unsafe fn modify(
    qp: *mut ibv_qp,
    p: &IdPriv,
    state: ibv_qp_state,
    tweak: impl FnOnce(&mut ibv_qp_attr),
) -> Result<(), i32> {
    // SAFETY: a live QP (caller).
    let qp_type = unsafe { (*qp).qp_type };
    let (mut a, mask) = init_attr(p, qp_type, state)?;
    tweak(&mut a);
    // SAFETY: as above; `a` lives across the call.
    match unsafe { ibv_modify_qp(qp, &mut a, mask) } {
        0 => Ok(()),
        e => Err(e),
    }
}

/// `ucma_modify_qp_err`.
///
/// # Safety
/// `qp` is NULL or live.
pub(crate) unsafe fn to_error(qp: *mut ibv_qp) {
    if qp.is_null() {
        return;
    }
    // SAFETY: zeroed attributes with the state; a live QP (caller).
    unsafe {
        let mut a: ibv_qp_attr = core::mem::zeroed();
        a.qp_state = ibv_qp_state_IBV_QPS_ERR;
        ibv_modify_qp(qp, &mut a, ibv_qp_attr_mask_IBV_QP_STATE as i32);
    }
}

/// A fresh QP of the id to INIT (connected) or to RTS (UD), as
/// `ucma_init_conn_qp` / `ucma_init_ud_qp` do.
///
/// # Safety
/// `qp` is live; `b` is the id it belongs to.
pub(crate) unsafe fn init_new(b: &IdBlock, qp: *mut ibv_qp) -> Result<(), i32> {
    let p = lock(&b.p);
    // SAFETY: a live QP (caller).
    unsafe {
        modify(qp, &p, ibv_qp_state_IBV_QPS_INIT, |_| {})?;
        if is_ud((*qp).qp_type) {
            modify(qp, &p, ibv_qp_state_IBV_QPS_RTR, |_| {})?;
            modify(qp, &p, ibv_qp_state_IBV_QPS_RTS, |_| {})?;
        }
    }
    Ok(())
}

/// `ucma_modify_qp_rtr` + `ucma_modify_qp_rts` for a connected QP.
///
/// # Safety
/// `qp` is NULL or live.
pub(crate) unsafe fn connect(
    qp: *mut ibv_qp,
    p: &IdPriv,
    resp_res: Option<u8>,
    init_depth: Option<u8>,
) -> Result<(), i32> {
    if qp.is_null() {
        return Ok(());
    }
    // SAFETY: a live QP (caller).
    unsafe {
        modify(qp, p, ibv_qp_state_IBV_QPS_INIT, |_| {})?;
        modify(qp, p, ibv_qp_state_IBV_QPS_RTR, |a| {
            if let Some(r) = resp_res {
                a.max_dest_rd_atomic = r;
            }
        })?;
        modify(qp, p, ibv_qp_state_IBV_QPS_RTS, |a| {
            if let Some(d) = init_depth {
                a.max_rd_atomic = d;
            }
        })?;
    }
    Ok(())
}

/// The CM transport of an ibverbs QP type.
pub(crate) fn cm_type(t: ibv_qp_type) -> Option<CmQpType> {
    match t {
        ibv_qp_type_IBV_QPT_RC => Some(CmQpType::Rc),
        ibv_qp_type_IBV_QPT_UC => Some(CmQpType::Uc),
        ibv_qp_type_IBV_QPT_UD => Some(CmQpType::Ud),
        _ => None,
    }
}
