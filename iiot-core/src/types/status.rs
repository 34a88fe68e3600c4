//! Device status (birth and last will).

use super::{DeviceId, Timestamp};

/// The retained `status` of a device: `online = true` in the birth published after
/// every connect, `online = false` in the last will and on clean shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The device.
    pub device_id: DeviceId,
    /// Online or not.
    pub online: bool,
    /// When produced (the epoch in a last will registered long before it fires).
    pub time: Timestamp,
    /// Running firmware version.
    pub firmware_version: Option<String>,
    /// Publishing gateway.
    pub gateway_id: Option<String>,
    /// Process start time.
    pub start_time: Option<Timestamp>,
    /// Why offline, when known.
    pub reason: Option<String>,
}

impl Status {
    /// A birth message (online) stamped now.
    pub fn birth(device_id: DeviceId) -> Self {
        Self {
            device_id,
            online: true,
            time: Timestamp::now(),
            firmware_version: None,
            gateway_id: None,
            start_time: None,
            reason: None,
        }
    }

    /// An offline message for a last will or shutdown.
    pub fn offline(device_id: DeviceId, reason: Option<String>) -> Self {
        Self {
            device_id,
            online: false,
            time: Timestamp::now(),
            firmware_version: None,
            gateway_id: None,
            start_time: None,
            reason,
        }
    }
}
