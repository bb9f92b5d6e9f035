//! Compile-time checks of every size and offset that programs built
//! against the v44 headers rely on (`shared/reference/libibverbs-abi.md`).
//! A mismatch fails the build.

use core::mem::{offset_of, size_of};

use crate::sys::*;

/// Offset of an extended op in `verbs_context`, counted from the embedded
/// `ibv_context` (negative: it lies before it).
macro_rules! from_ctx {
    ($field:ident) => {
        offset_of!(verbs_context, $field) as isize - offset_of!(verbs_context, context) as isize
    };
}

/// Offset of an op in `ibv_context_ops`, counted from `ibv_context`.
macro_rules! op {
    ($field:ident) => {
        offset_of!(ibv_context, ops) + offset_of!(ibv_context_ops, $field)
    };
}

// struct ibv_context and its ops table.
const _: () = assert!(size_of::<ibv_context>() == 328);
const _: () = assert!(offset_of!(ibv_context, device) == 0);
const _: () = assert!(offset_of!(ibv_context, ops) == 8);
const _: () = assert!(size_of::<ibv_context_ops>() == 256);
const _: () = assert!(offset_of!(ibv_context, cmd_fd) == 264);
const _: () = assert!(offset_of!(ibv_context, async_fd) == 268);
const _: () = assert!(offset_of!(ibv_context, num_comp_vectors) == 272);
const _: () = assert!(offset_of!(ibv_context, mutex) == 280);
const _: () = assert!(offset_of!(ibv_context, abi_compat) == 320);
const _: () = assert!(op!(poll_cq) == 96);
const _: () = assert!(op!(req_notify_cq) == 104);
const _: () = assert!(op!(post_srq_recv) == 168);
const _: () = assert!(op!(post_send) == 208);
const _: () = assert!(op!(post_recv) == 216);

// struct verbs_context: the extended ops before the embedded context.
const _: () = assert!(size_of::<verbs_context>() == 648);
const _: () = assert!(offset_of!(verbs_context, context) == 320);
const _: () = assert!(from_ctx!(sz) == -8);
const _: () = assert!(from_ctx!(query_port) == -320);
const _: () = assert!(from_ctx!(advise_mr) == -312);
const _: () = assert!(from_ctx!(reg_dm_mr) == -264);
const _: () = assert!(from_ctx!(alloc_dm) == -256);
const _: () = assert!(from_ctx!(free_dm) == -248);
const _: () = assert!(from_ctx!(create_cq_ex) == -120);
const _: () = assert!(from_ctx!(query_device_ex) == -104);
const _: () = assert!(from_ctx!(ibv_destroy_flow) == -96);
const _: () = assert!(from_ctx!(ibv_create_flow) == -80);
const _: () = assert!(from_ctx!(create_qp_ex) == -56);
const _: () = assert!(from_ctx!(create_srq_ex) == -40);
const _: () = assert!(from_ctx!(open_xrcd) == -32);

// struct ibv_device.
const _: () = assert!(size_of::<ibv_device>() == 664);
const _: () = assert!(offset_of!(ibv_device, transport_type) == 20);
const _: () = assert!(offset_of!(ibv_device, name) == 24);
const _: () = assert!(offset_of!(ibv_device, ibdev_path) == 408);

// struct ibv_qp and ibv_qp_ex.
const _: () = assert!(size_of::<ibv_qp>() == 160);
const _: () = assert!(offset_of!(ibv_qp, context) == 0);
const _: () = assert!(offset_of!(ibv_qp, qp_num) == 52);
const _: () = assert!(offset_of!(ibv_qp, state) == 56);
const _: () = assert!(offset_of!(ibv_qp, qp_type) == 60);
const _: () = assert!(size_of::<ibv_qp_ex>() == 352);
const _: () = assert!(offset_of!(ibv_qp_ex, qp_base) == 0);
const _: () = assert!(offset_of!(ibv_qp_ex, wr_id) == 168);
const _: () = assert!(offset_of!(ibv_qp_ex, wr_flags) == 176);
const _: () = assert!(offset_of!(ibv_qp_ex, wr_rdma_read) == 216);
const _: () = assert!(offset_of!(ibv_qp_ex, wr_rdma_write) == 224);
const _: () = assert!(offset_of!(ibv_qp_ex, wr_send) == 240);
const _: () = assert!(offset_of!(ibv_qp_ex, wr_set_inline_data) == 288);
const _: () = assert!(offset_of!(ibv_qp_ex, wr_set_sge) == 304);
const _: () = assert!(offset_of!(ibv_qp_ex, wr_start) == 320);
const _: () = assert!(offset_of!(ibv_qp_ex, wr_complete) == 328);

// struct ibv_mr.
const _: () = assert!(size_of::<ibv_mr>() == 48);
const _: () = assert!(offset_of!(ibv_mr, addr) == 16);
const _: () = assert!(offset_of!(ibv_mr, length) == 24);
const _: () = assert!(offset_of!(ibv_mr, lkey) == 36);
const _: () = assert!(offset_of!(ibv_mr, rkey) == 40);

// struct ibv_cq (and the prefix ibv_cq_ex shares with it).
const _: () = assert!(size_of::<ibv_cq>() == 128);
const _: () = assert!(offset_of!(ibv_cq, context) == 0);
const _: () = assert!(offset_of!(ibv_cq, channel) == 8);
const _: () = assert!(offset_of!(ibv_cq, cq_context) == 16);
const _: () = assert!(offset_of!(ibv_cq, cqe) == 28);
const _: () = assert!(offset_of!(ibv_cq_ex, cqe) == 28);
const _: () = assert!(offset_of!(ibv_cq_ex, async_events_completed) == 124);

// struct ibv_comp_channel.
const _: () = assert!(size_of::<ibv_comp_channel>() == 16);
const _: () = assert!(offset_of!(ibv_comp_channel, fd) == 8);

// Attribute structs.
const _: () = assert!(size_of::<ibv_port_attr>() == 52);
const _: () = assert!(offset_of!(ibv_port_attr, link_layer) == 46);
const _: () = assert!(size_of::<ibv_device_attr>() == 232);
const _: () = assert!(size_of::<ibv_device_attr_ex>() == 400);
const _: () = assert!(size_of::<ibv_gid_entry>() == 32);
const _: () = assert!(size_of::<ibv_wc>() == 48);
const _: () = assert!(size_of::<ibv_send_wr>() == 128);
