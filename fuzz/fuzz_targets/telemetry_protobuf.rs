//! Protobuf telemetry: decode never panics, and whatever decodes re-encodes to
//! something that decodes to the same batch.
#![no_main]

use iiot_core::codec::{Limits, protobuf};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(batch) = protobuf::decode_telemetry(data, &limits) {
        let again = protobuf::encode_telemetry(&batch);
        assert_eq!(
            protobuf::decode_telemetry(&again, &limits).ok(),
            Some(batch)
        );
    }
});
