//! Encoding of the retained `status` message (birth and last will).
//!
//! The session takes the encoder as a function so that the Protobuf status codec
//! of `iiot-core` can replace the JSON form here without touching the session.

use std::sync::Arc;

use bytes::Bytes;
use iiot_core::types::Status;

/// Turns a [`Status`] into the payload of the retained `…/status` message.
pub type StatusEncoder = Arc<dyn Fn(&Status) -> Bytes + Send + Sync>;

/// The default encoder: the JSON form of core's `Status` contract
/// ([`iiot_core::codec::json::encode_status`], see `docs/contracts.md`), the form
/// `mosquitto_sub` users read:
///
/// ```text
/// {"schema_version":1,"device_id":"pump-7","online":true,"ts":"2026-01-01T00:00:00Z",
///  "firmware_version":"1.2.0","gateway_id":"gw-1","start_time":"…"}
/// ```
///
/// Use [`protobuf_status_encoder`] for the Protobuf form.
pub fn json_status(status: &Status) -> Bytes {
    Bytes::from(iiot_core::codec::json::encode_status(status))
}

/// The Protobuf form of core's `Status` contract.
pub fn protobuf_status(status: &Status) -> Bytes {
    Bytes::from(iiot_core::codec::protobuf::encode_status(status))
}

/// The Protobuf encoder as a [`StatusEncoder`].
pub fn protobuf_status_encoder() -> StatusEncoder {
    Arc::new(protobuf_status)
}

/// The JSON encoder as a [`StatusEncoder`].
pub fn json_status_encoder() -> StatusEncoder {
    Arc::new(json_status)
}

#[cfg(test)]
mod tests {
    use iiot_core::types::{DeviceId, Timestamp};

    use super::*;

    #[test]
    fn encoders_speak_core_contract() {
        let mut s = Status::offline(DeviceId::new("d1").unwrap(), None);
        s.time = Timestamp::UNIX_EPOCH;
        assert_eq!(
            json_status(&s),
            Bytes::from_static(
                br#"{"schema_version":1,"device_id":"d1","online":false,"ts":"1970-01-01T00:00:00Z"}"#
            )
        );
        let limits = iiot_core::codec::Limits::default();
        assert_eq!(
            iiot_core::codec::json::decode_status(&json_status(&s), &limits).unwrap(),
            s
        );
        assert_eq!(
            iiot_core::codec::protobuf::decode_status(&protobuf_status(&s), &limits).unwrap(),
            s
        );
    }
}
