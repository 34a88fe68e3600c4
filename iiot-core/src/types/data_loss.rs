//! Data-loss events.

use super::{DeviceId, MessageId, Sequence, Timestamp, ValidationError};

/// Why records were lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DataLossReason {
    /// A reason this version does not know (a newer sender).
    Unknown,
    /// The buffer was full and the drop-oldest policy discarded records.
    Overflow,
    /// Records were older than the buffer's age bound.
    Expired,
    /// The store was corrupt and was moved aside.
    StoreCorrupt,
    /// A record could not be read back.
    Unreadable,
    /// Appends failed after their sequence numbers were taken (the producer got
    /// the payloads back; the numbers stay empty).
    WriteFailed,
}

/// A contiguous range of sequence numbers that will never arrive, announced by
/// the gateway that lost them. Loss is never silent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataLoss {
    /// Unique id of this event.
    pub message_id: MessageId,
    /// The device whose records were lost.
    pub device_id: DeviceId,
    /// First lost sequence number (inclusive).
    first_seq: Sequence,
    /// Last lost sequence number (inclusive).
    last_seq: Sequence,
    /// How many records were lost; 0 when unknown.
    count: u64,
    /// Why.
    pub reason: DataLossReason,
    /// When detected.
    pub detected_at: Timestamp,
    /// Operator detail.
    pub detail: Option<String>,
    /// Bytes lost, when known.
    pub bytes: Option<u64>,
}

impl DataLoss {
    /// A data-loss event for `first..=last`, with `count` records lost (0 when the
    /// count is unknown, e.g. a corrupt store was moved aside).
    ///
    /// # Errors
    /// [`ValidationError::DataLossRange`] when `first > last` or `count` is larger
    /// than the range.
    pub fn new(
        device_id: DeviceId,
        first_seq: Sequence,
        last_seq: Sequence,
        count: u64,
        reason: DataLossReason,
        detected_at: Timestamp,
    ) -> Result<Self, ValidationError> {
        let span = last_seq
            .0
            .checked_sub(first_seq.0)
            .map(|d| d.saturating_add(1));
        match span {
            Some(span) if count <= span => Ok(Self {
                message_id: MessageId::generate(),
                device_id,
                first_seq,
                last_seq,
                count,
                reason,
                detected_at,
                detail: None,
                bytes: None,
            }),
            _ => Err(ValidationError::DataLossRange {
                first: first_seq.0,
                last: last_seq.0,
                count,
            }),
        }
    }

    /// First lost sequence number.
    pub fn first_seq(&self) -> Sequence {
        self.first_seq
    }
    /// Last lost sequence number.
    pub fn last_seq(&self) -> Sequence {
        self.last_seq
    }
    /// Number of records lost; 0 when unknown.
    pub fn count(&self) -> u64 {
        self.count
    }
}
