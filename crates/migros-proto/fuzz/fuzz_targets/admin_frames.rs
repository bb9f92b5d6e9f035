//! What a peer writes on the daemon's admin socket: the frame reader and
//! the admin request decoder never panic, and what decodes re-encodes to
//! the same request.
#![no_main]

#[macro_use]
mod common;

use libfuzzer_sys::fuzz_target;
use migros_proto::admin::AdminRequest;

fuzz_target!(|data: &[u8]| frames_round_trip!(AdminRequest, data));
