//! The historical marshalling helpers libibverbs still exports for the
//! other rdma-core libraries (librdmacm uses them): copies between the
//! kernel's uverbs ABI structs (`<rdma/ib_user_verbs.h>`,
//! `<rdma/ib_user_sa.h>`) and the verbs structs, field by field. The
//! kernel structs are not in the generated `sys` (they are not part of
//! `<infiniband/verbs.h>`), so they are written out here with their sizes
//! checked at compile time; the C tests check the copies against the real
//! headers.

use crate::sys::*;

/// `struct ib_uverbs_global_route`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IbUverbsGlobalRoute {
    pub dgid: [u8; 16],
    pub flow_label: u32,
    pub sgid_index: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub reserved: u8,
}

/// `struct ib_uverbs_ah_attr`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IbUverbsAhAttr {
    pub grh: IbUverbsGlobalRoute,
    pub dlid: u16,
    pub sl: u8,
    pub src_path_bits: u8,
    pub static_rate: u8,
    pub is_global: u8,
    pub port_num: u8,
    pub reserved: u8,
}

/// `struct ib_uverbs_qp_attr`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IbUverbsQpAttr {
    pub qp_attr_mask: u32,
    pub qp_state: u32,
    pub cur_qp_state: u32,
    pub path_mtu: u32,
    pub path_mig_state: u32,
    pub qkey: u32,
    pub rq_psn: u32,
    pub sq_psn: u32,
    pub dest_qp_num: u32,
    pub qp_access_flags: u32,
    pub ah_attr: IbUverbsAhAttr,
    pub alt_ah_attr: IbUverbsAhAttr,
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    pub max_send_sge: u32,
    pub max_recv_sge: u32,
    pub max_inline_data: u32,
    pub pkey_index: u16,
    pub alt_pkey_index: u16,
    pub en_sqd_async_notify: u8,
    pub sq_draining: u8,
    pub max_rd_atomic: u8,
    pub max_dest_rd_atomic: u8,
    pub min_rnr_timer: u8,
    pub port_num: u8,
    pub timeout: u8,
    pub retry_cnt: u8,
    pub rnr_retry: u8,
    pub alt_port_num: u8,
    pub alt_timeout: u8,
    pub reserved: [u8; 5],
}

/// `struct ib_user_path_rec` (big-endian fields kept as they are).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IbUserPathRec {
    pub dgid: [u8; 16],
    pub sgid: [u8; 16],
    pub dlid: u16,
    pub slid: u16,
    pub raw_traffic: u32,
    pub flow_label: u32,
    pub reversible: u32,
    pub mtu: u32,
    pub pkey: u16,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub numb_path: u8,
    pub sl: u8,
    pub mtu_selector: u8,
    pub rate_selector: u8,
    pub rate: u8,
    pub packet_life_time_selector: u8,
    pub packet_life_time: u8,
    pub preference: u8,
}

/// `struct ibv_sa_path_rec` (`<infiniband/sa.h>`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IbvSaPathRec {
    pub dgid: ibv_gid,
    pub sgid: ibv_gid,
    pub dlid: u16,
    pub slid: u16,
    pub raw_traffic: libc::c_int,
    pub flow_label: u32,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub reversible: libc::c_int,
    pub numb_path: u8,
    pub pkey: u16,
    pub sl: u8,
    pub mtu_selector: u8,
    pub mtu: u8,
    pub rate_selector: u8,
    pub rate: u8,
    pub packet_life_time_selector: u8,
    pub packet_life_time: u8,
    pub preference: u8,
}

// The kernel ABI: sizes fixed by the headers.
const _: () = assert!(core::mem::size_of::<IbUverbsGlobalRoute>() == 24);
const _: () = assert!(core::mem::size_of::<IbUverbsAhAttr>() == 32);
const _: () = assert!(core::mem::size_of::<IbUverbsQpAttr>() == 144);
const _: () = assert!(core::mem::offset_of!(IbUverbsQpAttr, max_send_wr) == 104);
const _: () = assert!(core::mem::size_of::<IbUserPathRec>() == 64);
const _: () = assert!(core::mem::size_of::<IbvSaPathRec>() == 64);
const _: () = assert!(core::mem::offset_of!(IbvSaPathRec, reversible) == 48);
const _: () = assert!(core::mem::offset_of!(IbvSaPathRec, pkey) == 54);

fn ah_attr_from_kern(src: &IbUverbsAhAttr) -> ibv_ah_attr {
    // SAFETY: all-zero is a valid ibv_ah_attr (integers and a GID union).
    let mut dst: ibv_ah_attr = unsafe { core::mem::zeroed() };
    dst.grh.dgid = ibv_gid { raw: src.grh.dgid };
    dst.grh.flow_label = src.grh.flow_label;
    dst.grh.sgid_index = src.grh.sgid_index;
    dst.grh.hop_limit = src.grh.hop_limit;
    dst.grh.traffic_class = src.grh.traffic_class;
    dst.dlid = src.dlid;
    dst.sl = src.sl;
    dst.src_path_bits = src.src_path_bits;
    dst.static_rate = src.static_rate;
    dst.is_global = src.is_global;
    dst.port_num = src.port_num;
    dst
}

#[no_mangle]
pub unsafe extern "C" fn ibv_copy_ah_attr_from_kern(
    dst: *mut ibv_ah_attr,
    src: *const IbUverbsAhAttr,
) {
    if dst.is_null() || src.is_null() {
        return;
    }
    // SAFETY: valid pointers (contract).
    unsafe { *dst = ah_attr_from_kern(&*src) };
}

#[no_mangle]
pub unsafe extern "C" fn ibv_copy_qp_attr_from_kern(
    dst: *mut ibv_qp_attr,
    src: *const IbUverbsQpAttr,
) {
    if dst.is_null() || src.is_null() {
        return;
    }
    // SAFETY: valid pointers (contract); only the fields libibverbs copies
    // are written, the others (qp_state among them) keep their values.
    let (d, s) = unsafe { (&mut *dst, &*src) };
    d.cur_qp_state = s.cur_qp_state;
    d.path_mtu = s.path_mtu;
    d.path_mig_state = s.path_mig_state;
    d.qkey = s.qkey;
    d.rq_psn = s.rq_psn;
    d.sq_psn = s.sq_psn;
    d.dest_qp_num = s.dest_qp_num;
    d.qp_access_flags = s.qp_access_flags;
    d.cap = ibv_qp_cap {
        max_send_wr: s.max_send_wr,
        max_recv_wr: s.max_recv_wr,
        max_send_sge: s.max_send_sge,
        max_recv_sge: s.max_recv_sge,
        max_inline_data: s.max_inline_data,
    };
    d.ah_attr = ah_attr_from_kern(&s.ah_attr);
    d.alt_ah_attr = ah_attr_from_kern(&s.alt_ah_attr);
    d.pkey_index = s.pkey_index;
    d.alt_pkey_index = s.alt_pkey_index;
    d.en_sqd_async_notify = s.en_sqd_async_notify;
    d.sq_draining = s.sq_draining;
    d.max_rd_atomic = s.max_rd_atomic;
    d.max_dest_rd_atomic = s.max_dest_rd_atomic;
    d.min_rnr_timer = s.min_rnr_timer;
    d.port_num = s.port_num;
    d.timeout = s.timeout;
    d.retry_cnt = s.retry_cnt;
    d.rnr_retry = s.rnr_retry;
    d.alt_port_num = s.alt_port_num;
    d.alt_timeout = s.alt_timeout;
}

#[no_mangle]
pub unsafe extern "C" fn ibv_copy_path_rec_from_kern(
    dst: *mut IbvSaPathRec,
    src: *const IbUserPathRec,
) {
    if dst.is_null() || src.is_null() {
        return;
    }
    // SAFETY: valid pointers (contract).
    let (d, s) = unsafe { (&mut *dst, &*src) };
    d.dgid = ibv_gid { raw: s.dgid };
    d.sgid = ibv_gid { raw: s.sgid };
    d.dlid = s.dlid;
    d.slid = s.slid;
    d.raw_traffic = s.raw_traffic as libc::c_int;
    d.flow_label = s.flow_label;
    d.hop_limit = s.hop_limit;
    d.traffic_class = s.traffic_class;
    d.reversible = s.reversible as libc::c_int;
    d.numb_path = s.numb_path;
    d.pkey = s.pkey;
    d.sl = s.sl;
    d.mtu_selector = s.mtu_selector;
    d.mtu = s.mtu as u8;
    d.rate_selector = s.rate_selector;
    d.rate = s.rate;
    d.packet_life_time = s.packet_life_time;
    d.preference = s.preference;
    d.packet_life_time_selector = s.packet_life_time_selector;
}

#[no_mangle]
pub unsafe extern "C" fn ibv_copy_path_rec_to_kern(
    dst: *mut IbUserPathRec,
    src: *const IbvSaPathRec,
) {
    if dst.is_null() || src.is_null() {
        return;
    }
    // SAFETY: valid pointers (contract); the GIDs are plain bytes.
    let (d, s) = unsafe { (&mut *dst, &*src) };
    // SAFETY: reading the raw bytes of GID unions.
    unsafe {
        d.dgid = s.dgid.raw;
        d.sgid = s.sgid.raw;
    }
    d.dlid = s.dlid;
    d.slid = s.slid;
    d.raw_traffic = s.raw_traffic as u32;
    d.flow_label = s.flow_label;
    d.hop_limit = s.hop_limit;
    d.traffic_class = s.traffic_class;
    d.reversible = s.reversible as u32;
    d.numb_path = s.numb_path;
    d.pkey = s.pkey;
    d.sl = s.sl;
    d.mtu_selector = s.mtu_selector;
    d.mtu = u32::from(s.mtu);
    d.rate_selector = s.rate_selector;
    d.rate = s.rate;
    d.packet_life_time = s.packet_life_time;
    d.preference = s.preference;
    d.packet_life_time_selector = s.packet_life_time_selector;
}
