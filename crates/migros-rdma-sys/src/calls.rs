//! The functions `<infiniband/verbs.h>` declares (rdma-core v44, Debian
//! 12), generated once with bindgen and committed. The drop-in
//! libibverbs defines them; the drop-in librdmacm calls them (through
//! `libibverbs.so.1`). Their types are those of `verbs`.
//!
//! Regenerate (only to move to another rdma-core ABI):
//! ```text
//! bindgen /usr/include/infiniband/verbs.h --allowlist-function 'ibv_.*' \
//!   --blocklist-type '.*' --raw-line 'use crate::verbs::*;' \
//!   --no-doc-comments --use-core --ctypes-prefix libc --default-enum-style consts
//! ```
//! (bindgen-cli 0.73.2, libibverbs-dev 44.0-2)

#![allow(clippy::all)]

use crate::verbs::*;

unsafe extern "C" {
    pub fn ibv_wc_status_str(status: ibv_wc_status) -> *const libc::c_char;
}
unsafe extern "C" {
    pub fn ibv_rate_to_mult(rate: ibv_rate) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_rate_to_mbps(rate: ibv_rate) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_qp_to_qp_ex(qp: *mut ibv_qp) -> *mut ibv_qp_ex;
}
unsafe extern "C" {
    pub fn ibv_get_device_list(num_devices: *mut libc::c_int) -> *mut *mut ibv_device;
}
unsafe extern "C" {
    pub fn ibv_free_device_list(list: *mut *mut ibv_device);
}
unsafe extern "C" {
    pub fn ibv_get_device_name(device: *mut ibv_device) -> *const libc::c_char;
}
unsafe extern "C" {
    pub fn ibv_get_device_index(device: *mut ibv_device) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_get_device_guid(device: *mut ibv_device) -> __be64;
}
unsafe extern "C" {
    pub fn ibv_open_device(device: *mut ibv_device) -> *mut ibv_context;
}
unsafe extern "C" {
    pub fn ibv_close_device(context: *mut ibv_context) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_import_device(cmd_fd: libc::c_int) -> *mut ibv_context;
}
unsafe extern "C" {
    pub fn ibv_import_pd(context: *mut ibv_context, pd_handle: u32) -> *mut ibv_pd;
}
unsafe extern "C" {
    pub fn ibv_unimport_pd(pd: *mut ibv_pd);
}
unsafe extern "C" {
    pub fn ibv_import_mr(pd: *mut ibv_pd, mr_handle: u32) -> *mut ibv_mr;
}
unsafe extern "C" {
    pub fn ibv_unimport_mr(mr: *mut ibv_mr);
}
unsafe extern "C" {
    pub fn ibv_import_dm(context: *mut ibv_context, dm_handle: u32) -> *mut ibv_dm;
}
unsafe extern "C" {
    pub fn ibv_unimport_dm(dm: *mut ibv_dm);
}
unsafe extern "C" {
    pub fn ibv_get_async_event(
        context: *mut ibv_context,
        event: *mut ibv_async_event,
    ) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_ack_async_event(event: *mut ibv_async_event);
}
unsafe extern "C" {
    pub fn ibv_query_device(
        context: *mut ibv_context,
        device_attr: *mut ibv_device_attr,
    ) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_query_port(
        context: *mut ibv_context,
        port_num: u8,
        port_attr: *mut _compat_ibv_port_attr,
    ) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_query_gid(
        context: *mut ibv_context,
        port_num: u8,
        index: libc::c_int,
        gid: *mut ibv_gid,
    ) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_query_pkey(
        context: *mut ibv_context,
        port_num: u8,
        index: libc::c_int,
        pkey: *mut __be16,
    ) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_get_pkey_index(context: *mut ibv_context, port_num: u8, pkey: __be16)
        -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_alloc_pd(context: *mut ibv_context) -> *mut ibv_pd;
}
unsafe extern "C" {
    pub fn ibv_dealloc_pd(pd: *mut ibv_pd) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_reg_mr_iova2(
        pd: *mut ibv_pd,
        addr: *mut libc::c_void,
        length: usize,
        iova: u64,
        access: libc::c_uint,
    ) -> *mut ibv_mr;
}
unsafe extern "C" {
    pub fn ibv_reg_mr(
        pd: *mut ibv_pd,
        addr: *mut libc::c_void,
        length: usize,
        access: libc::c_int,
    ) -> *mut ibv_mr;
}
unsafe extern "C" {
    pub fn ibv_reg_mr_iova(
        pd: *mut ibv_pd,
        addr: *mut libc::c_void,
        length: usize,
        iova: u64,
        access: libc::c_int,
    ) -> *mut ibv_mr;
}
unsafe extern "C" {
    pub fn ibv_reg_dmabuf_mr(
        pd: *mut ibv_pd,
        offset: u64,
        length: usize,
        iova: u64,
        fd: libc::c_int,
        access: libc::c_int,
    ) -> *mut ibv_mr;
}
unsafe extern "C" {
    pub fn ibv_rereg_mr(
        mr: *mut ibv_mr,
        flags: libc::c_int,
        pd: *mut ibv_pd,
        addr: *mut libc::c_void,
        length: usize,
        access: libc::c_int,
    ) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_dereg_mr(mr: *mut ibv_mr) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_create_comp_channel(context: *mut ibv_context) -> *mut ibv_comp_channel;
}
unsafe extern "C" {
    pub fn ibv_destroy_comp_channel(channel: *mut ibv_comp_channel) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_create_cq(
        context: *mut ibv_context,
        cqe: libc::c_int,
        cq_context: *mut libc::c_void,
        channel: *mut ibv_comp_channel,
        comp_vector: libc::c_int,
    ) -> *mut ibv_cq;
}
unsafe extern "C" {
    pub fn ibv_resize_cq(cq: *mut ibv_cq, cqe: libc::c_int) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_destroy_cq(cq: *mut ibv_cq) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_get_cq_event(
        channel: *mut ibv_comp_channel,
        cq: *mut *mut ibv_cq,
        cq_context: *mut *mut libc::c_void,
    ) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_ack_cq_events(cq: *mut ibv_cq, nevents: libc::c_uint);
}
unsafe extern "C" {
    pub fn ibv_create_srq(pd: *mut ibv_pd, srq_init_attr: *mut ibv_srq_init_attr) -> *mut ibv_srq;
}
unsafe extern "C" {
    pub fn ibv_modify_srq(
        srq: *mut ibv_srq,
        srq_attr: *mut ibv_srq_attr,
        srq_attr_mask: libc::c_int,
    ) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_query_srq(srq: *mut ibv_srq, srq_attr: *mut ibv_srq_attr) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_destroy_srq(srq: *mut ibv_srq) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_create_qp(pd: *mut ibv_pd, qp_init_attr: *mut ibv_qp_init_attr) -> *mut ibv_qp;
}
unsafe extern "C" {
    pub fn ibv_modify_qp(
        qp: *mut ibv_qp,
        attr: *mut ibv_qp_attr,
        attr_mask: libc::c_int,
    ) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_query_qp_data_in_order(
        qp: *mut ibv_qp,
        op: ibv_wr_opcode,
        flags: u32,
    ) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_query_qp(
        qp: *mut ibv_qp,
        attr: *mut ibv_qp_attr,
        attr_mask: libc::c_int,
        init_attr: *mut ibv_qp_init_attr,
    ) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_destroy_qp(qp: *mut ibv_qp) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_create_ah(pd: *mut ibv_pd, attr: *mut ibv_ah_attr) -> *mut ibv_ah;
}
unsafe extern "C" {
    pub fn ibv_init_ah_from_wc(
        context: *mut ibv_context,
        port_num: u8,
        wc: *mut ibv_wc,
        grh: *mut ibv_grh,
        ah_attr: *mut ibv_ah_attr,
    ) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_create_ah_from_wc(
        pd: *mut ibv_pd,
        wc: *mut ibv_wc,
        grh: *mut ibv_grh,
        port_num: u8,
    ) -> *mut ibv_ah;
}
unsafe extern "C" {
    pub fn ibv_destroy_ah(ah: *mut ibv_ah) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_attach_mcast(qp: *mut ibv_qp, gid: *const ibv_gid, lid: u16) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_detach_mcast(qp: *mut ibv_qp, gid: *const ibv_gid, lid: u16) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_fork_init() -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_is_fork_initialized() -> ibv_fork_status;
}
unsafe extern "C" {
    pub fn ibv_node_type_str(node_type: ibv_node_type) -> *const libc::c_char;
}
unsafe extern "C" {
    pub fn ibv_port_state_str(port_state: ibv_port_state) -> *const libc::c_char;
}
unsafe extern "C" {
    pub fn ibv_event_type_str(event: ibv_event_type) -> *const libc::c_char;
}
unsafe extern "C" {
    pub fn ibv_resolve_eth_l2_from_gid(
        context: *mut ibv_context,
        attr: *mut ibv_ah_attr,
        eth_mac: *mut u8,
        vid: *mut u16,
    ) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_set_ece(qp: *mut ibv_qp, ece: *mut ibv_ece) -> libc::c_int;
}
unsafe extern "C" {
    pub fn ibv_query_ece(qp: *mut ibv_qp, ece: *mut ibv_ece) -> libc::c_int;
}
