//! MADs on the wire of RoCE v2: a UD SEND-only packet to QP1 (the general
//! services interface) with the GSI Q_Key, carrying the 256-byte MAD.
//!
//! ```text
//! BTH  opcode 0x64 (UD SEND only), P_Key 0xffff, dest QP 1, PSN
//! DETH Q_Key 0x8001_0000, source QP 1
//! MAD  256 bytes
//! ICRC
//! ```

use std::net::IpAddr;

use migros_wire::{Bth, Deth, Headers, IpContext, Opcode, Packet, Psn, ROCE_V2_PORT};

use crate::error::MadError;
use crate::mad::MAD_LEN;

/// Queue pair number of the GSI.
pub const GSI_QPN: u32 = 1;
/// Q_Key of the GSI.
pub const GSI_QKEY: u32 = 0x8001_0000;
/// Default partition key.
pub const DEFAULT_PKEY: u16 = 0xffff;
/// Bytes of a GSI datagram: BTH, DETH, MAD, ICRC.
pub const GSI_DATAGRAM_LEN: usize = Bth::LEN + Deth::LEN + MAD_LEN + migros_wire::ICRC_LEN;

/// Whether a datagram is addressed to QP1 (looks at the BTH only), so a
/// receiver can route it to the CM before the transport sees it.
pub fn is_gsi(datagram: &[u8]) -> bool {
    Bth::parse(datagram).is_ok_and(|b| b.dest_qpn == GSI_QPN)
}

/// The MAD inside a GSI datagram whose ICRC was checked with `ctx` (the
/// IPv4 identification the sender used, which a socket does not show, is
/// recovered from the ICRC, as for every packet: the kernel's rxe sends
/// nonzero ones).
pub fn open<'a>(ctx: &IpContext, datagram: &'a [u8]) -> Result<&'a [u8], MadError> {
    if migros_wire::verify_received(ctx, datagram).is_none() {
        return Err(MadError::Icrc);
    }
    let pkt = Packet::parse(datagram).map_err(|_| MadError::Gsi("malformed packet"))?;
    let h = &pkt.headers;
    if h.bth.opcode != Opcode::UD_SEND_ONLY {
        return Err(MadError::Gsi("not a UD SEND only"));
    }
    if h.bth.dest_qpn != GSI_QPN {
        return Err(MadError::Gsi("not for QP1"));
    }
    match h.deth {
        Some(d) if d.qkey == GSI_QKEY => {}
        _ => return Err(MadError::Gsi("wrong Q_Key")),
    }
    if pkt.payload.len() != MAD_LEN {
        return Err(MadError::Truncated(pkt.payload.len()));
    }
    Ok(pkt.payload)
}

/// Builds the datagram carrying `mad` from `src` to `dst` (UDP source port
/// `src_port`) with `psn`, ICRC sealed.
pub fn seal(src: IpAddr, dst: IpAddr, src_port: u16, psn: u32, mad: &[u8; MAD_LEN]) -> Vec<u8> {
    let mut headers = Headers::new(Bth {
        opcode: Opcode::UD_SEND_ONLY,
        solicited: false,
        mig_req: false,
        pad_count: 0,
        tver: 0,
        pkey: DEFAULT_PKEY,
        fecn: false,
        becn: false,
        dest_qpn: GSI_QPN,
        ack_req: false,
        psn: Psn::new(psn),
    });
    headers.deth = Some(Deth {
        qkey: GSI_QKEY,
        src_qpn: GSI_QPN,
    });
    // The headers match the opcode and a 256-byte payload fits it: neither
    // building nor emitting can fail for this packet.
    let Ok(pkt) = Packet::new(headers, mad) else {
        return Vec::new();
    };
    let mut out = vec![0u8; pkt.buffer_len()];
    let n = pkt.emit(&mut out).unwrap_or(0);
    out.truncate(n);
    let ctx = IpContext::new(src, dst, src_port, ROCE_V2_PORT);
    migros_wire::seal(&ctx, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_open() {
        let mut mad = [0u8; MAD_LEN];
        mad[0] = 1;
        mad[255] = 0xee;
        let a: IpAddr = "198.18.0.1".parse().unwrap();
        let b: IpAddr = "198.18.0.2".parse().unwrap();
        let d = seal(a, b, 4791, 17, &mad);
        assert_eq!(d.len(), GSI_DATAGRAM_LEN);
        assert_eq!(&d[..4], &[0x64, 0, 0xff, 0xff]);
        assert_eq!(&d[4..8], &[0, 0, 0, 1]);
        assert_eq!(&d[12..20], &[0x80, 0x01, 0, 0, 0, 0, 0, 1]);
        assert!(is_gsi(&d));
        let ctx = IpContext::new(a, b, 4791, ROCE_V2_PORT);
        assert_eq!(open(&ctx, &d), Ok(&mad[..]));
        let wrong = IpContext::new(b, a, 4791, ROCE_V2_PORT);
        assert_eq!(open(&wrong, &d), Err(MadError::Icrc));
    }
}
