//! Compile-time checks of the layouts programs compiled against the v44
//! headers read directly (their inline functions in `rdma_verbs.h` and
//! the fields of `rdma_cm_id` and `rdma_cm_event`). bindgen checks every
//! field of the generated types; these pin the numbers the programs use.

use core::mem::{offset_of, size_of};

use crate::sys::*;

macro_rules! check {
    ($e:expr, $v:expr) => {
        const _: () = assert!($e == $v);
    };
}

check!(size_of::<rdma_cm_id>(), 416);
check!(offset_of!(rdma_cm_id, verbs), 0);
check!(offset_of!(rdma_cm_id, channel), 8);
check!(offset_of!(rdma_cm_id, context), 16);
check!(offset_of!(rdma_cm_id, qp), 24);
check!(offset_of!(rdma_cm_id, route), 32);
check!(offset_of!(rdma_cm_id, ps), 344);
check!(offset_of!(rdma_cm_id, port_num), 348);
check!(offset_of!(rdma_cm_id, event), 352);
check!(offset_of!(rdma_cm_id, send_cq_channel), 360);
check!(offset_of!(rdma_cm_id, send_cq), 368);
check!(offset_of!(rdma_cm_id, recv_cq_channel), 376);
check!(offset_of!(rdma_cm_id, recv_cq), 384);
check!(offset_of!(rdma_cm_id, srq), 392);
check!(offset_of!(rdma_cm_id, pd), 400);
check!(offset_of!(rdma_cm_id, qp_type), 408);
check!(size_of::<rdma_route>(), 312);
check!(offset_of!(rdma_route, path_rec), 296);
check!(offset_of!(rdma_route, num_paths), 304);
check!(size_of::<rdma_addr>(), 296);
check!(size_of::<rdma_event_channel>(), 4);
check!(size_of::<rdma_cm_event>(), 80);
check!(offset_of!(rdma_cm_event, id), 0);
check!(offset_of!(rdma_cm_event, listen_id), 8);
check!(offset_of!(rdma_cm_event, event), 16);
check!(offset_of!(rdma_cm_event, status), 20);
check!(offset_of!(rdma_cm_event, param), 24);
check!(size_of::<rdma_conn_param>(), 24);
check!(offset_of!(rdma_conn_param, private_data_len), 8);
check!(offset_of!(rdma_conn_param, qp_num), 16);
check!(size_of::<rdma_ud_param>(), 56);
check!(offset_of!(rdma_ud_param, ah_attr), 16);
check!(offset_of!(rdma_ud_param, qp_num), 48);
check!(offset_of!(rdma_ud_param, qkey), 52);
check!(size_of::<rdma_addrinfo>(), 96);
check!(offset_of!(rdma_addrinfo, ai_src_addr), 24);
check!(offset_of!(rdma_addrinfo, ai_dst_addr), 32);
check!(offset_of!(rdma_addrinfo, ai_connect_len), 72);
check!(offset_of!(rdma_addrinfo, ai_next), 88);
check!(size_of::<ibv_sa_path_rec>(), 64);
check!(offset_of!(verbs_context, context), 320);
