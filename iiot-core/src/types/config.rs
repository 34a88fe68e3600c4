//! Device configuration: desired (platform to device) and reported.

use std::collections::BTreeMap;

use super::{DeviceId, Timestamp, Value};

/// The configuration the platform wants a device to run, by revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDesired {
    /// Target device.
    pub device_id: DeviceId,
    /// Monotonic revision.
    pub revision: u64,
    /// Settings by name.
    pub settings: BTreeMap<String, Value>,
    /// When issued.
    pub issued_at: Timestamp,
}

/// The configuration a device runs, and what it could not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigReported {
    /// Reporting device.
    pub device_id: DeviceId,
    /// The revision applied.
    pub applied_revision: u64,
    /// Settings in effect.
    pub settings: BTreeMap<String, Value>,
    /// When.
    pub time: Timestamp,
    /// Settings not applied, with the reason.
    pub errors: BTreeMap<String, String>,
}
