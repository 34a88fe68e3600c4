//! Every payload a consumer receives goes through the router: for any bytes and
//! any kind it decodes or rejects with the original bytes; never panics.
#![no_main]

use iiot_core::version::{MessageKind, Router};
use libfuzzer_sys::fuzz_target;

const KINDS: [MessageKind; 9] = [
    MessageKind::Telemetry,
    MessageKind::Status,
    MessageKind::DataLoss,
    MessageKind::Command,
    MessageKind::CommandAck,
    MessageKind::OtaManifest,
    MessageKind::OtaStatus,
    MessageKind::ConfigDesired,
    MessageKind::ConfigReported,
];

fuzz_target!(|data: &[u8]| {
    let Some((&k, payload)) = data.split_first() else {
        return;
    };
    let kind = KINDS[usize::from(k) % KINDS.len()];
    let router = Router::default();
    if let Err(rejected) = router.decode(kind, bytes::Bytes::copy_from_slice(payload)) {
        assert_eq!(&rejected.payload[..], payload);
    }
});
