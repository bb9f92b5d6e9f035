//! The daemon's image format, pinned: a golden image (whose transport part
//! is the transport's own golden image) decodes to the registry's objects
//! and re-encodes to the same bytes; a version-1 image (written by migrosd
//! before images had their own types) or version-2 image (before memory
//! windows) is refused by name.
//!
//! After a deliberate format change (a new version), write the golden file
//! again with `MIGROS_WRITE_GOLDEN=1 cargo test -p migrosd image`.

use super::*;

/// The transport's golden image: every field of its format set.
const TRANSPORT: &[u8] =
    include_bytes!("../../../migros-transport/src/image/testdata/owner-v3.json");
const GOLDEN: &[u8] = include_bytes!("testdata/session-v3.json");
const GOLDEN_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/image/testdata/session-v3.json"
);
/// A session with one RC QP, as migrosd 0.1 before this module wrote it.
const VERSION_1: &[u8] = include_bytes!("testdata/session-v1.json");
/// A session as migrosd wrote it before memory windows (format 2).
const VERSION_2: &[u8] = include_bytes!("testdata/session-v2.json");

fn wq(addr: u64, entries: u32, ci: u32, pi: u32) -> WqRingImage {
    WqRingImage {
        addr,
        entries,
        ci,
        pi,
    }
}

/// The rings of the transport golden image's objects (QPs 0x42 on SRQ 4
/// and 0x44 with its own receive queue, CQ 3 on channel 9).
fn every_field() -> Image {
    let transport = OwnerSnapshot::decode(TRANSPORT)
        .expect("the transport's golden image")
        .to_image();
    Image {
        format: IMAGE_FORMAT.into(),
        version: IMAGE_VERSION,
        transport,
        qps: vec![
            QpRingsImage {
                qpn: 0x42,
                ctrl: 0x7f00_0000_1000,
                sq: wq(0x7f00_0000_2000, 8, 5, 7),
                rq: None,
                send_cq: 3,
                recv_cq: 3,
            },
            QpRingsImage {
                qpn: 0x44,
                ctrl: 0x7f00_0000_3000,
                sq: wq(0, 0, 0, 0),
                rq: Some(wq(0x7f00_0000_4000, 16, 14, 17)),
                send_cq: 3,
                recv_cq: 3,
            },
        ],
        cqs: vec![CqRingImage {
            cq: 3,
            addr: 0x7f00_0000_5000,
            entries: 1024,
            ctrl: 0x7f00_0000_6000,
            pi: 70000,
            client_ci: 69990,
            armed: true,
            channel: Some(9),
        }],
        srqs: vec![SrqRingImage {
            srq: 4,
            ctrl: 0x7f00_0000_7000,
            rq: wq(0x7f00_0000_8000, 32, 3, 3),
        }],
        channels: vec![9],
        async_channel: Some(9),
        inbox: vec![1, 2, 3],
    }
}

#[test]
fn the_golden_image_is_what_this_build_writes() {
    let bytes = serde_json::to_vec(&every_field()).expect("encode");
    if std::env::var_os("MIGROS_WRITE_GOLDEN").is_some() {
        std::fs::write(GOLDEN_PATH, &bytes).expect("write the golden image");
    }
    assert!(
        bytes == GOLDEN,
        "the image format changed: give it a new version (see the module docs)"
    );
}

#[test]
fn the_golden_image_goes_through_the_registry_objects_unchanged() {
    let c = decode(GOLDEN).expect("the golden image decodes");
    assert_eq!(c.owner(), 7);
    assert_eq!(c.inbox, [1, 2, 3]);
    let ids = c.ids();
    assert_eq!(
        (ids.qpns, ids.keys, ids.pds, ids.cqs, ids.srqs, ids.channels),
        (
            vec![0x42, 0x44],
            vec![0x11, 0x12, 0x200, 0x300, 0x400],
            vec![1],
            vec![3],
            vec![4],
            vec![9]
        )
    );
    assert_eq!(
        c.objects.cq(3).map(|r| (r.pi, r.armed)),
        Some((70000, true))
    );
    let again = encode(&c.snapshot, &c.objects, c.inbox.clone()).expect("encode");
    assert!(again == GOLDEN, "re-encoded bytes differ");
}

#[test]
fn version_1_and_2_images_are_refused_by_name() {
    for (version, bytes) in [(1, VERSION_1), (2, VERSION_2)] {
        let e = decode(bytes).expect_err("an old version");
        assert_eq!(
            e.to_string(),
            format!(
                "image version {version}: this migrosd reads version 3 only \
                 (checkpoint and restore with the same migros version)"
            )
        );
    }
}

#[test]
fn a_whole_image_of_another_format_or_version_is_refused_by_name() {
    // The body parses as this version's: the header is checked after the
    // one parse (an image that does not parse is checked before, above).
    let text = std::str::from_utf8(GOLDEN).expect("json is text");
    let other = text.replacen("\"format\":\"migrosd-image\"", "\"format\":\"other\"", 1);
    assert_eq!(
        decode(other.as_bytes())
            .expect_err("another format")
            .to_string(),
        "not a migrosd image (format \"other\")"
    );
    let later = text.replacen("\"version\":3,", "\"version\":4,", 1);
    assert!(decode(later.as_bytes())
        .expect_err("a later version")
        .to_string()
        .starts_with("image version 4: this migrosd reads version 3 only"));
}

#[test]
fn inconsistent_images_are_refused() {
    let refused = |img: Image| {
        let bytes = serde_json::to_vec(&img).expect("encode");
        decode(&bytes).expect_err("refused").to_string()
    };
    let mut img = every_field();
    img.qps.pop();
    assert!(refused(img).contains("qps of the rings"));
    let mut img = every_field();
    img.cqs[0].channel = Some(10);
    assert!(refused(img).contains("channel not in the image"));
    let mut img = every_field();
    img.qps[1].rq = Some(wq(0x1000, 16, 0, 17));
    assert!(refused(img).contains("ring indices"));
    let mut img = every_field();
    img.srqs[0].rq.entries = 3;
    assert!(refused(img).contains("srq 4"));
    let mut img = every_field();
    img.transport.owner = 8;
    assert!(refused(img).contains("transport snapshot rejected"));
}

#[test]
fn garbage_is_refused_without_panic() {
    let text = std::str::from_utf8(GOLDEN).expect("json is text");
    let unknown = text.replacen("\"qps\":", "\"qpz\":[],\"qps\":", 1);
    for bad in [
        &b""[..],
        b"{}",
        b"[1,2]",
        b"{\"format\":\"x\",\"version\":3}",
        b"{\"format\":\"migrosd-image\",\"version\":9}",
        b"{\"format\":\"migrosd-image\",\"version\":3,\"transport\":{}}",
        unknown.as_bytes(),
    ] {
        assert!(decode(bad).is_err());
    }
}
