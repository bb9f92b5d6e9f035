//! A session image reaches `image::decode` from a client (RestoreSession,
//! Restore: root only, but from a file anyone may have edited) or from
//! CRIU's image directory: decoding it never panics, an image it accepts
//! is within the device's limits (so restoring it cannot allocate more
//! than a client could live), and it encodes and decodes again unchanged
//! in what it restores.
#![no_main]

use libfuzzer_sys::fuzz_target;
use migrosd::image;
use migrosd::limits;

fuzz_target!(|data: &[u8]| {
    let Ok(contents) = image::decode(data) else {
        return;
    };
    let ids = contents.ids();
    assert!(ids.qpns.len() <= limits::MAX_QP as usize);
    assert!(contents.snapshot.mrs().len() <= limits::MAX_MR as usize);
    for m in contents.snapshot.mrs() {
        assert!(m.length <= limits::MAX_MR_SIZE);
        assert!(m.addr.checked_add(m.length).is_some());
    }
    let again = image::encode(&contents.snapshot, &contents.objects, contents.inbox.clone())
        .expect("an accepted image encodes");
    let back = image::decode(&again).expect("and decodes again");
    assert_eq!(back.ids(), ids);
});
