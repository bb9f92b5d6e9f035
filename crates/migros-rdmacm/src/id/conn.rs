//! Connections: the passive side (`rdma_listen`, `rdma_accept`,
//! `rdma_reject`) and the active side (`rdma_connect`, `rdma_establish`),
//! `rdma_notify` and `rdma_disconnect`. The application's QP is moved with
//! what the REQ or REP said (`qp`) before the daemon answers the peer.

use std::net::{IpAddr, SocketAddr};

use migros_proto::cm::{AcceptParams, CmRequest, CmResponse, ConnectParams, PortSpace};

use super::addr::{bind, packet_life_time};
use super::{block, complete, ok, request, IdBlock, IdPriv, St};
use crate::device;
use crate::qp;
use crate::registry;
use crate::sys::*;
use crate::util::{fail, lock, ret};

// ---- passive side ----

fn listen(b: &mut IdBlock) -> Result<(), i32> {
    if lock(&b.p).st == St::Idle {
        let any = match b.src() {
            Some(SocketAddr::V6(_)) => {
                SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0)
            }
            _ => SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0),
        };
        bind(b, any)?;
    }
    let (binds, qp_type) = {
        let p = lock(&b.p);
        if p.st != St::Bound {
            return Err(libc::EINVAL);
        }
        (
            p.binds.clone(),
            qp::cm_type(b.id.qp_type).ok_or(libc::EINVAL)?,
        )
    };
    let mut done = Vec::new();
    for (d, bind) in binds {
        let dev = device::get(d).ok_or(libc::ENODEV)?;
        match request(&dev, &CmRequest::Listen { bind, qp_type }) {
            Ok(CmResponse::Listening { listen }) => {
                registry::claim_listen(d, listen, b.handle);
                done.push((d, listen));
            }
            other => {
                for (d, l) in done {
                    if let Some(dev) = device::get(d) {
                        let _ = request(&dev, &CmRequest::Unlisten { listen: l });
                    }
                }
                return Err(other.err().unwrap_or(libc::EPROTO));
            }
        }
    }
    let mut p = lock(&b.p);
    p.listens = done;
    p.st = St::Listen;
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn rdma_listen(id: *mut rdma_cm_id, _backlog: libc::c_int) -> libc::c_int {
    if id.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: a live id (contract).
    ret(listen(unsafe { block(id) }))
}

/// `ucma_valid_param`.
fn valid_param(b: &IdBlock, p: &IdPriv, param: Option<&rdma_conn_param>) -> Result<(), i32> {
    if p.ps != PortSpace::Tcp {
        return Ok(());
    }
    let Some(param) = param else {
        return if b.id.qp.is_null() {
            Err(libc::EINVAL)
        } else {
            Ok(())
        };
    };
    let dev = p.dev.as_ref().ok_or(libc::EINVAL)?;
    if param.responder_resources != 0xff && param.responder_resources > dev.max_responder_resources
    {
        return Err(libc::EINVAL);
    }
    if param.initiator_depth != 0xff && param.initiator_depth > dev.max_initiator_depth {
        return Err(libc::EINVAL);
    }
    Ok(())
}

/// The application's private data of a `rdma_conn_param`.
///
/// # Safety
/// `param` is NULL or valid, with `private_data_len` readable bytes.
unsafe fn private_data(param: Option<&rdma_conn_param>) -> Vec<u8> {
    match param {
        Some(p) if !p.private_data.is_null() && p.private_data_len > 0 => {
            // SAFETY: the caller's buffer of private_data_len bytes.
            unsafe {
                std::slice::from_raw_parts(p.private_data.cast::<u8>(), p.private_data_len.into())
            }
            .to_vec()
        }
        _ => Vec::new(),
    }
}

fn accept(b: &mut IdBlock, param: Option<&rdma_conn_param>) -> Result<(), i32> {
    let ud = qp::is_ud(b.id.qp_type);
    let qp = b.id.qp;
    let (qp_num, srq) = if !qp.is_null() {
        // SAFETY: a live QP of this id.
        unsafe { ((*qp).qp_num, !(*qp).srq.is_null()) }
    } else {
        let p = param.ok_or(libc::EINVAL)?;
        (p.qp_num, p.srq != 0)
    };
    let (dev, conn, resp, init) = {
        let mut p = lock(&b.p);
        valid_param(b, &p, param)?;
        let dev = p.dev.clone().ok_or(libc::EINVAL)?;
        let conn = p.conn.ok_or(libc::EINVAL)?;
        match param {
            Some(c) if c.initiator_depth != 0xff => p.initiator_depth = c.initiator_depth,
            _ => p.initiator_depth = p.initiator_depth.min(dev.max_initiator_depth),
        }
        match param {
            Some(c) if c.responder_resources != 0xff => {
                p.responder_resources = c.responder_resources
            }
            _ => p.responder_resources = p.responder_resources.min(dev.max_responder_resources),
        }
        (dev, conn, p.responder_resources, p.initiator_depth)
    };
    if !ud {
        let p = lock(&b.p);
        // SAFETY: the id's QP or NULL.
        unsafe { qp::connect(qp, &p, Some(resp), Some(init)) }?;
    }
    // SAFETY: the caller's parameters.
    let mut pd = lock(&b.p).connect_pd.clone();
    pd.extend(unsafe { private_data(param) });
    let params = AcceptParams {
        qpn: qp_num,
        responder_resources: resp,
        initiator_depth: init,
        flow_control: param.is_some_and(|c| c.flow_control != 0),
        rnr_retry_count: param.map_or(7, |c| c.rnr_retry_count),
        srq,
        qkey: qp::UDP_QKEY,
        private_data: pd,
    };
    if let Err(e) = request(
        &dev,
        &CmRequest::Accept {
            conn: conn.1,
            params,
        },
    )
    .and_then(ok)
    {
        // SAFETY: the id's QP or NULL.
        unsafe { qp::to_error(qp) };
        return Err(e);
    }
    if ud {
        return Ok(());
    }
    complete(b)
}

#[no_mangle]
pub unsafe extern "C" fn rdma_accept(
    id: *mut rdma_cm_id,
    conn_param: *mut rdma_conn_param,
) -> libc::c_int {
    if id.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: a live id and NULL or valid parameters (contract).
    ret(accept(unsafe { block(id) }, unsafe { conn_param.as_ref() }))
}

fn reject(b: &mut IdBlock, pd: &[u8], reason: u16) -> Result<(), i32> {
    let (dev, conn) = {
        let p = lock(&b.p);
        (
            p.dev.clone().ok_or(libc::EINVAL)?,
            p.conn.ok_or(libc::EINVAL)?,
        )
    };
    request(
        &dev,
        &CmRequest::Reject {
            conn: conn.1,
            reason,
            private_data: pd.to_vec(),
        },
    )
    .and_then(ok)
}

unsafe fn reject_with(
    id: *mut rdma_cm_id,
    private_data: *const libc::c_void,
    len: u8,
    reason: u16,
) -> libc::c_int {
    if id.is_null() {
        return fail(libc::EINVAL);
    }
    let pd = if private_data.is_null() || len == 0 {
        Vec::new()
    } else {
        // SAFETY: the caller's buffer of `len` bytes.
        unsafe { std::slice::from_raw_parts(private_data.cast::<u8>(), len.into()) }.to_vec()
    };
    // SAFETY: a live id (contract).
    ret(reject(unsafe { block(id) }, &pd, reason))
}

#[no_mangle]
pub unsafe extern "C" fn rdma_reject(
    id: *mut rdma_cm_id,
    private_data: *const libc::c_void,
    private_data_len: u8,
) -> libc::c_int {
    // SAFETY: forwarded contract.
    unsafe { reject_with(id, private_data, private_data_len, 0) }
}

/// Rejects with IBTA's "vendor option not supported" (35).
#[no_mangle]
pub unsafe extern "C" fn rdma_reject_ece(
    id: *mut rdma_cm_id,
    private_data: *const libc::c_void,
    private_data_len: u8,
) -> libc::c_int {
    // SAFETY: forwarded contract.
    unsafe { reject_with(id, private_data, private_data_len, 35) }
}

// ---- active side ----

fn connect(b: &mut IdBlock, param: Option<&rdma_conn_param>) -> Result<(), i32> {
    let qp = b.id.qp;
    let (mut qp_num, mut srq) = param.map_or((0, false), |c| (c.qp_num, c.srq != 0));
    if !qp.is_null() {
        // SAFETY: a live QP of this id.
        unsafe {
            qp_num = (*qp).qp_num;
            srq = !(*qp).srq.is_null();
        }
    }
    let qp_type = qp::cm_type(b.id.qp_type).ok_or(libc::EINVAL)?;
    let src = b.src().ok_or(libc::EINVAL)?;
    let dst = b.dst().ok_or(libc::EINVAL)?;
    let (dev, bind, cp) = {
        let mut p = lock(&b.p);
        valid_param(b, &p, param)?;
        if p.st != St::RouteResolved {
            return Err(libc::EINVAL);
        }
        let dev = p.dev.clone().ok_or(libc::EINVAL)?;
        p.initiator_depth = match param {
            Some(c) if c.initiator_depth != 0xff => c.initiator_depth,
            _ => dev.max_initiator_depth,
        };
        p.responder_resources = match param {
            Some(c) if c.responder_resources != 0xff => c.responder_resources,
            _ => dev.max_responder_resources,
        };
        let bind = p
            .binds
            .iter()
            .find(|(d, _)| *d == dev.idx)
            .map(|(_, b)| *b)
            .ok_or(libc::EINVAL)?;
        let mut pd = std::mem::take(&mut p.connect_pd);
        // SAFETY: the caller's parameters.
        pd.extend(unsafe { private_data(param) });
        let mtu = p.path.as_ref().map_or(dev.mtu, |x| x.mtu);
        let cp = ConnectParams {
            bind,
            src: src.ip(),
            dst,
            qp_type,
            qpn: qp_num,
            responder_resources: p.responder_resources,
            initiator_depth: p.initiator_depth,
            flow_control: param.is_some_and(|c| c.flow_control != 0),
            retry_count: param.map_or(7, |c| c.retry_count.min(7)),
            rnr_retry_count: param.map_or(7, |c| c.rnr_retry_count.min(7)),
            srq,
            path_mtu: mtu,
            hop_limit: 64,
            traffic_class: p.tos.unwrap_or(0),
            packet_life_time: packet_life_time(&p),
            private_data: pd,
        };
        (dev, bind, cp)
    };
    let _ = bind;
    match request(&dev, &CmRequest::Connect(cp))? {
        CmResponse::Connected { conn, .. } => {
            {
                let mut p = lock(&b.p);
                p.conn = Some((dev.idx, conn));
                p.st = St::Connect;
            }
            registry::claim_conn(dev.idx, conn, b.handle);
        }
        _ => return Err(libc::EPROTO),
    }
    complete(b)
}

#[no_mangle]
pub unsafe extern "C" fn rdma_connect(
    id: *mut rdma_cm_id,
    conn_param: *mut rdma_conn_param,
) -> libc::c_int {
    if id.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: a live id and NULL or valid parameters (contract).
    ret(connect(unsafe { block(id) }, unsafe {
        conn_param.as_ref()
    }))
}

/// Sends the RTU once the application moved its own QP (`rdma_establish`
/// after `RDMA_CM_EVENT_CONNECT_RESPONSE`).
pub(crate) fn establish(b: &IdBlock) -> Result<(), i32> {
    let (dev, conn) = {
        let p = lock(&b.p);
        (
            p.dev.clone().ok_or(libc::EINVAL)?,
            p.conn.ok_or(libc::EINVAL)?,
        )
    };
    request(&dev, &CmRequest::Establish { conn: conn.1 }).and_then(ok)
}

#[no_mangle]
pub unsafe extern "C" fn rdma_establish(id: *mut rdma_cm_id) -> libc::c_int {
    if id.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: a live id (contract).
    let b = unsafe { block(id) };
    if !b.id.qp.is_null() {
        return fail(libc::EINVAL);
    }
    ret(establish(b))
}

#[no_mangle]
pub unsafe extern "C" fn rdma_notify(id: *mut rdma_cm_id, event: ibv_event_type) -> libc::c_int {
    if id.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: a live id (contract).
    let b = unsafe { block(id) };
    if event != ibv_event_type_IBV_EVENT_COMM_EST {
        return fail(libc::EINVAL);
    }
    let r = (|| {
        let (dev, conn) = {
            let p = lock(&b.p);
            (
                p.dev.clone().ok_or(libc::EINVAL)?,
                p.conn.ok_or(libc::EINVAL)?,
            )
        };
        request(&dev, &CmRequest::Notify { conn: conn.1 }).and_then(ok)
    })();
    ret(r)
}

#[no_mangle]
pub unsafe extern "C" fn rdma_disconnect(id: *mut rdma_cm_id) -> libc::c_int {
    if id.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: a live id (contract).
    let b = unsafe { block(id) };
    if b.id.verbs.is_null() {
        return fail(libc::EINVAL);
    }
    // SAFETY: the id's QP or NULL.
    unsafe { qp::to_error(b.id.qp) };
    let r = (|| {
        let (dev, conn) = {
            let p = lock(&b.p);
            (
                p.dev.clone().ok_or(libc::EINVAL)?,
                p.conn.ok_or(libc::EINVAL)?,
            )
        };
        request(&dev, &CmRequest::Disconnect { conn: conn.1 }).and_then(ok)
    })();
    ret(r.and_then(|()| complete(b)))
}
