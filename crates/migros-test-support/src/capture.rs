//! RoCE v2 packets seen on the loopback interface, for assertions about
//! what went over the wire between daemons on 127.0.0.x (a packet socket:
//! needs root). Only the packets a filter keeps are stored.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// RoCE v2's UDP port.
pub const ROCE_PORT: u16 = 4791;
/// The RESUME opcode of the migration extension.
pub const OPCODE_RESUME: u8 = 0x19;

/// One RoCE v2 packet: who sent it to whom, its BTH opcode and
/// destination QPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub opcode: u8,
    pub dest_qpn: u32,
}

type Filter = Box<dyn Fn(&Packet) -> bool + Send>;

/// A running capture; stops when dropped.
pub struct Capture {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Packet>>>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    /// Starts capturing the RoCE v2 packets on `lo` that `keep` accepts.
    /// Every IPv4 packet on `lo` reaches the socket: under heavy traffic
    /// the kernel may drop some before they are read (see
    /// [`Capture::opcode`]).
    pub fn start(keep: impl Fn(&Packet) -> bool + Send + 'static) -> std::io::Result<Capture> {
        Capture::spawn(None, keep)
    }

    /// Starts capturing the RoCE v2 packets on `lo` with BTH opcode
    /// `opcode`, chosen in the kernel (a socket filter), so that other
    /// traffic cannot crowd them out.
    pub fn opcode(opcode: u8) -> std::io::Result<Capture> {
        Capture::spawn(Some(opcode), |_| true)
    }

    fn spawn(
        opcode: Option<u8>,
        keep: impl Fn(&Packet) -> bool + Send + 'static,
    ) -> std::io::Result<Capture> {
        let fd = open_lo(opcode)?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, v) = (stop.clone(), seen.clone());
        let keep: Filter = Box::new(keep);
        let thread = std::thread::spawn(move || run(fd, &s, &v, &keep));
        Ok(Capture {
            stop,
            seen,
            thread: Some(thread),
        })
    }

    /// The packets kept so far, in arrival order.
    pub fn packets(&self) -> Vec<Packet> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops and returns every packet kept.
    pub fn finish(mut self) -> Vec<Packet> {
        self.stop_thread();
        self.packets()
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

/// A packet socket on `lo` receiving IPv4 (no link header), with a
/// receive timeout so the thread can notice `stop`.
fn open_lo(opcode: Option<u8>) -> std::io::Result<libc::c_int> {
    let proto = (libc::ETH_P_IP as u16).to_be() as libc::c_int;
    // SAFETY: plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, proto) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let close_on = |e: std::io::Error| {
        // SAFETY: fd is ours and open.
        unsafe { libc::close(fd) };
        e
    };
    // SAFETY: a NUL-terminated interface name.
    let ifindex = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
    if ifindex == 0 {
        return Err(close_on(std::io::Error::last_os_error()));
    }
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto as u16;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: sll is a valid sockaddr_ll of the size given.
    let r = unsafe {
        libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(close_on(std::io::Error::last_os_error()));
    }
    if let Some(op) = opcode {
        attach_filter(fd, op).map_err(close_on)?;
    }
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 50_000,
    };
    let big: libc::c_int = 16 << 20;
    // SAFETY: setsockopt with values of the sizes given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&big as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    Ok(fd)
}

/// A classic BPF program: IPv4 UDP to port 4791 whose BTH opcode (the
/// first byte after the UDP header) is `opcode`.
fn attach_filter(fd: libc::c_int, opcode: u8) -> std::io::Result<()> {
    let ins = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let mut prog = [
        ins(0x30, 0, 0, 9),                    // ldb [9]: IP protocol
        ins(0x15, 0, 6, 17),                   // jeq UDP, else drop
        ins(0xb1, 0, 0, 0),                    // ldxb 4*([0]&0xf): IP header length
        ins(0x48, 0, 0, 2),                    // ldh [x+2]: UDP destination port
        ins(0x15, 0, 3, u32::from(ROCE_PORT)), // jeq 4791, else drop
        ins(0x50, 0, 0, 8),                    // ldb [x+8]: BTH opcode
        ins(0x15, 0, 1, u32::from(opcode)),    // jeq opcode, else drop
        ins(0x06, 0, 0, 0xffff),               // ret: keep
        ins(0x06, 0, 0, 0),                    // ret: drop
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: fprog points at `prog`, alive for the call.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // Packets queued before the filter was attached: drop them.
    let mut buf = [0u8; 1];
    loop {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            return Ok(());
        }
    }
}

fn run(fd: libc::c_int, stop: &AtomicBool, seen: &Mutex<Vec<Packet>>, keep: &Filter) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: buf and from are valid for the sizes given.
        let n = unsafe {
            libc::recvfrom(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n <= 0 {
            continue;
        }
        // On loopback every packet shows twice: going out and coming in.
        if from.sll_pkttype == libc::PACKET_OUTGOING {
            continue;
        }
        if let Some(p) = parse(&buf[..n as usize]) {
            if keep(&p) {
                seen.lock().unwrap_or_else(|e| e.into_inner()).push(p);
            }
        }
    }
    // SAFETY: fd is ours and open.
    unsafe { libc::close(fd) };
}

/// An IPv4/UDP datagram to port 4791 with at least a BTH.
pub fn parse(ip: &[u8]) -> Option<Packet> {
    if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let udp = ip.get(ihl..)?;
    if udp.len() < 8 + 12 || u16::from_be_bytes([udp[2], udp[3]]) != ROCE_PORT {
        return None;
    }
    let bth = &udp[8..];
    let addr = |at: usize| IpAddr::V4(Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]));
    Some(Packet {
        src: addr(12),
        dst: addr(16),
        opcode: bth[0],
        dest_qpn: u32::from_be_bytes([0, bth[5], bth[6], bth[7]]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_roce_datagram() {
        let mut ip = vec![0u8; 20 + 8 + 12];
        ip[0] = 0x45;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[127, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[127, 0, 0, 2]);
        ip[22..24].copy_from_slice(&ROCE_PORT.to_be_bytes());
        ip[28] = OPCODE_RESUME;
        ip[33..36].copy_from_slice(&[0x12, 0x34, 0x56]);
        let p = parse(&ip).expect("a RoCE packet");
        assert_eq!(p.src, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(p.dst, "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!((p.opcode, p.dest_qpn), (OPCODE_RESUME, 0x12_3456));
        ip[22..24].copy_from_slice(&53u16.to_be_bytes());
        assert_eq!(parse(&ip), None, "not RoCE");
        assert_eq!(parse(&ip[..10]), None, "truncated");
    }
}
