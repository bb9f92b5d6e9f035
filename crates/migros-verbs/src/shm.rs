//! Memory shared with the daemon: the crate's only `unsafe` code.
//!
//! A [`ShmBuf`] is a page-aligned, zeroed allocation of this process that the
//! daemon reads and writes from outside (process_vm_readv/writev), like a
//! NIC's DMA. The Rust compiler cannot see those accesses, so the memory is
//! never reached through `&`/`&mut` references that would promise it does not
//! change; every access goes through raw pointers:
//! - bytes only this process writes and the daemon only reads (send and
//!   receive WQEs) are copied in with [`ShmBuf::write`], which takes
//!   `&mut self` so two threads of this process never write at once;
//! - bytes the daemon writes (CQEs) are read with [`ShmBuf::read_volatile`]
//!   after their phase byte, read with [`ShmBuf::load_u8`], showed they are
//!   complete (the caller puts an `Acquire` fence between the two);
//! - control words (consumer indices) are `u32`s reached with atomic loads
//!   and stores ([`ShmBuf::load_u32`], [`ShmBuf::store_u32`]) at 4-byte
//!   aligned offsets.
//!
//! Invariants: `ptr` is the start of a live allocation of `layout` (size a
//! multiple of [`PAGE`], alignment [`PAGE`]) owned by this value until it is
//! dropped or leaked; every access is bounds-checked against `len`, the
//! size the caller asked for (≤ `layout.size()`).
//!
//! Memory regions ([`crate::Mr`]) also hand out slices
//! ([`ShmBuf::bytes`], [`ShmBuf::bytes_mut`]): their contract (documented on
//! `Mr::as_slice`) is that the caller orders its accesses with completions,
//! as with any RDMA buffer.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};

/// Alignment and granularity of shared allocations.
pub(crate) const PAGE: usize = 4096;

/// A page-aligned, zeroed allocation shared with the daemon.
pub(crate) struct ShmBuf {
    ptr: NonNull<u8>,
    len: usize,
    layout: Layout,
    /// Do not free on drop: the daemon may still write here.
    leaked: bool,
}

// SAFETY: `ShmBuf` owns its allocation (like a `Box<[u8]>`); byte writes need
// `&mut self`, and what `&self` allows (volatile reads, atomic words) is
// safe to do from several threads.
unsafe impl Send for ShmBuf {}
// SAFETY: see `Send`: through `&self` only reads and atomic operations happen.
unsafe impl Sync for ShmBuf {}

impl ShmBuf {
    /// Allocates `len` zeroed bytes (at least one page, whole pages), or
    /// `None` when `len` is too large to allocate.
    pub(crate) fn zeroed(len: usize) -> Option<ShmBuf> {
        let size = len.max(1).checked_next_multiple_of(PAGE)?;
        let layout = Layout::from_size_align(size, PAGE).ok()?;
        // SAFETY: `layout` has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) })?;
        Some(ShmBuf {
            ptr,
            len,
            layout,
            leaked: false,
        })
    }

    /// The address the daemon is told.
    pub(crate) fn addr(&self) -> u64 {
        self.ptr.as_ptr() as usize as u64
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Keeps the memory allocated for the life of the process: used when the
    /// daemon did not confirm it stopped using it.
    pub(crate) fn leak_on_drop(&mut self) {
        self.leaked = true;
    }

    /// Copies `src` to `offset` (memory the daemon only reads).
    ///
    /// Panics if the range is out of bounds (a bug in this crate).
    pub(crate) fn write(&mut self, offset: usize, src: &[u8]) {
        self.check(offset, src.len());
        // SAFETY: in bounds (checked); the source is a distinct Rust slice,
        // so the ranges cannot overlap; `&mut self` excludes other writers
        // in this process, and the daemon only reads these bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr.as_ptr().add(offset), src.len());
        }
    }

    /// Reads `N` bytes at `offset` with a volatile load (memory the daemon writes).
    ///
    /// Panics if the range is out of bounds (a bug in this crate).
    pub(crate) fn read_volatile<const N: usize>(&self, offset: usize) -> [u8; N] {
        self.check(offset, N);
        // SAFETY: in bounds (checked); `[u8; N]` has alignment 1 and every
        // bit pattern is valid; the load is volatile, so the compiler keeps
        // it and assumes nothing about the bytes not changing.
        unsafe { std::ptr::read_volatile(self.ptr.as_ptr().add(offset) as *const [u8; N]) }
    }

    /// Atomically loads the byte at `offset` (a CQE's phase byte).
    pub(crate) fn load_u8(&self, offset: usize, order: Ordering) -> u8 {
        self.check(offset, 1);
        // SAFETY: in bounds; a `u8` is always aligned; the allocation lives
        // as long as `self`, and this process reaches the byte only with
        // atomic operations or volatile reads.
        unsafe { AtomicU8::from_ptr(self.ptr.as_ptr().add(offset)) }.load(order)
    }

    /// Atomically loads the `u32` at `offset` (4-byte aligned).
    pub(crate) fn load_u32(&self, offset: usize, order: Ordering) -> u32 {
        self.word(offset).load(order)
    }

    /// Atomically stores `value` at `offset` (4-byte aligned).
    pub(crate) fn store_u32(&self, offset: usize, value: u32, order: Ordering) {
        self.word(offset).store(value, order)
    }

    /// The whole buffer as bytes (a memory region read by the application).
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: in bounds and initialised (zeroed at allocation). The
        // daemon writes here only on behalf of work requests the caller
        // posted; `Mr::as_slice` documents that the caller orders its reads
        // with the completions of those requests, as with any RDMA buffer.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The whole buffer as mutable bytes (a memory region being filled).
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; `&mut self` makes this the only reference
        // in this process.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        self.check(offset, 4);
        assert!(
            offset.is_multiple_of(4),
            "unaligned control word at {offset}"
        );
        // SAFETY: in bounds and 4-byte aligned (the allocation is page
        // aligned); the returned reference lives no longer than `self`, and
        // both sides reach the word atomically (the daemon writes it with a
        // single 4-byte process_vm_writev, which is not torn on the
        // platforms migros runs on).
        unsafe { AtomicU32::from_ptr(self.ptr.as_ptr().add(offset) as *mut u32) }
    }

    fn check(&self, offset: usize, n: usize) {
        assert!(
            offset.checked_add(n).is_some_and(|end| end <= self.len),
            "shared memory access {offset}+{n} outside {} bytes",
            self.len
        );
    }
}

impl Drop for ShmBuf {
    fn drop(&mut self) {
        if !self.leaked {
            // SAFETY: `ptr` came from `alloc_zeroed(self.layout)` and is freed once.
            unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_aligned_zeroed_and_bounded() {
        let mut b = ShmBuf::zeroed(100).expect("small allocation");
        assert_eq!(b.addr() % PAGE as u64, 0);
        assert_eq!(b.len(), 100);
        assert!(b.bytes().iter().all(|&x| x == 0));
        b.write(96, &[1, 2, 3, 4]);
        assert_eq!(b.read_volatile::<4>(96), [1, 2, 3, 4]);
        assert_eq!(b.load_u32(96, Ordering::Acquire), 0x0403_0201);
        b.store_u32(0, 7, Ordering::Release);
        assert_eq!(b.load_u8(0, Ordering::Relaxed), 7);
        assert!(std::panic::catch_unwind(|| b.read_volatile::<8>(96)).is_err());
    }

    #[test]
    fn zero_and_huge_lengths() {
        assert_eq!(ShmBuf::zeroed(0).expect("one page").len(), 0);
        assert!(ShmBuf::zeroed(usize::MAX).is_none());
    }
}
