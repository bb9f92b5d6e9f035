//! What a peer writes on the daemon's admin socket: the frame reader and
//! the admin request decoder never panic, and what decodes re-encodes to
//! the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use migros_proto::admin::AdminRequest;
use migros_proto::FrameReader;

fuzz_target!(|data: &[u8]| {
    // The first byte picks where the stream is cut in two reads.
    let Some((&cut, bytes)) = data.split_first() else { return };
    let cut = usize::from(cut).min(bytes.len());
    let mut reader = FrameReader::new();
    reader.push(&bytes[..cut]);
    while let Ok(Some(_)) = reader.next_message::<AdminRequest>() {}
    reader.push(&bytes[cut..]);
    loop {
        match reader.next_message::<AdminRequest>() {
            Ok(Some(req)) => {
                let mut buf = Vec::new();
                migros_proto::frame::encode(&req, &mut buf).expect("re-encode");
                let again: AdminRequest =
                    migros_proto::frame::read(&mut buf.as_slice()).expect("re-decode");
                assert_eq!(again, req);
            }
            Ok(None) | Err(_) => break,
        }
    }
});
