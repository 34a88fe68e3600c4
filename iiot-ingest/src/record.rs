//! What the pipeline hands to a sink: accepted telemetry, announced data loss,
//! sequence gaps, commands and their acks, and dead letters, committed together.

use bytes::Bytes;
use iiot_core::codec::DecodeError;
use iiot_core::types::{
    Command, CommandAck, DataLoss, DeviceId, MessageId, Sequence, TelemetryBatch, Timestamp,
};

/// A telemetry batch that passed decoding and validation, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedBatch {
    /// The decoded batch. Its samples become one row each.
    pub batch: TelemetryBatch,
    /// The topic it arrived on.
    pub topic: String,
    /// When ingest received it.
    pub received_at: Timestamp,
}

impl AcceptedBatch {
    /// The idempotency key at the sink: `(device_id, message_id)`.
    pub fn key(&self) -> (&DeviceId, MessageId) {
        (&self.batch.device_id, self.batch.message_id)
    }
}

/// A command seen on its way to a device (`.../commands/{id}`, published by an
/// issuer), with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedCommand {
    /// The decoded, validated command.
    pub command: Command,
    /// The topic it arrived on.
    pub topic: String,
    /// When ingest received it.
    pub received_at: Timestamp,
}

impl AcceptedCommand {
    /// The key of its row in the commands table: `(device_id, command_id)`.
    pub fn key(&self) -> (&DeviceId, MessageId) {
        (&self.command.device_id, self.command.id)
    }
}

/// A device's acknowledgement of a command (`.../commands/{id}/ack`), with where
/// it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedAck {
    /// The decoded ack.
    pub ack: CommandAck,
    /// The topic it arrived on.
    pub topic: String,
    /// When ingest received it.
    pub received_at: Timestamp,
}

impl AcceptedAck {
    /// The key of its command's row in the commands table: `(device_id, command_id)`.
    pub fn key(&self) -> (&DeviceId, MessageId) {
        (&self.ack.device_id, self.ack.command_id)
    }
}

/// Why a payload went to the dead-letter destination.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// The router rejected it: core's typed reason (the version it did not
    /// know, the limit exceeded, the field that broke a rule).
    Decode(DecodeError),
    /// The topic is not a UNS topic.
    BadTopic,
    /// The device id in the payload differs from the topic's.
    DeviceMismatch,
    /// The command id in a command or ack differs from the `{id}` level of its
    /// topic (`.../commands/{id}` or `.../commands/{id}/ack`).
    CommandIdMismatch,
    /// The sink refused it on its own (a poison record isolated from its batch).
    Poison,
    /// A kind of message this pipeline does not ingest.
    UnexpectedKind,
}

impl DeadLetterReason {
    /// A stable label for metrics and the `reason` column, e.g.
    /// `decode:unsupported_version` (`decode:` and
    /// [`DecodeError::label`]), `bad_topic`, `device_mismatch`,
    /// `command_id_mismatch`, `poison`, `unexpected_kind`.
    ///
    /// **Stability:** stored in the sinks' `reason` column and header and used
    /// as a metric label; never change an existing label.
    pub fn label(&self) -> String {
        match self {
            Self::Decode(e) => format!("decode:{}", e.label()),
            Self::BadTopic => "bad_topic".into(),
            Self::DeviceMismatch => "device_mismatch".into(),
            Self::CommandIdMismatch => "command_id_mismatch".into(),
            Self::Poison => "poison".into(),
            Self::UnexpectedKind => "unexpected_kind".into(),
        }
    }
}

/// A payload that will not become rows, kept byte for byte with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The topic it arrived on.
    pub topic: String,
    /// The original bytes.
    pub payload: Bytes,
    /// Why.
    pub reason: DeadLetterReason,
    /// Human-readable detail (the decode error's text).
    pub detail: String,
    /// When ingest received it.
    pub received_at: Timestamp,
}

/// A range of sequence numbers of one device that has not arrived (yet).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Gap {
    /// The device.
    pub device_id: DeviceId,
    /// First missing sequence (inclusive).
    pub first: Sequence,
    /// Last missing sequence (inclusive).
    pub last: Sequence,
    /// When ingest first noticed it.
    pub first_seen: Timestamp,
    /// Whether the gateway announced this loss with a `DataLoss` record (so the
    /// data will never come) rather than ingest inferring it from the sequence.
    pub announced: bool,
}

impl Gap {
    /// Number of sequence numbers in the gap.
    pub fn len(&self) -> u64 {
        self.last.0.saturating_sub(self.first.0).saturating_add(1)
    }

    /// Never true: a gap holds at least one number. (For clippy's `len_without_is_empty`.)
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A change to the set of open gaps, applied by the sink in the same transaction
/// as the rows that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GapChange {
    /// A new gap opened.
    Opened(Gap),
    /// The gap starting at `first` of `device_id` was replaced by `remaining`
    /// (zero, one or two smaller gaps) because late data filled part of it.
    Narrowed {
        /// The device.
        device_id: DeviceId,
        /// `first` of the gap that changed (its identity).
        first: Sequence,
        /// What is left of it.
        remaining: Vec<Gap>,
        /// When.
        at: Timestamp,
    },
}

/// One atomic unit of work for a sink. Everything in it is committed together, or
/// nothing is; only then does the pipeline acknowledge the broker.
///
/// Not `Eq`: a [`Command`]'s constraints hold floats.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommitBatch {
    /// Accepted telemetry, in arrival order. The sink skips any whose
    /// `(device_id, message_id)` it already holds (redelivery after a crash
    /// between commit and broker ack) and writes each of the others' samples
    /// as one row.
    pub telemetry: Vec<AcceptedBatch>,
    /// Loss announced by gateways, stored as such.
    pub data_loss: Vec<DataLoss>,
    /// Changes to the set of open gaps.
    pub gaps: Vec<GapChange>,
    /// Commands seen on their way to devices, in arrival order. A database
    /// sink upserts each into its commands table (see
    /// [`commands`](crate::commands) for the rules); re-delivery changes nothing.
    pub commands: Vec<AcceptedCommand>,
    /// Command acks from devices, in arrival order, duplicates included (a
    /// database sink ignores those marked [`duplicate`](CommandAck::duplicate)).
    pub command_acks: Vec<AcceptedAck>,
    /// Payloads that will not become rows.
    pub dead_letters: Vec<DeadLetter>,
}

impl CommitBatch {
    /// Total samples across the telemetry batches.
    pub fn sample_count(&self) -> usize {
        self.telemetry.iter().map(|b| b.batch.samples.len()).sum()
    }

    /// Whether there is nothing to commit.
    pub fn is_empty(&self) -> bool {
        self.telemetry.is_empty()
            && self.data_loss.is_empty()
            && self.gaps.is_empty()
            && self.commands.is_empty()
            && self.command_acks.is_empty()
            && self.dead_letters.is_empty()
    }
}

/// What a sink did with a [`CommitBatch`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitReport {
    /// Telemetry batches written.
    pub batches_written: u64,
    /// Telemetry batches skipped because the sink already had them.
    pub batches_skipped: u64,
    /// Rows (samples) written.
    pub rows_written: u64,
}

/// Per-device state a sink can restore after a restart, so gap detection resumes
/// where it stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSequenceState {
    /// The device.
    pub device_id: DeviceId,
    /// Highest sequence number stored.
    pub highest_seq: Sequence,
    /// Gaps still open.
    pub open_gaps: Vec<Gap>,
}

#[cfg(test)]
mod tests {
    use iiot_core::codec::LimitError;

    use super::*;

    /// The labels are a stored format: these are the ones sinks have written.
    #[test]
    fn labels_are_stable() {
        let cases = [
            (DeadLetterReason::Decode(DecodeError::Empty), "decode:empty"),
            (
                DeadLetterReason::Decode(DecodeError::UnsupportedVersion { version: 9 }),
                "decode:unsupported_version",
            ),
            (
                DeadLetterReason::Decode(DecodeError::MissingVersion),
                "decode:missing_version",
            ),
            (
                DeadLetterReason::Decode(DecodeError::Protobuf {
                    reason: "truncated varint".into(),
                }),
                "decode:malformed_protobuf",
            ),
            (
                DeadLetterReason::Decode(DecodeError::Limit(LimitError::PayloadTooLarge {
                    len: 2,
                    limit: 1,
                })),
                "decode:limit",
            ),
            (DeadLetterReason::BadTopic, "bad_topic"),
            (DeadLetterReason::DeviceMismatch, "device_mismatch"),
            (DeadLetterReason::CommandIdMismatch, "command_id_mismatch"),
            (DeadLetterReason::Poison, "poison"),
            (DeadLetterReason::UnexpectedKind, "unexpected_kind"),
        ];
        for (reason, label) in cases {
            assert_eq!(reason.label(), label, "{reason:?}");
        }
    }
}
