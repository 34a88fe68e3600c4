//! Samples and telemetry batches.

use super::{DeviceId, MessageId, Sequence, TagPath, Timestamp, ValidationError, Value};
use crate::quality::Quality;

/// One reading of one tag: value, quality and source timestamp.
///
/// Invariant (checked at construction): a sample with Good quality has a value.
/// A sample without a value carries a non-Good quality saying why (a Modbus
/// timeout, a device exception, a lost connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    tag: TagPath,
    value: Option<Value>,
    quality: Quality,
    source_time: Timestamp,
}

impl Sample {
    /// A sample, checked.
    ///
    /// # Errors
    /// [`ValidationError::GoodWithoutValue`] when `quality` is Good and `value` is `None`.
    pub fn new(
        tag: TagPath,
        value: Option<Value>,
        quality: Quality,
        source_time: Timestamp,
    ) -> Result<Self, ValidationError> {
        if value.is_none() && quality.is_good() {
            return Err(ValidationError::GoodWithoutValue {
                tag: tag.to_string(),
            });
        }
        Ok(Self {
            tag,
            value,
            quality,
            source_time,
        })
    }

    /// A Good sample.
    pub fn good(tag: TagPath, value: impl Into<Value>, source_time: Timestamp) -> Self {
        Self {
            tag,
            value: Some(value.into()),
            quality: Quality::GOOD,
            source_time,
        }
    }

    /// A sample without a value, with a quality that is not Good (a Good `quality`
    /// is replaced by [`Quality::BAD`], never silently kept).
    pub fn without_value(tag: TagPath, quality: Quality, source_time: Timestamp) -> Self {
        let quality = if quality.is_good() {
            Quality::BAD
        } else {
            quality
        };
        Self {
            tag,
            value: None,
            quality,
            source_time,
        }
    }

    /// The tag.
    pub fn tag(&self) -> &TagPath {
        &self.tag
    }
    /// The value, if any.
    pub fn value(&self) -> Option<&Value> {
        self.value.as_ref()
    }
    /// The quality.
    pub fn quality(&self) -> Quality {
        self.quality
    }
    /// When the source measured it.
    pub fn source_time(&self) -> Timestamp {
        self.source_time
    }
    /// Takes the parts apart.
    pub fn into_parts(self) -> (TagPath, Option<Value>, Quality, Timestamp) {
        (self.tag, self.value, self.quality, self.source_time)
    }
}

/// Batch metadata: who built it, on which firmware.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchMetadata {
    /// Firmware version of the publishing gateway.
    pub firmware_version: Option<String>,
    /// Gateway that built the batch, when not the device itself.
    pub gateway_id: Option<String>,
}

/// A batch of samples from one device: the unit of telemetry on the wire, of
/// dedupe (`device_id`, `message_id`) and of gap detection (`seq`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryBatch {
    /// Unique id; with `device_id` the dedupe key.
    pub message_id: MessageId,
    /// The publishing device.
    pub device_id: DeviceId,
    /// Per-device monotonic sequence number.
    pub seq: Sequence,
    /// When the gateway built the batch.
    pub gateway_time: Timestamp,
    /// The samples, in the order they were taken.
    pub samples: Vec<Sample>,
    /// Metadata.
    pub metadata: BatchMetadata,
}

impl TelemetryBatch {
    /// A batch with a fresh message id, stamped now, without metadata.
    pub fn new(device_id: DeviceId, seq: Sequence, samples: Vec<Sample>) -> Self {
        Self {
            message_id: MessageId::generate(),
            device_id,
            seq,
            gateway_time: Timestamp::now(),
            samples,
            metadata: BatchMetadata::default(),
        }
    }
}
