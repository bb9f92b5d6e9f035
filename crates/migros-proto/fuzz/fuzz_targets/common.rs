//! What the frame targets share.

/// Feeds the fuzzer's `data` to a [`migros_proto::FrameReader`] of
/// messages of type `$t`, the stream cut in two reads where its first byte
/// says; whatever decodes must re-encode to a message that decodes the
/// same. (A macro: the fuzz crate does not depend on serde for the bounds.)
macro_rules! frames_round_trip {
    ($t:ty, $data:expr) => {{
        let data: &[u8] = $data;
        // The first byte picks where the stream is cut in two reads.
        let Some((&cut, bytes)) = data.split_first() else {
            return;
        };
        let cut = usize::from(cut).min(bytes.len());
        let mut reader = migros_proto::FrameReader::new();
        reader.push(&bytes[..cut]);
        while let Ok(Some(_)) = reader.next_message::<$t>() {}
        reader.push(&bytes[cut..]);
        loop {
            match reader.next_message::<$t>() {
                Ok(Some(msg)) => {
                    let mut buf = Vec::new();
                    migros_proto::frame::encode(&msg, &mut buf).expect("re-encode");
                    let again: $t =
                        migros_proto::frame::read(&mut buf.as_slice()).expect("re-decode");
                    assert_eq!(again, msg);
                }
                Ok(None) | Err(_) => break,
            }
        }
    }};
}
