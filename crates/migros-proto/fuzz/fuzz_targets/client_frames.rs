//! What a client writes on the daemon's socket: the frame reader and the
//! request decoder must never panic, whatever arrives and however it is cut;
//! anything that decodes re-encodes to something that decodes the same.
#![no_main]

#[macro_use]
mod common;

use libfuzzer_sys::fuzz_target;
use migros_proto::Request;

fuzz_target!(|data: &[u8]| frames_round_trip!(Request, data));
