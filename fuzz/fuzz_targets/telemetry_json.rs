//! JSON telemetry: decode never panics, and whatever decodes survives a round
//! trip through both wire forms.
#![no_main]

use iiot_core::codec::{Limits, json, protobuf};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(batch) = json::decode_telemetry(data, &limits) {
        let j = json::encode_telemetry(&batch);
        let p = protobuf::encode_telemetry(&batch);
        // Text longer than the limits can come back over them after escaping; only
        // compare what still fits.
        if let Ok(back) = json::decode_telemetry(&j, &limits) {
            assert_eq!(back, batch);
        }
        if let Ok(back) = protobuf::decode_telemetry(&p, &limits) {
            assert_eq!(back, batch);
        }
    }
});
