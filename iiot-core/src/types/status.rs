//! Device status (birth, last will, heartbeat).

use std::time::Duration;

use super::{DeviceId, Timestamp};

/// What waits in a gateway's outbox for the broker (in the heartbeat).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Records not yet confirmed.
    pub records: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Age of the oldest (millisecond resolution on the wire); `None` when empty.
    pub oldest_age: Option<Duration>,
}

impl Backlog {
    /// The oldest record's age in whole milliseconds, as both wire forms carry it.
    pub fn oldest_age_ms(&self) -> Option<u64> {
        self.oldest_age
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// One source of readings of a gateway and its last good read (in the heartbeat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceHealth {
    /// The source's name, unique within the gateway.
    pub name: String,
    /// Source time of its newest Good reading; `None` before the first.
    pub last_good: Option<Timestamp>,
    /// Whether it reaches its device; `None` when the source does not say (or has
    /// not tried yet).
    pub connected: Option<bool>,
}

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
    /// The outbox backlog, in a gateway's periodic heartbeat.
    pub backlog: Option<Backlog>,
    /// Each source's health, in the heartbeat.
    pub sources: Vec<SourceHealth>,
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
            backlog: None,
            sources: Vec::new(),
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
            backlog: None,
            sources: Vec::new(),
        }
    }
}
