//! What a client writes on the daemon's socket: the frame reader and the
//! request decoder must never panic, whatever arrives and however it is cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use migros_proto::{FrameReader, Request};

fuzz_target!(|data: &[u8]| {
    // The first byte picks where the stream is cut in two reads.
    let Some((&cut, bytes)) = data.split_first() else { return };
    let cut = usize::from(cut).min(bytes.len());
    let mut reader = FrameReader::new();
    reader.push(&bytes[..cut]);
    while let Ok(Some(_)) = reader.next_message::<Request>() {}
    reader.push(&bytes[cut..]);
    loop {
        match reader.next_message::<Request>() {
            Ok(Some(req)) => {
                // Anything that decodes re-encodes to something that decodes the same.
                let mut buf = Vec::new();
                migros_proto::frame::encode(&req, &mut buf).expect("re-encode");
                let again: Request = migros_proto::frame::read(&mut buf.as_slice()).expect("re-decode");
                assert_eq!(again, req);
            }
            Ok(None) | Err(_) => break,
        }
    }
});
