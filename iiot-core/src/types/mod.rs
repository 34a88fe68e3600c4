//! Domain types, validated at construction.
//!
//! A value of one of these types is valid by construction: a [`DeviceId`] is a
//! legal topic segment, a [`Sample`] with Good quality has a value, a
//! [`Timestamp`] lies in the representable range. Codecs convert between these
//! and the generated wire types in [`crate::proto`].

mod command;
mod config;
mod data_loss;
mod ids;
mod ota;

/// Reason enums on the wire: named values numbered 1.. in declaration order, 0
/// unspecified, any other number kept as it came.
mod wire_enum {
    pub(super) fn to_wire<T: PartialEq + Copy>(all: &[T], v: T) -> i32 {
        all.iter().position(|r| *r == v).map_or(0, |i| i as i32 + 1)
    }

    pub(super) fn from_wire<T: Copy>(all: &[T], n: i32, unknown: fn(i32) -> T) -> Option<T> {
        match n {
            0 => None,
            n => Some(
                usize::try_from(n - 1)
                    .ok()
                    .and_then(|i| all.get(i).copied())
                    .unwrap_or(unknown(n)),
            ),
        }
    }
}
mod status;
mod telemetry;
mod time;
mod value;

pub use command::{
    AckReason, Command, CommandAck, CommandState, Constraints, Expect, Interlock, Operation, WRITE,
};
pub use config::{ConfigDesired, ConfigReported};
pub use data_loss::{DataLoss, DataLossReason};
pub use ids::{DeviceId, MessageId, SegmentProblem, Sequence, TagPath, check_segment};
pub use ota::{
    ManifestBody, ManifestSignature, OtaReason, OtaState, OtaStatus, SignatureAlgorithm,
    SignedManifest,
};
pub use status::{Backlog, SourceHealth, Status};
pub use telemetry::{BatchMetadata, Sample, TelemetryBatch};
pub use time::Timestamp;
pub use value::Value;

/// A value that breaks a domain rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// An invalid device id.
    #[error("device id {value:?} {problem}")]
    DeviceId {
        /// The rejected text.
        value: String,
        /// What is wrong.
        problem: SegmentProblem,
    },
    /// An invalid tag path.
    #[error("tag path {value:?}: segment {segment:?} {problem}")]
    TagPath {
        /// The rejected path.
        value: String,
        /// The offending segment (empty when the whole path is at fault).
        segment: String,
        /// What is wrong.
        problem: SegmentProblem,
    },
    /// A message id that is not 16 bytes.
    #[error("message id must be 16 bytes, got {len}")]
    MessageIdLength {
        /// The length received.
        len: usize,
    },
    /// A message id text that is not a ULID.
    #[error("message id {value:?} is not a ULID")]
    MessageIdText {
        /// The text received.
        value: String,
    },
    /// A timestamp outside 1970..2262.
    #[error("timestamp {unix_ns} ns is outside 1970-01-01..2262-04-11")]
    Timestamp {
        /// The rejected value (ns since the epoch).
        unix_ns: i64,
    },
    /// A timestamp text that is not RFC 3339 or is out of range.
    #[error("timestamp {value:?} is not an RFC 3339 time in 1970..2262")]
    TimestampText {
        /// The text received.
        value: String,
    },
    /// A Good sample without a value.
    #[error("sample of tag {tag:?} has Good quality but no value")]
    GoodWithoutValue {
        /// The tag.
        tag: String,
    },
    /// An impossible data-loss range.
    #[error("data-loss range {first}..={last} cannot hold {count} lost records")]
    DataLossRange {
        /// First sequence.
        first: u64,
        /// Last sequence.
        last: u64,
        /// Count claimed.
        count: u64,
    },
    /// A required field is missing or zero.
    #[error("field {field} is required")]
    Missing {
        /// The field's name.
        field: &'static str,
    },
    /// A field's value is out of its domain.
    #[error("field {field}: {reason}")]
    Field {
        /// The field's name.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}
