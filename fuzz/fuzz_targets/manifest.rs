//! Firmware manifests come from the network before anything is verified:
//! decoding the envelope and the body never panics.
#![no_main]

use iiot_core::codec::{Limits, protobuf};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(m) = protobuf::decode_signed_manifest(data, &limits) {
        let _ = protobuf::decode_manifest_body(&m.body, &limits);
    }
    let _ = protobuf::decode_manifest_body(data, &limits);
});
