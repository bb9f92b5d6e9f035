//! The rdma-core v44 (Debian 12) `<rdma/rdma_cma.h>` types and constants
//! (with the `<infiniband/sa.h>` path records they use), generated once
//! with bindgen and committed; bindgen's own compile-time layout checks are
//! kept, and `abi.rs` asserts the offsets programs rely on. The
//! `<infiniband/verbs.h>` types and functions they use are not repeated
//! here: they come from `migros-rdma-sys` (shared with the drop-in
//! libibverbs) and are re-exported.
//!
//! Because bindgen cannot tell whether those outside types are `Copy`, the
//! two unions holding them (`rdma_addr`'s `ibaddr`, `rdma_cm_event`'s
//! `param`) are structs of `__BindgenUnionField`s (same layout, checked):
//! a member is reached with `as_ref`/`as_mut`.
//!
//! Regenerate (only to move to another rdma-core ABI):
//! ```text
//! bindgen /usr/include/rdma/rdma_cma.h --allowlist-type '(rdma|ibv_sa|ibv_path)_.*' \
//!   --allowlist-var '(RDMA|RAI)_.*' --blocklist-file '.*/infiniband/verbs\.h' \
//!   --blocklist-type '__atomic_wide_counter.*|__be(16|32|64)|__pthread_.*|__u(16|32|64)|pthread_(cond|mutex)_t' \
//!   --raw-line 'pub use migros_rdma_sys::calls::*;' --raw-line 'pub use migros_rdma_sys::*;' \
//!   --no-doc-comments --use-core --ctypes-prefix libc \
//!   --default-enum-style consts -- -I/usr/lib/gcc/x86_64-linux-gnu/12/include
//! ```
//! (bindgen-cli 0.73.2, librdmacm-dev and libibverbs-dev 44.0-2; the
//! blocked types are those `migros-rdma-sys` already has)

#![allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code
)]
#![allow(clippy::all)]
#![allow(unsafe_op_in_unsafe_fn)]

pub use migros_rdma_sys::calls::*;
pub use migros_rdma_sys::*;

#[derive(PartialEq, Eq, Copy, Clone, Debug, Hash)]
#[repr(C, align(8))]
pub struct __BindgenOpaqueArray8<T>(pub T);
impl<T: Copy + Default, const N: usize> Default for __BindgenOpaqueArray8<[T; N]> {
    fn default() -> Self {
        Self([<T as Default>::default(); N])
    }
}
#[repr(C)]
pub struct __BindgenUnionField<T>(::core::marker::PhantomData<T>);
impl<T> __BindgenUnionField<T> {
    #[inline]
    pub const fn new() -> Self {
        __BindgenUnionField(::core::marker::PhantomData)
    }
    #[inline]
    pub const unsafe fn as_ref(&self) -> &T {
        unsafe { ::core::mem::transmute(self) }
    }
    #[inline]
    pub const unsafe fn as_mut(&mut self) -> &mut T {
        unsafe { ::core::mem::transmute(self) }
    }
}
impl<T> ::core::default::Default for __BindgenUnionField<T> {
    #[inline]
    fn default() -> Self {
        Self::new()
    }
}
impl<T> ::core::clone::Clone for __BindgenUnionField<T> {
    #[inline]
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> ::core::marker::Copy for __BindgenUnionField<T> {}
impl<T> ::core::fmt::Debug for __BindgenUnionField<T> {
    fn fmt(&self, fmt: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        fmt.write_str("__BindgenUnionField")
    }
}
impl<T> ::core::hash::Hash for __BindgenUnionField<T> {
    fn hash<H: ::core::hash::Hasher>(&self, _state: &mut H) {}
}
impl<T> ::core::cmp::PartialEq for __BindgenUnionField<T> {
    fn eq(&self, _other: &__BindgenUnionField<T>) -> bool {
        true
    }
}
impl<T> ::core::cmp::Eq for __BindgenUnionField<T> {}
pub const RDMA_IB_IP_PS_MASK: i32 = -65536;
pub const RDMA_IB_IP_PORT_MASK: u32 = 65535;
pub const RDMA_IB_IP_PS_TCP: u32 = 17170432;
pub const RDMA_IB_IP_PS_UDP: u32 = 17891328;
pub const RDMA_IB_PS_IB: u32 = 20905984;
pub const RDMA_UDP_QKEY: u32 = 19088743;
pub const RAI_PASSIVE: u32 = 1;
pub const RAI_NUMERICHOST: u32 = 2;
pub const RAI_NOROUTE: u32 = 4;
pub const RAI_FAMILY: u32 = 8;
pub type __socklen_t = libc::c_uint;
pub type socklen_t = __socklen_t;
pub type sa_family_t = libc::c_ushort;
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct sockaddr {
    pub sa_family: sa_family_t,
    pub sa_data: [libc::c_char; 14usize],
}
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of sockaddr"][::core::mem::size_of::<sockaddr>() - 16usize];
    ["Alignment of sockaddr"][::core::mem::align_of::<sockaddr>() - 2usize];
    ["Offset of field: sockaddr::sa_family"][::core::mem::offset_of!(sockaddr, sa_family) - 0usize];
    ["Offset of field: sockaddr::sa_data"][::core::mem::offset_of!(sockaddr, sa_data) - 2usize];
};
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct sockaddr_storage {
    pub ss_family: sa_family_t,
    pub __ss_padding: [libc::c_char; 118usize],
    pub __ss_align: libc::c_ulong,
}
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of sockaddr_storage"][::core::mem::size_of::<sockaddr_storage>() - 128usize];
    ["Alignment of sockaddr_storage"][::core::mem::align_of::<sockaddr_storage>() - 8usize];
    ["Offset of field: sockaddr_storage::ss_family"]
        [::core::mem::offset_of!(sockaddr_storage, ss_family) - 0usize];
    ["Offset of field: sockaddr_storage::__ss_padding"]
        [::core::mem::offset_of!(sockaddr_storage, __ss_padding) - 2usize];
    ["Offset of field: sockaddr_storage::__ss_align"]
        [::core::mem::offset_of!(sockaddr_storage, __ss_align) - 120usize];
};
pub type in_addr_t = u32;
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct in_addr {
    pub s_addr: in_addr_t,
}
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of in_addr"][::core::mem::size_of::<in_addr>() - 4usize];
    ["Alignment of in_addr"][::core::mem::align_of::<in_addr>() - 4usize];
    ["Offset of field: in_addr::s_addr"][::core::mem::offset_of!(in_addr, s_addr) - 0usize];
};
pub type in_port_t = u16;
#[repr(C)]
#[derive(Copy, Clone)]
pub struct in6_addr {
    pub __in6_u: in6_addr__bindgen_ty_1,
}
#[repr(C)]
#[derive(Copy, Clone)]
pub union in6_addr__bindgen_ty_1 {
    pub __u6_addr8: [u8; 16usize],
    pub __u6_addr16: [u16; 8usize],
    pub __u6_addr32: [u32; 4usize],
}
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of in6_addr__bindgen_ty_1"][::core::mem::size_of::<in6_addr__bindgen_ty_1>() - 16usize];
    ["Alignment of in6_addr__bindgen_ty_1"]
        [::core::mem::align_of::<in6_addr__bindgen_ty_1>() - 4usize];
    ["Offset of field: in6_addr__bindgen_ty_1::__u6_addr8"]
        [::core::mem::offset_of!(in6_addr__bindgen_ty_1, __u6_addr8) - 0usize];
    ["Offset of field: in6_addr__bindgen_ty_1::__u6_addr16"]
        [::core::mem::offset_of!(in6_addr__bindgen_ty_1, __u6_addr16) - 0usize];
    ["Offset of field: in6_addr__bindgen_ty_1::__u6_addr32"]
        [::core::mem::offset_of!(in6_addr__bindgen_ty_1, __u6_addr32) - 0usize];
};
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of in6_addr"][::core::mem::size_of::<in6_addr>() - 16usize];
    ["Alignment of in6_addr"][::core::mem::align_of::<in6_addr>() - 4usize];
    ["Offset of field: in6_addr::__in6_u"][::core::mem::offset_of!(in6_addr, __in6_u) - 0usize];
};
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct sockaddr_in {
    pub sin_family: sa_family_t,
    pub sin_port: in_port_t,
    pub sin_addr: in_addr,
    pub sin_zero: [libc::c_uchar; 8usize],
}
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of sockaddr_in"][::core::mem::size_of::<sockaddr_in>() - 16usize];
    ["Alignment of sockaddr_in"][::core::mem::align_of::<sockaddr_in>() - 4usize];
    ["Offset of field: sockaddr_in::sin_family"]
        [::core::mem::offset_of!(sockaddr_in, sin_family) - 0usize];
    ["Offset of field: sockaddr_in::sin_port"]
        [::core::mem::offset_of!(sockaddr_in, sin_port) - 2usize];
    ["Offset of field: sockaddr_in::sin_addr"]
        [::core::mem::offset_of!(sockaddr_in, sin_addr) - 4usize];
    ["Offset of field: sockaddr_in::sin_zero"]
        [::core::mem::offset_of!(sockaddr_in, sin_zero) - 8usize];
};
#[repr(C)]
#[derive(Copy, Clone)]
pub struct sockaddr_in6 {
    pub sin6_family: sa_family_t,
    pub sin6_port: in_port_t,
    pub sin6_flowinfo: u32,
    pub sin6_addr: in6_addr,
    pub sin6_scope_id: u32,
}
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of sockaddr_in6"][::core::mem::size_of::<sockaddr_in6>() - 28usize];
    ["Alignment of sockaddr_in6"][::core::mem::align_of::<sockaddr_in6>() - 4usize];
    ["Offset of field: sockaddr_in6::sin6_family"]
        [::core::mem::offset_of!(sockaddr_in6, sin6_family) - 0usize];
    ["Offset of field: sockaddr_in6::sin6_port"]
        [::core::mem::offset_of!(sockaddr_in6, sin6_port) - 2usize];
    ["Offset of field: sockaddr_in6::sin6_flowinfo"]
        [::core::mem::offset_of!(sockaddr_in6, sin6_flowinfo) - 4usize];
    ["Offset of field: sockaddr_in6::sin6_addr"]
        [::core::mem::offset_of!(sockaddr_in6, sin6_addr) - 8usize];
    ["Offset of field: sockaddr_in6::sin6_scope_id"]
        [::core::mem::offset_of!(sockaddr_in6, sin6_scope_id) - 24usize];
};
pub const rdma_driver_id_RDMA_DRIVER_UNKNOWN: rdma_driver_id = 0;
pub const rdma_driver_id_RDMA_DRIVER_MLX5: rdma_driver_id = 1;
pub const rdma_driver_id_RDMA_DRIVER_MLX4: rdma_driver_id = 2;
pub const rdma_driver_id_RDMA_DRIVER_CXGB3: rdma_driver_id = 3;
pub const rdma_driver_id_RDMA_DRIVER_CXGB4: rdma_driver_id = 4;
pub const rdma_driver_id_RDMA_DRIVER_MTHCA: rdma_driver_id = 5;
pub const rdma_driver_id_RDMA_DRIVER_BNXT_RE: rdma_driver_id = 6;
pub const rdma_driver_id_RDMA_DRIVER_OCRDMA: rdma_driver_id = 7;
pub const rdma_driver_id_RDMA_DRIVER_NES: rdma_driver_id = 8;
pub const rdma_driver_id_RDMA_DRIVER_I40IW: rdma_driver_id = 9;
pub const rdma_driver_id_RDMA_DRIVER_IRDMA: rdma_driver_id = 9;
pub const rdma_driver_id_RDMA_DRIVER_VMW_PVRDMA: rdma_driver_id = 10;
pub const rdma_driver_id_RDMA_DRIVER_QEDR: rdma_driver_id = 11;
pub const rdma_driver_id_RDMA_DRIVER_HNS: rdma_driver_id = 12;
pub const rdma_driver_id_RDMA_DRIVER_USNIC: rdma_driver_id = 13;
pub const rdma_driver_id_RDMA_DRIVER_RXE: rdma_driver_id = 14;
pub const rdma_driver_id_RDMA_DRIVER_HFI1: rdma_driver_id = 15;
pub const rdma_driver_id_RDMA_DRIVER_QIB: rdma_driver_id = 16;
pub const rdma_driver_id_RDMA_DRIVER_EFA: rdma_driver_id = 17;
pub const rdma_driver_id_RDMA_DRIVER_SIW: rdma_driver_id = 18;
pub const rdma_driver_id_RDMA_DRIVER_ERDMA: rdma_driver_id = 19;
pub const rdma_driver_id_RDMA_DRIVER_MANA: rdma_driver_id = 20;
pub type rdma_driver_id = libc::c_uint;
#[repr(C)]
pub struct ibv_sa_path_rec {
    pub dgid: ibv_gid,
    pub sgid: ibv_gid,
    pub dlid: __be16,
    pub slid: __be16,
    pub raw_traffic: libc::c_int,
    pub flow_label: __be32,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub reversible: libc::c_int,
    pub numb_path: u8,
    pub pkey: __be16,
    pub sl: u8,
    pub mtu_selector: u8,
    pub mtu: u8,
    pub rate_selector: u8,
    pub rate: u8,
    pub packet_life_time_selector: u8,
    pub packet_life_time: u8,
    pub preference: u8,
}
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of ibv_sa_path_rec"][::core::mem::size_of::<ibv_sa_path_rec>() - 64usize];
    ["Alignment of ibv_sa_path_rec"][::core::mem::align_of::<ibv_sa_path_rec>() - 8usize];
    ["Offset of field: ibv_sa_path_rec::dgid"]
        [::core::mem::offset_of!(ibv_sa_path_rec, dgid) - 0usize];
    ["Offset of field: ibv_sa_path_rec::sgid"]
        [::core::mem::offset_of!(ibv_sa_path_rec, sgid) - 16usize];
    ["Offset of field: ibv_sa_path_rec::dlid"]
        [::core::mem::offset_of!(ibv_sa_path_rec, dlid) - 32usize];
    ["Offset of field: ibv_sa_path_rec::slid"]
        [::core::mem::offset_of!(ibv_sa_path_rec, slid) - 34usize];
    ["Offset of field: ibv_sa_path_rec::raw_traffic"]
        [::core::mem::offset_of!(ibv_sa_path_rec, raw_traffic) - 36usize];
    ["Offset of field: ibv_sa_path_rec::flow_label"]
        [::core::mem::offset_of!(ibv_sa_path_rec, flow_label) - 40usize];
    ["Offset of field: ibv_sa_path_rec::hop_limit"]
        [::core::mem::offset_of!(ibv_sa_path_rec, hop_limit) - 44usize];
    ["Offset of field: ibv_sa_path_rec::traffic_class"]
        [::core::mem::offset_of!(ibv_sa_path_rec, traffic_class) - 45usize];
    ["Offset of field: ibv_sa_path_rec::reversible"]
        [::core::mem::offset_of!(ibv_sa_path_rec, reversible) - 48usize];
    ["Offset of field: ibv_sa_path_rec::numb_path"]
        [::core::mem::offset_of!(ibv_sa_path_rec, numb_path) - 52usize];
    ["Offset of field: ibv_sa_path_rec::pkey"]
        [::core::mem::offset_of!(ibv_sa_path_rec, pkey) - 54usize];
    ["Offset of field: ibv_sa_path_rec::sl"]
        [::core::mem::offset_of!(ibv_sa_path_rec, sl) - 56usize];
    ["Offset of field: ibv_sa_path_rec::mtu_selector"]
        [::core::mem::offset_of!(ibv_sa_path_rec, mtu_selector) - 57usize];
    ["Offset of field: ibv_sa_path_rec::mtu"]
        [::core::mem::offset_of!(ibv_sa_path_rec, mtu) - 58usize];
    ["Offset of field: ibv_sa_path_rec::rate_selector"]
        [::core::mem::offset_of!(ibv_sa_path_rec, rate_selector) - 59usize];
    ["Offset of field: ibv_sa_path_rec::rate"]
        [::core::mem::offset_of!(ibv_sa_path_rec, rate) - 60usize];
    ["Offset of field: ibv_sa_path_rec::packet_life_time_selector"]
        [::core::mem::offset_of!(ibv_sa_path_rec, packet_life_time_selector) - 61usize];
    ["Offset of field: ibv_sa_path_rec::packet_life_time"]
        [::core::mem::offset_of!(ibv_sa_path_rec, packet_life_time) - 62usize];
    ["Offset of field: ibv_sa_path_rec::preference"]
        [::core::mem::offset_of!(ibv_sa_path_rec, preference) - 63usize];
};
#[repr(C)]
pub struct ibv_sa_mcmember_rec {
    pub mgid: ibv_gid,
    pub port_gid: ibv_gid,
    pub qkey: u32,
    pub mlid: u16,
    pub mtu_selector: u8,
    pub mtu: u8,
    pub traffic_class: u8,
    pub pkey: u16,
    pub rate_selector: u8,
    pub rate: u8,
    pub packet_life_time_selector: u8,
    pub packet_life_time: u8,
    pub sl: u8,
    pub flow_label: u32,
    pub hop_limit: u8,
    pub scope: u8,
    pub join_state: u8,
    pub proxy_join: libc::c_int,
}
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of ibv_sa_mcmember_rec"][::core::mem::size_of::<ibv_sa_mcmember_rec>() - 64usize];
    ["Alignment of ibv_sa_mcmember_rec"][::core::mem::align_of::<ibv_sa_mcmember_rec>() - 8usize];
    ["Offset of field: ibv_sa_mcmember_rec::mgid"]
        [::core::mem::offset_of!(ibv_sa_mcmember_rec, mgid) - 0usize];
    ["Offset of field: ibv_sa_mcmember_rec::port_gid"]
        [::core::mem::offset_of!(ibv_sa_mcmember_rec, port_gid) - 16usize];
    ["Offset of field: ibv_sa_mcmember_rec::qkey"]
        [::core::mem::offset_of!(ibv_sa_mcmember_rec, qkey) - 32usize];
    ["Offset of field: ibv_sa_mcmember_rec::mlid"]
        [::core::mem::offset_of!(ibv_sa_mcmember_rec, mlid) - 36usize];
    ["Offset of field: ibv_sa_mcmember_rec::mtu_selector"]
        [::core::mem::offset_of!(ibv_sa_mcmember_rec, mtu_selector) - 38usize];
    ["Offset of field: ibv_sa_mcmember_rec::mtu"]
        [::core::mem::offset_of!(ibv_sa_mcmember_rec, mtu) - 39usize];
    ["Offset of field: ibv_sa_mcmember_rec::traffic_class"]
        [::core::mem::offset_of!(ibv_sa_mcmember_rec, traffic_class) - 40usize];
    ["Offset of field: ibv_sa_mcmember_rec::pkey"]
        [::core::mem::offset_of!(ibv_sa_mcmember_rec, pkey) - 42usize];
    ["Offset of field: ibv_sa_mcmember_rec::rate_selector"]
        [::core::mem::offset_of!(ibv_sa_mcmember_rec, rate_selector) - 44usize];
    ["Offset of field: ibv_sa_mcmember_rec::rate"]
        [::core::mem::offset_of!(ibv_sa_mcmember_rec, rate) - 45usize];
    ["Offset of field: ibv_sa_mcmember_rec::packet_life_time_selector"]
        [::core::mem::offset_of!(ibv_sa_mcmember_rec, packet_life_time_selector) - 46usize];
    ["Offset of field: ibv_sa_mcmember_rec::packet_life_time"]
        [::core::mem::offset_of!(ibv_sa_mcmember_rec, packet_life_time) - 47usize];
    ["Offset of field: ibv_sa_mcmember_rec::sl"]
        [::core::mem::offset_of!(ibv_sa_mcmember_rec, sl) - 48usize];
    ["Offset of field: ibv_sa_mcmember_rec::flow_label"]
        [::core::mem::offset_of!(ibv_sa_mcmember_rec, flow_label) - 52usize];
    ["Offset of field: ibv_sa_mcmember_rec::hop_limit"]
        [::core::mem::offset_of!(ibv_sa_mcmember_rec, hop_limit) - 56usize];
    ["Offset of field: ibv_sa_mcmember_rec::scope"]
        [::core::mem::offset_of!(ibv_sa_mcmember_rec, scope) - 57usize];
    ["Offset of field: ibv_sa_mcmember_rec::join_state"]
        [::core::mem::offset_of!(ibv_sa_mcmember_rec, join_state) - 58usize];
    ["Offset of field: ibv_sa_mcmember_rec::proxy_join"]
        [::core::mem::offset_of!(ibv_sa_mcmember_rec, proxy_join) - 60usize];
};
#[repr(C)]
pub struct ibv_sa_service_rec {
    pub id: u64,
    pub gid: ibv_gid,
    pub pkey: u16,
    pub lease: u32,
    pub key: [u8; 16usize],
    pub name: [u8; 64usize],
    pub data8: [u8; 16usize],
    pub data16: [u16; 8usize],
    pub data32: [u32; 4usize],
    pub data64: [u64; 2usize],
}
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of ibv_sa_service_rec"][::core::mem::size_of::<ibv_sa_service_rec>() - 176usize];
    ["Alignment of ibv_sa_service_rec"][::core::mem::align_of::<ibv_sa_service_rec>() - 8usize];
    ["Offset of field: ibv_sa_service_rec::id"]
        [::core::mem::offset_of!(ibv_sa_service_rec, id) - 0usize];
    ["Offset of field: ibv_sa_service_rec::gid"]
        [::core::mem::offset_of!(ibv_sa_service_rec, gid) - 8usize];
    ["Offset of field: ibv_sa_service_rec::pkey"]
        [::core::mem::offset_of!(ibv_sa_service_rec, pkey) - 24usize];
    ["Offset of field: ibv_sa_service_rec::lease"]
        [::core::mem::offset_of!(ibv_sa_service_rec, lease) - 28usize];
    ["Offset of field: ibv_sa_service_rec::key"]
        [::core::mem::offset_of!(ibv_sa_service_rec, key) - 32usize];
    ["Offset of field: ibv_sa_service_rec::name"]
        [::core::mem::offset_of!(ibv_sa_service_rec, name) - 48usize];
    ["Offset of field: ibv_sa_service_rec::data8"]
        [::core::mem::offset_of!(ibv_sa_service_rec, data8) - 112usize];
    ["Offset of field: ibv_sa_service_rec::data16"]
        [::core::mem::offset_of!(ibv_sa_service_rec, data16) - 128usize];
    ["Offset of field: ibv_sa_service_rec::data32"]
        [::core::mem::offset_of!(ibv_sa_service_rec, data32) - 144usize];
    ["Offset of field: ibv_sa_service_rec::data64"]
        [::core::mem::offset_of!(ibv_sa_service_rec, data64) - 160usize];
};
#[repr(C)]
pub struct ibv_path_record {
    pub service_id: __be64,
    pub dgid: ibv_gid,
    pub sgid: ibv_gid,
    pub dlid: __be16,
    pub slid: __be16,
    pub flowlabel_hoplimit: __be32,
    pub tclass: u8,
    pub reversible_numpath: u8,
    pub pkey: __be16,
    pub qosclass_sl: __be16,
    pub mtu: u8,
    pub rate: u8,
    pub packetlifetime: u8,
    pub preference: u8,
    pub reserved: [u8; 6usize],
}
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of ibv_path_record"][::core::mem::size_of::<ibv_path_record>() - 64usize];
    ["Alignment of ibv_path_record"][::core::mem::align_of::<ibv_path_record>() - 8usize];
    ["Offset of field: ibv_path_record::service_id"]
        [::core::mem::offset_of!(ibv_path_record, service_id) - 0usize];
    ["Offset of field: ibv_path_record::dgid"]
        [::core::mem::offset_of!(ibv_path_record, dgid) - 8usize];
    ["Offset of field: ibv_path_record::sgid"]
        [::core::mem::offset_of!(ibv_path_record, sgid) - 24usize];
    ["Offset of field: ibv_path_record::dlid"]
        [::core::mem::offset_of!(ibv_path_record, dlid) - 40usize];
    ["Offset of field: ibv_path_record::slid"]
        [::core::mem::offset_of!(ibv_path_record, slid) - 42usize];
    ["Offset of field: ibv_path_record::flowlabel_hoplimit"]
        [::core::mem::offset_of!(ibv_path_record, flowlabel_hoplimit) - 44usize];
    ["Offset of field: ibv_path_record::tclass"]
        [::core::mem::offset_of!(ibv_path_record, tclass) - 48usize];
    ["Offset of field: ibv_path_record::reversible_numpath"]
        [::core::mem::offset_of!(ibv_path_record, reversible_numpath) - 49usize];
    ["Offset of field: ibv_path_record::pkey"]
        [::core::mem::offset_of!(ibv_path_record, pkey) - 50usize];
    ["Offset of field: ibv_path_record::qosclass_sl"]
        [::core::mem::offset_of!(ibv_path_record, qosclass_sl) - 52usize];
    ["Offset of field: ibv_path_record::mtu"]
        [::core::mem::offset_of!(ibv_path_record, mtu) - 54usize];
    ["Offset of field: ibv_path_record::rate"]
        [::core::mem::offset_of!(ibv_path_record, rate) - 55usize];
    ["Offset of field: ibv_path_record::packetlifetime"]
        [::core::mem::offset_of!(ibv_path_record, packetlifetime) - 56usize];
    ["Offset of field: ibv_path_record::preference"]
        [::core::mem::offset_of!(ibv_path_record, preference) - 57usize];
    ["Offset of field: ibv_path_record::reserved"]
        [::core::mem::offset_of!(ibv_path_record, reserved) - 58usize];
};
#[repr(C)]
pub struct ibv_path_data {
    pub flags: u32,
    pub reserved: u32,
    pub path: ibv_path_record,
}
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of ibv_path_data"][::core::mem::size_of::<ibv_path_data>() - 72usize];
    ["Alignment of ibv_path_data"][::core::mem::align_of::<ibv_path_data>() - 8usize];
    ["Offset of field: ibv_path_data::flags"]
        [::core::mem::offset_of!(ibv_path_data, flags) - 0usize];
    ["Offset of field: ibv_path_data::reserved"]
        [::core::mem::offset_of!(ibv_path_data, reserved) - 4usize];
    ["Offset of field: ibv_path_data::path"][::core::mem::offset_of!(ibv_path_data, path) - 8usize];
};
pub const rdma_cm_event_type_RDMA_CM_EVENT_ADDR_RESOLVED: rdma_cm_event_type = 0;
pub const rdma_cm_event_type_RDMA_CM_EVENT_ADDR_ERROR: rdma_cm_event_type = 1;
pub const rdma_cm_event_type_RDMA_CM_EVENT_ROUTE_RESOLVED: rdma_cm_event_type = 2;
pub const rdma_cm_event_type_RDMA_CM_EVENT_ROUTE_ERROR: rdma_cm_event_type = 3;
pub const rdma_cm_event_type_RDMA_CM_EVENT_CONNECT_REQUEST: rdma_cm_event_type = 4;
pub const rdma_cm_event_type_RDMA_CM_EVENT_CONNECT_RESPONSE: rdma_cm_event_type = 5;
pub const rdma_cm_event_type_RDMA_CM_EVENT_CONNECT_ERROR: rdma_cm_event_type = 6;
pub const rdma_cm_event_type_RDMA_CM_EVENT_UNREACHABLE: rdma_cm_event_type = 7;
pub const rdma_cm_event_type_RDMA_CM_EVENT_REJECTED: rdma_cm_event_type = 8;
pub const rdma_cm_event_type_RDMA_CM_EVENT_ESTABLISHED: rdma_cm_event_type = 9;
pub const rdma_cm_event_type_RDMA_CM_EVENT_DISCONNECTED: rdma_cm_event_type = 10;
pub const rdma_cm_event_type_RDMA_CM_EVENT_DEVICE_REMOVAL: rdma_cm_event_type = 11;
pub const rdma_cm_event_type_RDMA_CM_EVENT_MULTICAST_JOIN: rdma_cm_event_type = 12;
pub const rdma_cm_event_type_RDMA_CM_EVENT_MULTICAST_ERROR: rdma_cm_event_type = 13;
pub const rdma_cm_event_type_RDMA_CM_EVENT_ADDR_CHANGE: rdma_cm_event_type = 14;
pub const rdma_cm_event_type_RDMA_CM_EVENT_TIMEWAIT_EXIT: rdma_cm_event_type = 15;
pub type rdma_cm_event_type = libc::c_uint;
pub const rdma_port_space_RDMA_PS_IPOIB: rdma_port_space = 2;
pub const rdma_port_space_RDMA_PS_TCP: rdma_port_space = 262;
pub const rdma_port_space_RDMA_PS_UDP: rdma_port_space = 273;
pub const rdma_port_space_RDMA_PS_IB: rdma_port_space = 319;
pub type rdma_port_space = libc::c_uint;
#[repr(C)]
pub struct rdma_ib_addr {
    pub sgid: ibv_gid,
    pub dgid: ibv_gid,
    pub pkey: __be16,
}
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of rdma_ib_addr"][::core::mem::size_of::<rdma_ib_addr>() - 40usize];
    ["Alignment of rdma_ib_addr"][::core::mem::align_of::<rdma_ib_addr>() - 8usize];
    ["Offset of field: rdma_ib_addr::sgid"][::core::mem::offset_of!(rdma_ib_addr, sgid) - 0usize];
    ["Offset of field: rdma_ib_addr::dgid"][::core::mem::offset_of!(rdma_ib_addr, dgid) - 16usize];
    ["Offset of field: rdma_ib_addr::pkey"][::core::mem::offset_of!(rdma_ib_addr, pkey) - 32usize];
};
#[repr(C)]
pub struct rdma_addr {
    pub __bindgen_anon_1: rdma_addr__bindgen_ty_1,
    pub __bindgen_anon_2: rdma_addr__bindgen_ty_2,
    pub addr: rdma_addr__bindgen_ty_3,
}
#[repr(C)]
#[derive(Copy, Clone)]
pub union rdma_addr__bindgen_ty_1 {
    pub src_addr: sockaddr,
    pub src_sin: sockaddr_in,
    pub src_sin6: sockaddr_in6,
    pub src_storage: sockaddr_storage,
}
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of rdma_addr__bindgen_ty_1"]
        [::core::mem::size_of::<rdma_addr__bindgen_ty_1>() - 128usize];
    ["Alignment of rdma_addr__bindgen_ty_1"]
        [::core::mem::align_of::<rdma_addr__bindgen_ty_1>() - 8usize];
    ["Offset of field: rdma_addr__bindgen_ty_1::src_addr"]
        [::core::mem::offset_of!(rdma_addr__bindgen_ty_1, src_addr) - 0usize];
    ["Offset of field: rdma_addr__bindgen_ty_1::src_sin"]
        [::core::mem::offset_of!(rdma_addr__bindgen_ty_1, src_sin) - 0usize];
    ["Offset of field: rdma_addr__bindgen_ty_1::src_sin6"]
        [::core::mem::offset_of!(rdma_addr__bindgen_ty_1, src_sin6) - 0usize];
    ["Offset of field: rdma_addr__bindgen_ty_1::src_storage"]
        [::core::mem::offset_of!(rdma_addr__bindgen_ty_1, src_storage) - 0usize];
};
#[repr(C)]
#[derive(Copy, Clone)]
pub union rdma_addr__bindgen_ty_2 {
    pub dst_addr: sockaddr,
    pub dst_sin: sockaddr_in,
    pub dst_sin6: sockaddr_in6,
    pub dst_storage: sockaddr_storage,
}
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of rdma_addr__bindgen_ty_2"]
        [::core::mem::size_of::<rdma_addr__bindgen_ty_2>() - 128usize];
    ["Alignment of rdma_addr__bindgen_ty_2"]
        [::core::mem::align_of::<rdma_addr__bindgen_ty_2>() - 8usize];
    ["Offset of field: rdma_addr__bindgen_ty_2::dst_addr"]
        [::core::mem::offset_of!(rdma_addr__bindgen_ty_2, dst_addr) - 0usize];
    ["Offset of field: rdma_addr__bindgen_ty_2::dst_sin"]
        [::core::mem::offset_of!(rdma_addr__bindgen_ty_2, dst_sin) - 0usize];
    ["Offset of field: rdma_addr__bindgen_ty_2::dst_sin6"]
        [::core::mem::offset_of!(rdma_addr__bindgen_ty_2, dst_sin6) - 0usize];
    ["Offset of field: rdma_addr__bindgen_ty_2::dst_storage"]
        [::core::mem::offset_of!(rdma_addr__bindgen_ty_2, dst_storage) - 0usize];
};
#[repr(C)]
pub struct rdma_addr__bindgen_ty_3 {
    pub ibaddr: __BindgenUnionField<rdma_ib_addr>,
    pub bindgen_union_field: __BindgenOpaqueArray8<[u8; 40usize]>,
}
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of rdma_addr__bindgen_ty_3"]
        [::core::mem::size_of::<rdma_addr__bindgen_ty_3>() - 40usize];
    ["Alignment of rdma_addr__bindgen_ty_3"]
        [::core::mem::align_of::<rdma_addr__bindgen_ty_3>() - 8usize];
    ["Offset of field: rdma_addr__bindgen_ty_3::ibaddr"]
        [::core::mem::offset_of!(rdma_addr__bindgen_ty_3, ibaddr) - 0usize];
};
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of rdma_addr"][::core::mem::size_of::<rdma_addr>() - 296usize];
    ["Alignment of rdma_addr"][::core::mem::align_of::<rdma_addr>() - 8usize];
    ["Offset of field: rdma_addr::addr"][::core::mem::offset_of!(rdma_addr, addr) - 256usize];
};
#[repr(C)]
pub struct rdma_route {
    pub addr: rdma_addr,
    pub path_rec: *mut ibv_sa_path_rec,
    pub num_paths: libc::c_int,
}
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of rdma_route"][::core::mem::size_of::<rdma_route>() - 312usize];
    ["Alignment of rdma_route"][::core::mem::align_of::<rdma_route>() - 8usize];
    ["Offset of field: rdma_route::addr"][::core::mem::offset_of!(rdma_route, addr) - 0usize];
    ["Offset of field: rdma_route::path_rec"]
        [::core::mem::offset_of!(rdma_route, path_rec) - 296usize];
    ["Offset of field: rdma_route::num_paths"]
        [::core::mem::offset_of!(rdma_route, num_paths) - 304usize];
};
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct rdma_event_channel {
    pub fd: libc::c_int,
}
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of rdma_event_channel"][::core::mem::size_of::<rdma_event_channel>() - 4usize];
    ["Alignment of rdma_event_channel"][::core::mem::align_of::<rdma_event_channel>() - 4usize];
    ["Offset of field: rdma_event_channel::fd"]
        [::core::mem::offset_of!(rdma_event_channel, fd) - 0usize];
};
#[repr(C)]
pub struct rdma_cm_id {
    pub verbs: *mut ibv_context,
    pub channel: *mut rdma_event_channel,
    pub context: *mut libc::c_void,
    pub qp: *mut ibv_qp,
    pub route: rdma_route,
    pub ps: rdma_port_space,
    pub port_num: u8,
    pub event: *mut rdma_cm_event,
    pub send_cq_channel: *mut ibv_comp_channel,
    pub send_cq: *mut ibv_cq,
    pub recv_cq_channel: *mut ibv_comp_channel,
    pub recv_cq: *mut ibv_cq,
    pub srq: *mut ibv_srq,
    pub pd: *mut ibv_pd,
    pub qp_type: ibv_qp_type,
}
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of rdma_cm_id"][::core::mem::size_of::<rdma_cm_id>() - 416usize];
    ["Alignment of rdma_cm_id"][::core::mem::align_of::<rdma_cm_id>() - 8usize];
    ["Offset of field: rdma_cm_id::verbs"][::core::mem::offset_of!(rdma_cm_id, verbs) - 0usize];
    ["Offset of field: rdma_cm_id::channel"][::core::mem::offset_of!(rdma_cm_id, channel) - 8usize];
    ["Offset of field: rdma_cm_id::context"]
        [::core::mem::offset_of!(rdma_cm_id, context) - 16usize];
    ["Offset of field: rdma_cm_id::qp"][::core::mem::offset_of!(rdma_cm_id, qp) - 24usize];
    ["Offset of field: rdma_cm_id::route"][::core::mem::offset_of!(rdma_cm_id, route) - 32usize];
    ["Offset of field: rdma_cm_id::ps"][::core::mem::offset_of!(rdma_cm_id, ps) - 344usize];
    ["Offset of field: rdma_cm_id::port_num"]
        [::core::mem::offset_of!(rdma_cm_id, port_num) - 348usize];
    ["Offset of field: rdma_cm_id::event"][::core::mem::offset_of!(rdma_cm_id, event) - 352usize];
    ["Offset of field: rdma_cm_id::send_cq_channel"]
        [::core::mem::offset_of!(rdma_cm_id, send_cq_channel) - 360usize];
    ["Offset of field: rdma_cm_id::send_cq"]
        [::core::mem::offset_of!(rdma_cm_id, send_cq) - 368usize];
    ["Offset of field: rdma_cm_id::recv_cq_channel"]
        [::core::mem::offset_of!(rdma_cm_id, recv_cq_channel) - 376usize];
    ["Offset of field: rdma_cm_id::recv_cq"]
        [::core::mem::offset_of!(rdma_cm_id, recv_cq) - 384usize];
    ["Offset of field: rdma_cm_id::srq"][::core::mem::offset_of!(rdma_cm_id, srq) - 392usize];
    ["Offset of field: rdma_cm_id::pd"][::core::mem::offset_of!(rdma_cm_id, pd) - 400usize];
    ["Offset of field: rdma_cm_id::qp_type"]
        [::core::mem::offset_of!(rdma_cm_id, qp_type) - 408usize];
};
pub const RDMA_MAX_RESP_RES: _bindgen_ty_24 = 255;
pub const RDMA_MAX_INIT_DEPTH: _bindgen_ty_24 = 255;
pub type _bindgen_ty_24 = libc::c_uint;
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct rdma_conn_param {
    pub private_data: *const libc::c_void,
    pub private_data_len: u8,
    pub responder_resources: u8,
    pub initiator_depth: u8,
    pub flow_control: u8,
    pub retry_count: u8,
    pub rnr_retry_count: u8,
    pub srq: u8,
    pub qp_num: u32,
}
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of rdma_conn_param"][::core::mem::size_of::<rdma_conn_param>() - 24usize];
    ["Alignment of rdma_conn_param"][::core::mem::align_of::<rdma_conn_param>() - 8usize];
    ["Offset of field: rdma_conn_param::private_data"]
        [::core::mem::offset_of!(rdma_conn_param, private_data) - 0usize];
    ["Offset of field: rdma_conn_param::private_data_len"]
        [::core::mem::offset_of!(rdma_conn_param, private_data_len) - 8usize];
    ["Offset of field: rdma_conn_param::responder_resources"]
        [::core::mem::offset_of!(rdma_conn_param, responder_resources) - 9usize];
    ["Offset of field: rdma_conn_param::initiator_depth"]
        [::core::mem::offset_of!(rdma_conn_param, initiator_depth) - 10usize];
    ["Offset of field: rdma_conn_param::flow_control"]
        [::core::mem::offset_of!(rdma_conn_param, flow_control) - 11usize];
    ["Offset of field: rdma_conn_param::retry_count"]
        [::core::mem::offset_of!(rdma_conn_param, retry_count) - 12usize];
    ["Offset of field: rdma_conn_param::rnr_retry_count"]
        [::core::mem::offset_of!(rdma_conn_param, rnr_retry_count) - 13usize];
    ["Offset of field: rdma_conn_param::srq"]
        [::core::mem::offset_of!(rdma_conn_param, srq) - 14usize];
    ["Offset of field: rdma_conn_param::qp_num"]
        [::core::mem::offset_of!(rdma_conn_param, qp_num) - 16usize];
};
#[repr(C)]
pub struct rdma_ud_param {
    pub private_data: *const libc::c_void,
    pub private_data_len: u8,
    pub ah_attr: ibv_ah_attr,
    pub qp_num: u32,
    pub qkey: u32,
}
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of rdma_ud_param"][::core::mem::size_of::<rdma_ud_param>() - 56usize];
    ["Alignment of rdma_ud_param"][::core::mem::align_of::<rdma_ud_param>() - 8usize];
    ["Offset of field: rdma_ud_param::private_data"]
        [::core::mem::offset_of!(rdma_ud_param, private_data) - 0usize];
    ["Offset of field: rdma_ud_param::private_data_len"]
        [::core::mem::offset_of!(rdma_ud_param, private_data_len) - 8usize];
    ["Offset of field: rdma_ud_param::ah_attr"]
        [::core::mem::offset_of!(rdma_ud_param, ah_attr) - 16usize];
    ["Offset of field: rdma_ud_param::qp_num"]
        [::core::mem::offset_of!(rdma_ud_param, qp_num) - 48usize];
    ["Offset of field: rdma_ud_param::qkey"]
        [::core::mem::offset_of!(rdma_ud_param, qkey) - 52usize];
};
#[repr(C)]
pub struct rdma_cm_event {
    pub id: *mut rdma_cm_id,
    pub listen_id: *mut rdma_cm_id,
    pub event: rdma_cm_event_type,
    pub status: libc::c_int,
    pub param: rdma_cm_event__bindgen_ty_1,
}
#[repr(C)]
pub struct rdma_cm_event__bindgen_ty_1 {
    pub conn: __BindgenUnionField<rdma_conn_param>,
    pub ud: __BindgenUnionField<rdma_ud_param>,
    pub bindgen_union_field: __BindgenOpaqueArray8<[u8; 56usize]>,
}
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of rdma_cm_event__bindgen_ty_1"]
        [::core::mem::size_of::<rdma_cm_event__bindgen_ty_1>() - 56usize];
    ["Alignment of rdma_cm_event__bindgen_ty_1"]
        [::core::mem::align_of::<rdma_cm_event__bindgen_ty_1>() - 8usize];
    ["Offset of field: rdma_cm_event__bindgen_ty_1::conn"]
        [::core::mem::offset_of!(rdma_cm_event__bindgen_ty_1, conn) - 0usize];
    ["Offset of field: rdma_cm_event__bindgen_ty_1::ud"]
        [::core::mem::offset_of!(rdma_cm_event__bindgen_ty_1, ud) - 0usize];
};
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of rdma_cm_event"][::core::mem::size_of::<rdma_cm_event>() - 80usize];
    ["Alignment of rdma_cm_event"][::core::mem::align_of::<rdma_cm_event>() - 8usize];
    ["Offset of field: rdma_cm_event::id"][::core::mem::offset_of!(rdma_cm_event, id) - 0usize];
    ["Offset of field: rdma_cm_event::listen_id"]
        [::core::mem::offset_of!(rdma_cm_event, listen_id) - 8usize];
    ["Offset of field: rdma_cm_event::event"]
        [::core::mem::offset_of!(rdma_cm_event, event) - 16usize];
    ["Offset of field: rdma_cm_event::status"]
        [::core::mem::offset_of!(rdma_cm_event, status) - 20usize];
    ["Offset of field: rdma_cm_event::param"]
        [::core::mem::offset_of!(rdma_cm_event, param) - 24usize];
};
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct rdma_addrinfo {
    pub ai_flags: libc::c_int,
    pub ai_family: libc::c_int,
    pub ai_qp_type: libc::c_int,
    pub ai_port_space: libc::c_int,
    pub ai_src_len: socklen_t,
    pub ai_dst_len: socklen_t,
    pub ai_src_addr: *mut sockaddr,
    pub ai_dst_addr: *mut sockaddr,
    pub ai_src_canonname: *mut libc::c_char,
    pub ai_dst_canonname: *mut libc::c_char,
    pub ai_route_len: usize,
    pub ai_route: *mut libc::c_void,
    pub ai_connect_len: usize,
    pub ai_connect: *mut libc::c_void,
    pub ai_next: *mut rdma_addrinfo,
}
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of rdma_addrinfo"][::core::mem::size_of::<rdma_addrinfo>() - 96usize];
    ["Alignment of rdma_addrinfo"][::core::mem::align_of::<rdma_addrinfo>() - 8usize];
    ["Offset of field: rdma_addrinfo::ai_flags"]
        [::core::mem::offset_of!(rdma_addrinfo, ai_flags) - 0usize];
    ["Offset of field: rdma_addrinfo::ai_family"]
        [::core::mem::offset_of!(rdma_addrinfo, ai_family) - 4usize];
    ["Offset of field: rdma_addrinfo::ai_qp_type"]
        [::core::mem::offset_of!(rdma_addrinfo, ai_qp_type) - 8usize];
    ["Offset of field: rdma_addrinfo::ai_port_space"]
        [::core::mem::offset_of!(rdma_addrinfo, ai_port_space) - 12usize];
    ["Offset of field: rdma_addrinfo::ai_src_len"]
        [::core::mem::offset_of!(rdma_addrinfo, ai_src_len) - 16usize];
    ["Offset of field: rdma_addrinfo::ai_dst_len"]
        [::core::mem::offset_of!(rdma_addrinfo, ai_dst_len) - 20usize];
    ["Offset of field: rdma_addrinfo::ai_src_addr"]
        [::core::mem::offset_of!(rdma_addrinfo, ai_src_addr) - 24usize];
    ["Offset of field: rdma_addrinfo::ai_dst_addr"]
        [::core::mem::offset_of!(rdma_addrinfo, ai_dst_addr) - 32usize];
    ["Offset of field: rdma_addrinfo::ai_src_canonname"]
        [::core::mem::offset_of!(rdma_addrinfo, ai_src_canonname) - 40usize];
    ["Offset of field: rdma_addrinfo::ai_dst_canonname"]
        [::core::mem::offset_of!(rdma_addrinfo, ai_dst_canonname) - 48usize];
    ["Offset of field: rdma_addrinfo::ai_route_len"]
        [::core::mem::offset_of!(rdma_addrinfo, ai_route_len) - 56usize];
    ["Offset of field: rdma_addrinfo::ai_route"]
        [::core::mem::offset_of!(rdma_addrinfo, ai_route) - 64usize];
    ["Offset of field: rdma_addrinfo::ai_connect_len"]
        [::core::mem::offset_of!(rdma_addrinfo, ai_connect_len) - 72usize];
    ["Offset of field: rdma_addrinfo::ai_connect"]
        [::core::mem::offset_of!(rdma_addrinfo, ai_connect) - 80usize];
    ["Offset of field: rdma_addrinfo::ai_next"]
        [::core::mem::offset_of!(rdma_addrinfo, ai_next) - 88usize];
};
pub const rdma_cm_join_mc_attr_mask_RDMA_CM_JOIN_MC_ATTR_ADDRESS: rdma_cm_join_mc_attr_mask = 1;
pub const rdma_cm_join_mc_attr_mask_RDMA_CM_JOIN_MC_ATTR_JOIN_FLAGS: rdma_cm_join_mc_attr_mask = 2;
pub const rdma_cm_join_mc_attr_mask_RDMA_CM_JOIN_MC_ATTR_RESERVED: rdma_cm_join_mc_attr_mask = 4;
pub type rdma_cm_join_mc_attr_mask = libc::c_uint;
pub const rdma_cm_mc_join_flags_RDMA_MC_JOIN_FLAG_FULLMEMBER: rdma_cm_mc_join_flags = 0;
pub const rdma_cm_mc_join_flags_RDMA_MC_JOIN_FLAG_SENDONLY_FULLMEMBER: rdma_cm_mc_join_flags = 1;
pub const rdma_cm_mc_join_flags_RDMA_MC_JOIN_FLAG_RESERVED: rdma_cm_mc_join_flags = 2;
pub type rdma_cm_mc_join_flags = libc::c_uint;
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct rdma_cm_join_mc_attr_ex {
    pub comp_mask: u32,
    pub join_flags: u32,
    pub addr: *mut sockaddr,
}
#[allow(clippy::unnecessary_operation, clippy::identity_op)]
const _: () = {
    ["Size of rdma_cm_join_mc_attr_ex"]
        [::core::mem::size_of::<rdma_cm_join_mc_attr_ex>() - 16usize];
    ["Alignment of rdma_cm_join_mc_attr_ex"]
        [::core::mem::align_of::<rdma_cm_join_mc_attr_ex>() - 8usize];
    ["Offset of field: rdma_cm_join_mc_attr_ex::comp_mask"]
        [::core::mem::offset_of!(rdma_cm_join_mc_attr_ex, comp_mask) - 0usize];
    ["Offset of field: rdma_cm_join_mc_attr_ex::join_flags"]
        [::core::mem::offset_of!(rdma_cm_join_mc_attr_ex, join_flags) - 4usize];
    ["Offset of field: rdma_cm_join_mc_attr_ex::addr"]
        [::core::mem::offset_of!(rdma_cm_join_mc_attr_ex, addr) - 8usize];
};
pub const RDMA_OPTION_ID: _bindgen_ty_25 = 0;
pub const RDMA_OPTION_IB: _bindgen_ty_25 = 1;
pub type _bindgen_ty_25 = libc::c_uint;
pub const RDMA_OPTION_ID_TOS: _bindgen_ty_26 = 0;
pub const RDMA_OPTION_ID_REUSEADDR: _bindgen_ty_26 = 1;
pub const RDMA_OPTION_ID_AFONLY: _bindgen_ty_26 = 2;
pub const RDMA_OPTION_ID_ACK_TIMEOUT: _bindgen_ty_26 = 3;
pub type _bindgen_ty_26 = libc::c_uint;
pub const RDMA_OPTION_IB_PATH: _bindgen_ty_27 = 1;
pub type _bindgen_ty_27 = libc::c_uint;
