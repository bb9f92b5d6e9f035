//! A channel's descriptor as programs see it: an eventfd counting the
//! events waiting (a semaphore: each read takes one), so `poll(2)` works
//! and the program's `O_NONBLOCK` decides whether taking an event blocks
//! or fails with EAGAIN. The events themselves wait in the library's own
//! queue; these are the system calls around it.

use std::os::fd::RawFd;

/// A new semaphore eventfd (blocking, close-on-exec); errno on failure.
/// The caller closes it.
pub fn semaphore() -> Result<RawFd, i32> {
    // SAFETY: plain system call; the caller owns the descriptor.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_SEMAPHORE) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EMFILE));
    }
    Ok(fd)
}

/// Counts `n` more events on `fd`, an eventfd from [`semaphore`] that is
/// still open.
pub fn add(fd: RawFd, n: u64) {
    // SAFETY: 8 bytes from a local to the caller's open eventfd.
    unsafe { libc::write(fd, (&n as *const u64).cast(), 8) };
}

/// Takes one count from `fd`, an eventfd from [`semaphore`] that is still
/// open: blocks unless the program made it non-blocking (then EAGAIN when
/// none waits); retries when a signal interrupts. Errno on failure.
pub fn take(fd: RawFd) -> Result<(), i32> {
    loop {
        let mut n: u64 = 0;
        // SAFETY: 8 bytes from the caller's open eventfd into a local.
        let r = unsafe { libc::read(fd, (&mut n as *mut u64).cast(), 8) };
        if r == 8 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_taken_one_by_one() {
        let fd = semaphore().expect("eventfd");
        add(fd, 2);
        assert_eq!(take(fd), Ok(()));
        assert_eq!(take(fd), Ok(()));
        // SAFETY: our descriptor, open.
        unsafe {
            let fl = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        assert_eq!(take(fd), Err(libc::EAGAIN));
        // SAFETY: our descriptor, closed once.
        unsafe { libc::close(fd) };
    }
}
