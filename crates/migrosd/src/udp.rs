//! Batched UDP on port 4791: `recvmmsg` with GRO, and sends grouped per
//! destination into GSO super-datagrams (quinn-udp does the system calls).
//!
//! Every socket sends with DF set (`IP_PMTUDISC_DO`) from an unconnected
//! socket, for which Linux puts IPv4 identification 0 into the header of a
//! lone datagram, and 0, 1, 2, … into the segments of a GSO batch when it
//! splits it (in software or a NIC's segmentation offload; checked on
//! 6.1 and 6.18). The ICRC covers that field (see `migros_wire::icrc`), so
//! the transport seals every packet for identification 0 and [`UdpIo::flush`]
//! reseals the k-th segment of each IPv4 batch for identification k: every
//! packet on the wire carries an ICRC valid for the header it has, however
//! the batches are cut. (A batch that is never split, as on loopback, has
//! no per-segment header at all; the receiver recovers whichever
//! identification it assumes, see `migros_wire::verify_received`.)

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};

use quinn_udp::{RecvMeta, UdpSockRef, UdpSocketState, BATCH_SIZE};
use socket2::{Domain, Protocol, Socket, Type};

use crate::fault::{FaultSpec, Faults, Verdict};

/// Receive buffer per slot: a whole GRO batch.
const RX_BUF: usize = 64 << 10;
/// Largest GSO super-datagram payload.
const GSO_MAX_BYTES: usize = 65000;
/// Socket buffer sizes asked for.
pub(crate) const SOCKET_BUFFER: usize = 8 << 20;

#[derive(Debug, Clone, Copy)]
struct Seg {
    dst: SocketAddr,
    off: usize,
    len: usize,
    /// The IPv4 identification its ICRC is sealed for.
    ip_id: u16,
}

/// The device's UDP socket.
pub struct UdpIo {
    pub socket: mio::net::UdpSocket,
    state: UdpSocketState,
    port: u16,
    rx_bufs: Vec<Vec<u8>>,
    metas: Vec<RecvMeta>,
    arena: Vec<u8>,
    segs: Vec<Seg>,
    /// First segment not yet sent.
    next: usize,
    faults: Option<Faults>,
    held: Option<(SocketAddr, Vec<u8>)>,
    /// Datagrams the kernel refused (other than "would block").
    pub tx_errors: u64,
    /// System calls that sent datagrams.
    pub tx_calls: u64,
}

impl UdpIo {
    /// Binds `addr:port`.
    pub fn bind(addr: IpAddr, port: u16, fault: Option<FaultSpec>) -> io::Result<UdpIo> {
        let sa = SocketAddr::new(addr, port);
        let sock = Socket::new(Domain::for_address(sa), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            sock.set_only_v6(true)?;
        }
        sock.bind(&sa.into())?;
        force_buffers(&sock);
        let std_sock: std::net::UdpSocket = sock.into();
        let state = UdpSocketState::new(UdpSockRef::from(&std_sock))?;
        set_pmtudisc_do(&std_sock, addr.is_ipv6())?;
        std_sock.set_nonblocking(true)?;
        let socket = mio::net::UdpSocket::from_std(std_sock);
        Ok(UdpIo {
            socket,
            state,
            port,
            rx_bufs: (0..BATCH_SIZE).map(|_| vec![0u8; RX_BUF]).collect(),
            metas: vec![RecvMeta::default(); BATCH_SIZE],
            arena: Vec::with_capacity(1 << 20),
            segs: Vec::with_capacity(1024),
            next: 0,
            faults: fault.map(Faults::new),
            held: None,
            tx_errors: 0,
            tx_calls: 0,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Receives one batch and hands every datagram to `f(src, bytes)`;
    /// returns how many. `WouldBlock` when nothing is waiting.
    pub fn recv_batch(&mut self, mut f: impl FnMut(SocketAddr, &[u8])) -> io::Result<usize> {
        let mut slices: Vec<IoSliceMut> = self
            .rx_bufs
            .iter_mut()
            .map(|b| IoSliceMut::new(b))
            .collect();
        let n = self
            .state
            .recv(UdpSockRef::from(&self.socket), &mut slices, &mut self.metas)?;
        drop(slices);
        let mut count = 0;
        for (meta, buf) in self.metas.iter().zip(self.rx_bufs.iter()).take(n) {
            let stride = meta.stride.max(1);
            let data = &buf[..meta.len.min(buf.len())];
            for d in data.chunks(stride) {
                f(meta.addr, d);
                count += 1;
            }
        }
        Ok(count)
    }

    /// Datagrams queued and not yet sent.
    pub fn queued(&self) -> usize {
        self.segs.len() - self.next
    }

    /// Queues a datagram for `dst` (port 4791), through the fault injector.
    pub fn queue(&mut self, dst: IpAddr, datagram: &[u8]) {
        let dst = SocketAddr::new(dst, self.port);
        let verdict = match &mut self.faults {
            Some(f) => f.verdict(self.held.is_none()),
            None => Verdict::Pass,
        };
        match verdict {
            Verdict::Drop => return,
            Verdict::Hold => {
                self.held = Some((dst, datagram.to_vec()));
                return;
            }
            Verdict::Duplicate => {
                self.push(dst, datagram);
                self.push(dst, datagram);
            }
            Verdict::Pass => self.push(dst, datagram),
        }
        if let Some((hdst, held)) = self.held.take() {
            self.push(hdst, &held);
        }
    }

    fn push(&mut self, dst: SocketAddr, datagram: &[u8]) {
        let off = self.arena.len();
        self.arena.extend_from_slice(datagram);
        self.segs.push(Seg {
            dst,
            off,
            len: datagram.len(),
            ip_id: 0,
        });
    }

    /// Sends the queue; `Ok(true)` when it is empty, `Ok(false)` when the
    /// socket would block (wait for it to become writable).
    pub fn flush(&mut self) -> io::Result<bool> {
        let max_segs = self.state.max_gso_segments().max(1);
        while self.next < self.segs.len() {
            let first = self.segs[self.next];
            let mut end = self.next + 1;
            let mut total = first.len;
            while end < self.segs.len() && end - self.next < max_segs {
                let s = self.segs[end];
                // Equal sizes, the last may be shorter; contiguous in the arena.
                if s.dst != first.dst
                    || s.len > first.len
                    || total + s.len > GSO_MAX_BYTES
                    || s.off != first.off + total
                {
                    break;
                }
                total += s.len;
                end += 1;
                if s.len < first.len {
                    break;
                }
            }
            self.seal_for_batch(self.next, end);
            let transmit = quinn_udp::Transmit {
                destination: first.dst,
                ecn: None,
                contents: &self.arena[first.off..first.off + total],
                segment_size: (end - self.next > 1).then_some(first.len),
                src_ip: None,
            };
            match self
                .state
                .try_send(UdpSockRef::from(&self.socket), &transmit)
            {
                Ok(()) => {
                    self.tx_calls += 1;
                    self.next = end;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => {
                    self.tx_errors += (end - self.next) as u64;
                    tracing::debug!(error = %e, dst = %first.dst, "udp send failed");
                    self.next = end;
                }
            }
        }
        self.arena.clear();
        self.segs.clear();
        self.next = 0;
        Ok(true)
    }

    /// Reseals segments `first..end`, sent as one batch, for the
    /// identifications Linux gives them: 0 for the first, then one more for
    /// each. Idempotent, so a batch cut differently after a "would block"
    /// is sealed right again.
    fn seal_for_batch(&mut self, first: usize, end: usize) {
        for (k, seg) in self.segs[first..end].iter_mut().enumerate() {
            if !seg.dst.is_ipv4() {
                continue; // IPv6 has no identification
            }
            // Identifications are 16 bits and wrap, on the wire as here.
            let id = k as u16;
            if seg.ip_id != id {
                let bytes = &mut self.arena[seg.off..seg.off + seg.len];
                migros_wire::reseal_ipv4_id(bytes, seg.ip_id, id);
                seg.ip_id = id;
            }
        }
    }

    /// Fault counters (dropped, reordered, duplicated), if faults are on.
    pub fn fault_counts(&self) -> Option<(u64, u64, u64)> {
        self.faults
            .as_ref()
            .map(|f| (f.dropped, f.reordered, f.duplicated))
    }
}

/// Asks for big socket buffers (past `rmem_max` when root).
fn force_buffers(sock: &Socket) {
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    let val = SOCKET_BUFFER as libc::c_int;
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        // SAFETY: fd is a valid socket owned by `sock`; the option value is
        // a c_int that lives across the call.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                force,
                &val as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            // SAFETY: as above.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    plain,
                    &val as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
    }
}

/// DF on every datagram, no path MTU guessing: IPv4 identification 0.
fn set_pmtudisc_do(sock: &std::net::UdpSocket, v6: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (level, opt, val) = if v6 {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        )
    } else {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
    };
    // SAFETY: the fd is a valid socket; the value is a c_int living across the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            opt,
            &val as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use migros_wire::IpContext;
    use std::net::Ipv4Addr;

    #[test]
    fn the_kth_segment_of_a_batch_is_sealed_for_identification_k() {
        let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut io = UdpIo::bind(local, 0, None).expect("bind 127.0.0.1");
        let dst = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));
        let ctx = |ip_id| IpContext {
            ip_id,
            ..IpContext::new(local, dst, 4791, 4791)
        };
        let packet = |fill: u8| {
            // A BTH (RC SEND Only) and a payload, sealed for id 0.
            let mut p = vec![0x04, 0, 0xff, 0xff, 0, 0, 0, 0x20, 0x80, 0, 1, 0];
            p.extend(std::iter::repeat_n(fill, 64));
            p.extend([0; 4]);
            migros_wire::seal(&ctx(0), &mut p);
            p
        };
        for fill in 0..3 {
            io.queue(dst, &packet(fill));
        }
        io.seal_for_batch(0, 3);
        for (k, seg) in io.segs.iter().enumerate() {
            let bytes = &io.arena[seg.off..seg.off + seg.len];
            assert!(migros_wire::verify(&ctx(k as u16), bytes), "segment {k}");
        }
        // Cut differently after a "would block": sealed right again.
        io.seal_for_batch(1, 3);
        let seg = io.segs[2];
        assert!(migros_wire::verify(
            &ctx(1),
            &io.arena[seg.off..seg.off + seg.len]
        ));
    }
}
