//! What the RDMA CM (`rdma_cm`) adds on top of the IB CM for IP-addressed
//! connections: service IDs made of a port space and a port, and the
//! 36-byte header it puts in front of the application's private data in a
//! REQ or SIDR_REQ, naming both IP addresses and the active side's port
//! (the kernel's `struct cma_hdr`).
//!
//! ```text
//! byte 0      cma_version   0x00
//! byte 1      ip_version    (4 or 6) << 4
//! bytes 2..4  port          active side's port, big-endian
//! bytes 4..20  src address  active side (IPv4: 12 zero bytes, then the address)
//! bytes 20..36 dst address  passive side
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use migros_proto::cm::PortSpace;

use crate::error::MadError;

/// Bytes of the header.
pub const CMA_HDR_LEN: usize = 36;
/// `cma_version` of the header.
pub const CMA_VERSION: u8 = 0;

/// Application private data an RDMA CM message can carry after the header.
pub mod user_private_data_len {
    use crate::cma::CMA_HDR_LEN;
    use crate::msg::private_data_len as pd;
    /// `rdma_connect` on RC/UC: 92 − 36.
    pub const REQ: usize = pd::REQ - CMA_HDR_LEN;
    /// `rdma_connect` on UD (SIDR_REQ): 216 − 36.
    pub const SIDR_REQ: usize = pd::SIDR_REQ - CMA_HDR_LEN;
    pub const REP: usize = pd::REP;
    pub const SIDR_REP: usize = pd::SIDR_REP;
    pub const REJ: usize = pd::REJ;
    pub const RTU: usize = pd::RTU;
    pub const DREQ: usize = pd::DREQ;
    pub const DREP: usize = pd::DREP;
}

/// The RDMA CM header of a REQ or SIDR_REQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CmaHeader {
    /// The active side's address and port.
    pub src: SocketAddr,
    /// The passive side's address (the port is the service ID's).
    pub dst: IpAddr,
}

fn v6_bytes(a: IpAddr) -> [u8; 16] {
    match a {
        // The kernel puts an IPv4 address in the last word, zeros before.
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[12..].copy_from_slice(&v4.octets());
            b
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

impl CmaHeader {
    /// Reads the header at the start of `pd`.
    pub fn parse(pd: &[u8]) -> Result<CmaHeader, MadError> {
        let b = pd.get(..CMA_HDR_LEN).ok_or(MadError::CmaHeader)?;
        if b[0] != CMA_VERSION {
            return Err(MadError::CmaHeader);
        }
        let port = u16::from_be_bytes([b[2], b[3]]);
        let addr = |at: usize| -> Result<IpAddr, MadError> {
            let mut raw = [0u8; 16];
            raw.copy_from_slice(&b[at..at + 16]);
            match b[1] >> 4 {
                4 => Ok(IpAddr::V4(Ipv4Addr::new(
                    raw[12], raw[13], raw[14], raw[15],
                ))),
                6 => Ok(IpAddr::V6(Ipv6Addr::from(raw))),
                _ => Err(MadError::CmaHeader),
            }
        };
        Ok(CmaHeader {
            src: SocketAddr::new(addr(4)?, port),
            dst: addr(20)?,
        })
    }

    /// The 36 bytes of the header. Both addresses must be of one family
    /// (an IPv4 source with an IPv6 destination is written as IPv6,
    /// IPv4-mapped).
    pub fn emit(&self) -> [u8; CMA_HDR_LEN] {
        let mut b = [0u8; CMA_HDR_LEN];
        let (src, dst, ver) = match (self.src.ip(), self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => (IpAddr::V4(s), IpAddr::V4(d), 4u8),
            (s, d) => (IpAddr::V6(to_v6(s)), IpAddr::V6(to_v6(d)), 6u8),
        };
        b[0] = CMA_VERSION;
        b[1] = ver << 4;
        b[2..4].copy_from_slice(&self.src.port().to_be_bytes());
        b[4..20].copy_from_slice(&v6_bytes(src));
        b[20..36].copy_from_slice(&v6_bytes(dst));
        b
    }
}

fn to_v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The RoCE v2 GID of an address (IPv4-mapped for IPv4).
pub fn gid_of(a: IpAddr) -> [u8; 16] {
    to_v6(a).octets()
}

/// The address of a RoCE v2 GID (IPv4 for an IPv4-mapped GID).
pub fn addr_of_gid(g: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(g);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_is_the_kernels() {
        let h = CmaHeader {
            src: "198.18.1.2:40000".parse().unwrap(),
            dst: "198.18.1.1".parse().unwrap(),
        };
        let b = h.emit();
        let mut want = [0u8; 36];
        want[1] = 0x40;
        want[2..4].copy_from_slice(&40000u16.to_be_bytes());
        want[16..20].copy_from_slice(&[198, 18, 1, 2]);
        want[32..36].copy_from_slice(&[198, 18, 1, 1]);
        assert_eq!(b, want);
        assert_eq!(CmaHeader::parse(&b), Ok(h));
        let mut bad = b;
        bad[0] = 1;
        assert_eq!(CmaHeader::parse(&bad), Err(MadError::CmaHeader));
        assert_eq!(CmaHeader::parse(&b[..35]), Err(MadError::CmaHeader));
    }
}
