//! The image of a librdmacm connection's connection-manager state, version
//! 1: the agent's snapshot of the connection's owner
//! ([`migros_cm::migrate::CmSnapshot`]: bindings, listeners, connections
//! with the peer's identity and their timers as time left) and the start of
//! a request the freeze cut short. It is its own file beside the session
//! images: a librdmacm connection is its own socket and its own owner in
//! the agent, restored by `RestoreCm` on a connection of its own.
//!
//! ```json
//! { "format": "migrosd-cm-image", "version": 1, "owner": 123,
//!   "cm": { "version": 1, "addr": "198.18.0.2", "binds": [...], ... },
//!   "inbox": [bytes...] }
//! ```
//!
//! Unknown fields are refused; [`decode`] checks all that can be checked
//! without the destination's state and never panics (the destination's
//! collisions are the agent's to refuse).

use migros_cm::migrate::{check_snapshot, CmSnapshot};
use serde::{Deserialize, Serialize};

use super::ImageError;

/// Format name of a CM image.
pub const FORMAT: &str = "migrosd-cm-image";
/// The version this daemon writes and reads.
pub const VERSION: u32 = 1;

/// A librdmacm connection's image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`].
    pub version: u32,
    /// The connection's owner id in the agent (kept by the restore).
    pub owner: u64,
    pub cm: CmSnapshot,
    /// The start of a request the process was writing when it was frozen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inbox: Vec<u8>,
}

/// The image of `owner`'s state `cm`, with `inbox`.
pub fn encode(owner: u64, cm: CmSnapshot, inbox: Vec<u8>) -> Result<Vec<u8>, ImageError> {
    Ok(serde_json::to_vec(&Image {
        format: FORMAT.to_string(),
        version: VERSION,
        owner,
        cm,
        inbox,
    })?)
}

/// Decodes and checks a CM image.
pub fn decode(bytes: &[u8]) -> Result<Image, ImageError> {
    #[derive(Deserialize)]
    struct Header {
        format: String,
        version: u32,
    }
    let header: Header = serde_json::from_slice(bytes)?;
    if header.format != FORMAT {
        return Err(ImageError::Format(header.format));
    }
    if header.version != VERSION {
        return Err(ImageError::CmVersion(header.version));
    }
    let img: Image = serde_json::from_slice(bytes)?;
    if img.owner == 0 {
        return Err(ImageError::Inconsistent("cm owner 0".into()));
    }
    if img.inbox.len() > crate::limits::SESSION_FRAME_LIMIT {
        return Err(ImageError::Inconsistent(
            "cm inbox larger than a frame".into(),
        ));
    }
    check_snapshot(&img.cm).map_err(|e| ImageError::Inconsistent(format!("cm state: {e}")))?;
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;
    use migros_cm::migrate::{BindSnap, ConnSnap, ListenSnap, RetransmitSnap};
    use migros_cm::State;
    use migros_proto::cm::{CmQpType, ConnInfo, PortSpace};

    /// A snapshot with every field set.
    fn snapshot() -> CmSnapshot {
        let local = "198.18.0.2:7174".parse().unwrap();
        let peer = "198.18.0.3:40000".parse().unwrap();
        CmSnapshot {
            version: migros_cm::migrate::SNAPSHOT_VERSION,
            addr: "198.18.0.2".parse().unwrap(),
            binds: vec![BindSnap {
                id: 7,
                ps: PortSpace::Tcp,
                addr: Some("198.18.0.2".parse().unwrap()),
                port: 7174,
                reuse: true,
            }],
            listens: vec![ListenSnap {
                id: 3,
                ps: PortSpace::Tcp,
                port: 7174,
                addr: None,
                qp_type: CmQpType::Rc,
            }],
            conns: vec![ConnSnap {
                local_id: 0x1234_5678,
                remote_id: 0x9abc_def0,
                state: State::DreqSent,
                qp_type: CmQpType::Rc,
                peer_ip: "198.18.0.3".parse().unwrap(),
                tid: 0x1122_3344_5566_7788,
                service_id: 0x0106_1c06,
                remote_ca_guid: 0xfeed,
                local_qpn: 0x11,
                remote_qpn: 0x22,
                local,
                peer,
                info: ConnInfo {
                    local,
                    peer,
                    remote_qpn: 0x22,
                    rq_psn: 1,
                    sq_psn: 2,
                    path_mtu: 5,
                    responder_resources: 4,
                    initiator_depth: 4,
                    flow_control: true,
                    retry_count: 7,
                    rnr_retry_count: 7,
                    srq: false,
                    remote_gid: [9; 16],
                    hop_limit: 64,
                    traffic_class: 0,
                    flow_label: 0,
                    sl: 0,
                    ack_timeout: 18,
                    private_data: vec![1, 2, 3],
                },
                timeout_ms: 4096,
                max_cm_retries: 15,
                av_timeout: 19,
                retransmit: Some(RetransmitSnap {
                    mad: vec![0x5a; 256],
                    left_ns: 1_000_000,
                    timeout_ns: 4_096_000_000,
                    retries_left: 14,
                    sends: 1,
                }),
                timewait_left_ns: Some(5),
                last_private: vec![4],
                disconnect_reported: true,
                indexed: true,
            }],
        }
    }

    #[test]
    fn an_image_round_trips() {
        let bytes = encode(0xabc, snapshot(), vec![0, 0, 0, 9]).unwrap();
        let img = decode(&bytes).unwrap();
        assert_eq!(img.owner, 0xabc);
        assert_eq!(img.cm, snapshot());
        assert_eq!(img.inbox, [0, 0, 0, 9]);
        assert_eq!(encode(img.owner, img.cm, img.inbox).unwrap(), bytes);
    }

    fn refused(v: &serde_json::Value) -> String {
        let bytes = serde_json::to_vec(v).unwrap();
        decode(&bytes).expect_err("refused").to_string()
    }

    #[test]
    fn damaged_images_are_refused_with_a_reason() {
        let good: serde_json::Value =
            serde_json::from_slice(&encode(0xabc, snapshot(), Vec::new()).unwrap()).unwrap();
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = good.clone();
            f(&mut v);
            refused(&v)
        };
        assert!(with(&|v| v["version"] = 2.into()).contains("cm image version 2"));
        assert!(with(&|v| v["format"] = "migrosd-image".into()).contains("not a migrosd image"));
        assert!(with(&|v| v["owner"] = 0.into()).contains("owner 0"));
        assert!(with(&|v| v["extra"] = 1.into()).contains("unknown field"));
        assert!(with(&|v| v["cm"]["conns"][0]["surprise"] = 1.into()).contains("unknown field"));
        assert!(with(&|v| v["cm"]["version"] = 7.into()).contains("snapshot version"));
        assert!(with(&|v| v["cm"]["conns"][0]["state"] = "Nowhere".into()).contains("variant"));
        assert!(with(&|v| v["cm"]["conns"][0]["local_id"] = 0.into()).contains("connection id"));
        assert!(with(&|v| v["cm"]["conns"][0]["local_id"] = (-1).into()).contains("invalid"));
        assert!(
            with(&|v| v["cm"]["conns"][0]["retransmit"]["mad"] = vec![1u8; 3].into())
                .contains("256 bytes")
        );
        assert!(
            with(&|v| v["cm"]["conns"][0]["retransmit"]["left_ns"] = u64::MAX.into())
                .contains("timer")
        );
        assert!(with(&|v| v["cm"]["conns"][0]["max_cm_retries"] = 99.into()).contains("retries"));
        assert!(with(&|v| {
            let c = v["cm"]["conns"][0].clone();
            v["cm"]["conns"].as_array_mut().unwrap().push(c);
        })
        .contains("repeated"));
        assert!(with(&|v| v["cm"]["binds"][0]["id"] = 0.into()).contains("binding id"));
        assert!(with(&|v| v["cm"]["binds"][0]["port"] = 70000.into()).contains("invalid"));
        // Not JSON, or cut short: no panic, a reason.
        assert!(decode(b"\x00\x01").is_err());
        let bytes = encode(0xabc, snapshot(), Vec::new()).unwrap();
        for n in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode(&bytes[..n]).is_err(), "{n} bytes");
        }
    }
}
