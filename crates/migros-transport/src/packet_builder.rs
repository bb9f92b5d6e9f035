//! Outgoing packets: the BTH fields every packet of ours shares, the
//! headers of ACK-class packets, and a builder that lays a datagram out in
//! a buffer so no engine computes offsets.
//!
//! A datagram is, in order: the headers the opcode calls for, the payload,
//! `pad_len(payload)` zero bytes, the 4-byte ICRC. [`PacketBuilder::new`]
//! writes the headers and reserves a zeroed payload, pad and ICRC; the
//! engine fills [`PacketBuilder::payload_mut`] (gathered from registered
//! memory, a RESUME's address…); [`PacketBuilder::finish`] seals the ICRC
//! for the packet's [`Route`]. A packet given up half-way (its payload could
//! not be read) is simply not finished: the next builder clears the buffer.

use std::net::IpAddr;
use std::ops::Range;

use migros_wire::{
    emit_headers, pad_len, seal, Aeth, Bth, Headers, IpContext, Opcode, Psn, WireError, ICRC_LEN,
    ROCE_V2_PORT,
};

use crate::device::DeviceConfig;
use migros_proto::verbs::Qpn;

/// A BTH with the fields every packet of ours shares: default P_Key,
/// MigReq set (as rxe does), transport version 0, no ACK request.
pub(crate) fn new_bth(opcode: Opcode, dest_qpn: Qpn, psn: Psn) -> Bth {
    Bth {
        mig_req: true,
        ..Bth::new(opcode, dest_qpn, psn)
    }
}

/// Headers of an AETH-carrying packet (ACK, NAK, READ response, atomic
/// ACK, RESUME); the MSN is cut to its 24 bits.
pub(crate) fn ack_headers(
    opcode: Opcode,
    dest_qpn: Qpn,
    psn: Psn,
    syndrome: u8,
    msn: u32,
) -> Headers {
    let mut h = Headers::new(new_bth(opcode, dest_qpn, psn));
    h.aeth = Some(Aeth {
        syndrome,
        msn: msn & Psn::MASK,
    });
    h
}

/// What the ICRC of a datagram covers besides its bytes: the addresses and
/// the UDP source port (the destination port is RoCE v2's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
}

impl Route {
    /// From this device (its address and UDP source port) to `dst`.
    pub fn new(config: &DeviceConfig, dst: IpAddr) -> Route {
        Route {
            src: config.addr,
            dst,
            src_port: config.udp_src_port,
        }
    }

    /// The IP and UDP fields the ICRC covers.
    pub fn ip_context(&self) -> IpContext {
        IpContext::new(self.src, self.dst, self.src_port, ROCE_V2_PORT)
    }
}

/// One datagram being laid out in a caller's buffer.
#[derive(Debug)]
pub(crate) struct PacketBuilder<'b> {
    buf: &'b mut Vec<u8>,
    /// Where the payload sits in `buf`.
    payload: Range<usize>,
}

impl<'b> PacketBuilder<'b> {
    /// Clears `buf` and lays out a packet with `headers` and a zeroed
    /// payload of `payload_len` bytes. Errors (never panics) if the headers
    /// do not fit their opcode or the opcode may not carry this payload.
    pub fn new(
        buf: &'b mut Vec<u8>,
        headers: &Headers,
        payload_len: usize,
    ) -> Result<PacketBuilder<'b>, WireError> {
        let header_len = headers.check()?.header_len;
        buf.clear();
        buf.resize(
            header_len + payload_len + pad_len(payload_len) + ICRC_LEN,
            0,
        );
        let written = emit_headers(headers, payload_len, buf)?;
        debug_assert_eq!(written, header_len);
        Ok(PacketBuilder {
            buf,
            payload: header_len..header_len + payload_len,
        })
    }

    /// Like [`PacketBuilder::new`], with `payload` copied in.
    pub fn with_payload(
        buf: &'b mut Vec<u8>,
        headers: &Headers,
        payload: &[u8],
    ) -> Result<PacketBuilder<'b>, WireError> {
        let mut packet = PacketBuilder::new(buf, headers, payload.len())?;
        packet.payload_mut().copy_from_slice(payload);
        Ok(packet)
    }

    /// The payload bytes, for the caller to fill (zero until then).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.payload.clone()]
    }

    /// Seals the ICRC for `route`; the buffer now holds the datagram.
    pub fn finish(self, route: Route) {
        seal(&route.ip_context(), self.buf);
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use migros_wire::{verify, AckSyndrome, Packet, PAUSE_NAK_SYNDROME};

    use super::*;

    fn route() -> Route {
        Route {
            src: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            dst: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
            src_port: 49152,
        }
    }

    /// The same packet made by the wire crate's emitter, sealed for `route()`.
    fn reference(headers: Headers, payload: &[u8]) -> Vec<u8> {
        let packet = Packet::new(headers, payload).expect("valid test packet");
        let mut out = vec![0; packet.buffer_len()];
        let len = packet.emit(&mut out).expect("buffer of buffer_len bytes");
        assert_eq!(len, out.len());
        seal(&route().ip_context(), &mut out);
        out
    }

    #[test]
    fn header_only_packet() {
        let h = ack_headers(
            Opcode::RC_ACKNOWLEDGE,
            0x12,
            Psn::new(7),
            PAUSE_NAK_SYNDROME,
            0x0123_4567,
        );
        // Garbage from an earlier packet is cleared.
        let mut buf = vec![0xee; 100];
        let packet = PacketBuilder::new(&mut buf, &h, 0).expect("an ACK fits its opcode");
        packet.finish(route());
        assert_eq!(buf.len(), 12 + 4 + 4);
        assert!(verify(&route().ip_context(), &buf));
        let parsed = Packet::parse(&buf).expect("parses");
        assert_eq!(parsed.headers.aeth.map(|a| a.msn), Some(0x23_4567));
        assert_eq!(buf, reference(h, &[]));
    }

    #[test]
    fn payload_pad_and_icrc() {
        let mut bth = new_bth(Opcode::RC_SEND_ONLY, 0x34, Psn::new(0xff_ffff));
        bth.ack_req = true;
        let h = Headers::new(bth);
        let mut buf = Vec::new();
        let mut packet = PacketBuilder::new(&mut buf, &h, 5).expect("a SEND carries data");
        assert_eq!(packet.payload_mut(), &[0; 5]);
        packet.payload_mut().copy_from_slice(b"hello");
        packet.finish(route());
        assert_eq!(buf.len(), 12 + 5 + 3 + 4);
        assert_eq!(&buf[17..20], &[0, 0, 0], "pad");
        let parsed = Packet::parse(&buf).expect("parses");
        assert_eq!(parsed.payload, b"hello");
        assert_eq!(parsed.headers.bth.pad_count, 3);
        assert_eq!(buf, reference(h, b"hello"));
        let other_port = Route {
            src_port: 4791,
            ..route()
        };
        assert!(
            !verify(&other_port.ip_context(), &buf),
            "the port is covered"
        );
    }

    #[test]
    fn with_payload_copies() {
        let mut h = ack_headers(
            Opcode::RC_RESUME,
            0x56,
            Psn::new(1),
            AckSyndrome::Ack { credits: 0x1f }.encode(),
            3,
        );
        h.bth.ack_req = true;
        let payload = [0xab; 20];
        let mut buf = Vec::new();
        PacketBuilder::with_payload(&mut buf, &h, &payload)
            .expect("a RESUME carries 20 bytes")
            .finish(route());
        assert_eq!(buf, reference(h, &payload));
    }

    #[test]
    fn headers_that_do_not_fit_are_errors() {
        let mut buf = Vec::new();
        let no_reth = Headers::new(new_bth(Opcode::RC_RDMA_WRITE_ONLY, 1, Psn::new(0)));
        assert_eq!(
            PacketBuilder::new(&mut buf, &no_reth, 0).err(),
            Some(WireError::HeaderMismatch)
        );
        let wide_qpn = Headers::new(new_bth(Opcode::UD_SEND_ONLY, 1 << 24, Psn::new(0)));
        assert!(PacketBuilder::new(&mut buf, &wide_qpn, 0).is_err());
        let resume = ack_headers(Opcode::RC_RESUME, 1, Psn::new(0), 0, 0);
        assert_eq!(
            PacketBuilder::with_payload(&mut buf, &resume, &[0; 8]).err(),
            Some(WireError::BadResumePayload(8))
        );
        let ack = ack_headers(Opcode::RC_ACKNOWLEDGE, 1, Psn::new(0), 0, 0);
        assert_eq!(
            PacketBuilder::new(&mut buf, &ack, 4).err(),
            Some(WireError::UnexpectedPayload)
        );
    }

    #[test]
    fn bth_defaults() {
        let bth = new_bth(Opcode::UC_SEND_FIRST, 9, Psn::new(10));
        assert_eq!(
            (bth.pkey, bth.mig_req, bth.tver, bth.ack_req, bth.solicited),
            (0xffff, true, 0, false, false)
        );
    }
}
