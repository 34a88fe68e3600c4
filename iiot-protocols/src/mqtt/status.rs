//! Encoding of the retained `status` message (birth and last will).
//!
//! The session takes the encoder as a function so that the Protobuf status codec
//! of `iiot-core` can replace the JSON form here without touching the session.

use std::sync::Arc;

use bytes::Bytes;
use iiot_core::types::Status;

/// Turns a [`Status`] into the payload of the retained `…/status` message.
pub type StatusEncoder = Arc<dyn Fn(&Status) -> Bytes + Send + Sync>;

/// The default encoder: one JSON object, the form `mosquitto_sub` users read.
///
/// ```text
/// {"device_id":"pump-7","online":true,"time":"2026-01-01T00:00:00Z",
///  "firmware_version":"1.2.0","gateway_id":"gw-1","start_time":"…","reason":null}
/// ```
///
/// Optional fields are `null` when unknown. **Stability:** this is a wire
/// format; fields are only ever added.
pub fn json_status(status: &Status) -> Bytes {
    let value = serde_json::json!({
        "device_id": status.device_id.as_str(),
        "online": status.online,
        "time": status.time.to_rfc3339(),
        "firmware_version": status.firmware_version,
        "gateway_id": status.gateway_id,
        "start_time": status.start_time.map(iiot_core::types::Timestamp::to_rfc3339),
        "reason": status.reason,
    });
    Bytes::from(value.to_string())
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
    fn json_is_exact() {
        let mut s = Status::offline(DeviceId::new("d1").unwrap(), None);
        s.time = Timestamp::UNIX_EPOCH;
        assert_eq!(
            json_status(&s),
            Bytes::from_static(
                br#"{"device_id":"d1","firmware_version":null,"gateway_id":null,"online":false,"reason":null,"start_time":null,"time":"1970-01-01T00:00:00Z"}"#
            )
        );
    }
}
