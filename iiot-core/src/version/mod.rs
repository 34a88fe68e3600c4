//! Schema-version routing: one entry point for every payload a consumer receives.
//!
//! [`Router::decode`] tells the wire form, reads the schema version before
//! anything else, decodes v1 into typed values, and returns anything it cannot
//! decode as a [`Rejected`] carrying the reason **and the original bytes**, so
//! ingest can dead-letter it. It never panics and never drops a payload silently.
//!
//! ```
//! use iiot_core::codec::{protobuf, Limits};
//! use iiot_core::types::{DeviceId, Sample, Sequence, TagPath, TelemetryBatch, Timestamp};
//! use iiot_core::version::{Message, MessageKind, Router};
//!
//! let batch = TelemetryBatch::new(
//!     DeviceId::new("plc-01").unwrap(),
//!     Sequence(7),
//!     vec![Sample::good(TagPath::new("tank1/level").unwrap(), 42.5, Timestamp::now())],
//! );
//! let router = Router::new(Limits::default());
//! let decoded = router.decode(MessageKind::Telemetry, protobuf::encode_telemetry(&batch).into()).unwrap();
//! assert!(matches!(decoded.message, Message::Telemetry(ref b) if *b == batch));
//!
//! let rejected = router.decode(MessageKind::Telemetry, br#"{"schema_version": 9}"#.to_vec().into()).unwrap_err();
//! assert_eq!(rejected.reason.label(), "unsupported_version");
//! assert_eq!(&rejected.payload[..], br#"{"schema_version": 9}"#);
//! ```

use bytes::Bytes;

use crate::codec::{DecodeError, Limits, SCHEMA_VERSION, WireFormat, json, protobuf};
use crate::topic::{Topic, TopicClass, UnsPath};
use crate::types::{
    Command, CommandAck, ConfigDesired, ConfigReported, DataLoss, DeviceId, OtaStatus,
    SignedManifest, Status, TagPath, TelemetryBatch,
};

/// What a payload is meant to be, usually known from its topic's class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MessageKind {
    /// A `TelemetryBatch` (topic class `telemetry`).
    Telemetry,
    /// A `Status` (topic class `status`).
    Status,
    /// A `DataLoss` event (topic `.../telemetry/data-loss`).
    DataLoss,
    /// A `Command` (topic class `commands/{id}`).
    Command,
    /// A `CommandAck` (topic class `commands/{id}/ack`).
    CommandAck,
    /// A `SignedManifest` (topic class `ota/notification`); the body is not verified here.
    OtaManifest,
    /// An `OtaStatus` (topic class `ota/status`).
    OtaStatus,
    /// A `ConfigDesired` (topic class `config/desired`).
    ConfigDesired,
    /// A `ConfigReported` (topic class `config/reported`).
    ConfigReported,
}

/// The telemetry sub-level reserved for data-loss events:
/// `{enterprise}/{site}/{area}/{line}/{device_type}/{device_id}/telemetry/data-loss`.
/// It travels with (and is subscribed together with) the device's telemetry.
pub const DATA_LOSS_SUBTOPIC: &str = "data-loss";

/// The topic a device's data-loss events are published on.
pub fn data_loss_topic(path: &UnsPath) -> Topic {
    // "data-loss" is a valid tag path, so this cannot fail; fall back to the plain
    // telemetry topic rather than panic if the rules ever change.
    match TagPath::new(DATA_LOSS_SUBTOPIC) {
        Ok(tag) => path.telemetry_of(tag),
        Err(_) => path.telemetry(),
    }
}

impl MessageKind {
    /// What a payload on `topic` is meant to be.
    pub fn of_topic(topic: &Topic) -> Self {
        Self::of_class(&topic.class)
    }

    /// What a payload of topic class `class` is meant to be.
    pub fn of_class(class: &TopicClass) -> Self {
        match class {
            TopicClass::Telemetry(Some(tag)) if tag.as_str() == DATA_LOSS_SUBTOPIC => {
                Self::DataLoss
            }
            TopicClass::Telemetry(_) => Self::Telemetry,
            TopicClass::Status => Self::Status,
            TopicClass::Command(_) => Self::Command,
            TopicClass::CommandAck(_) => Self::CommandAck,
            TopicClass::ConfigDesired => Self::ConfigDesired,
            TopicClass::ConfigReported => Self::ConfigReported,
            TopicClass::OtaNotification => Self::OtaManifest,
            TopicClass::OtaStatus => Self::OtaStatus,
        }
    }

    /// The kind's name, e.g. `telemetry`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Telemetry => "telemetry",
            Self::Status => "status",
            Self::DataLoss => "data_loss",
            Self::Command => "command",
            Self::CommandAck => "command_ack",
            Self::OtaManifest => "ota_manifest",
            Self::OtaStatus => "ota_status",
            Self::ConfigDesired => "config_desired",
            Self::ConfigReported => "config_reported",
        }
    }
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Message {
    /// Telemetry.
    Telemetry(TelemetryBatch),
    /// Status.
    Status(Status),
    /// Data loss.
    DataLoss(DataLoss),
    /// A command.
    Command(Command),
    /// A command acknowledgement.
    CommandAck(CommandAck),
    /// A signed firmware manifest (signatures not yet verified).
    OtaManifest(SignedManifest),
    /// An OTA status report.
    OtaStatus(OtaStatus),
    /// Desired configuration.
    ConfigDesired(ConfigDesired),
    /// Reported configuration.
    ConfigReported(ConfigReported),
}

impl Message {
    /// The device the message is from or for; `None` for a firmware manifest,
    /// which names a device type (in its body, read only after verification).
    ///
    /// Ingest compares this with the `{device_id}` level of the topic the message
    /// arrived on: a mismatch means a device speaks for another one.
    pub fn device_id(&self) -> Option<&DeviceId> {
        match self {
            Self::Telemetry(m) => Some(&m.device_id),
            Self::Status(m) => Some(&m.device_id),
            Self::DataLoss(m) => Some(&m.device_id),
            Self::Command(m) => Some(&m.device_id),
            Self::CommandAck(m) => Some(&m.device_id),
            Self::OtaStatus(m) => Some(&m.device_id),
            Self::ConfigDesired(m) => Some(&m.device_id),
            Self::ConfigReported(m) => Some(&m.device_id),
            Self::OtaManifest(_) => None,
        }
    }
}

/// A successfully decoded payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The schema version it carried.
    pub version: u32,
    /// Its wire form.
    pub format: WireFormat,
    /// The typed message.
    pub message: Message,
}

/// A payload that could not be decoded: the reason and the untouched bytes, ready
/// for a dead-letter destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} payload ({format}, {len} bytes) rejected: {reason}", kind = kind.as_str(), format = format.as_str(), len = payload.len())]
pub struct Rejected {
    /// What the payload was meant to be.
    pub kind: MessageKind,
    /// The wire form it looked like.
    pub format: WireFormat,
    /// Why it was rejected.
    pub reason: DecodeError,
    /// The original bytes, exactly as received.
    pub payload: Bytes,
}

/// Reads the schema version first and decodes accordingly.
#[derive(Debug, Clone, Default)]
pub struct Router {
    limits: Limits,
}

impl Router {
    /// A router applying `limits` to every payload.
    pub fn new(limits: Limits) -> Self {
        Self { limits }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The schema versions this router decodes.
    pub fn supported_versions(&self) -> &'static [u32] {
        &[SCHEMA_VERSION]
    }

    /// Decodes `payload` as `kind`, in whichever wire form it is.
    ///
    /// # Errors
    /// [`Rejected`] with the reason and the original bytes.
    // The rejection carries the payload and a descriptive reason by value; it is the
    // cold path and boxing would only move the allocation.
    #[allow(clippy::result_large_err)]
    pub fn decode(&self, kind: MessageKind, payload: Bytes) -> Result<Decoded, Rejected> {
        let format = WireFormat::sniff(&payload);
        let l = &self.limits;
        let result = match (format, kind) {
            (WireFormat::Protobuf, MessageKind::Telemetry) => {
                protobuf::decode_telemetry(&payload, l).map(Message::Telemetry)
            }
            (WireFormat::Protobuf, MessageKind::Status) => {
                protobuf::decode_status(&payload, l).map(Message::Status)
            }
            (WireFormat::Protobuf, MessageKind::DataLoss) => {
                protobuf::decode_data_loss(&payload, l).map(Message::DataLoss)
            }
            (WireFormat::Json, MessageKind::Telemetry) => {
                json::decode_telemetry(&payload, l).map(Message::Telemetry)
            }
            (WireFormat::Json, MessageKind::Status) => {
                json::decode_status(&payload, l).map(Message::Status)
            }
            (WireFormat::Protobuf, MessageKind::Command) => {
                protobuf::decode_command(&payload, l).map(Message::Command)
            }
            (WireFormat::Protobuf, MessageKind::CommandAck) => {
                protobuf::decode_command_ack(&payload, l).map(Message::CommandAck)
            }
            (WireFormat::Protobuf, MessageKind::OtaManifest) => {
                protobuf::decode_signed_manifest(&payload, l).map(Message::OtaManifest)
            }
            (WireFormat::Protobuf, MessageKind::OtaStatus) => {
                protobuf::decode_ota_status(&payload, l).map(Message::OtaStatus)
            }
            (WireFormat::Protobuf, MessageKind::ConfigDesired) => {
                protobuf::decode_config_desired(&payload, l).map(Message::ConfigDesired)
            }
            (WireFormat::Protobuf, MessageKind::ConfigReported) => {
                protobuf::decode_config_reported(&payload, l).map(Message::ConfigReported)
            }
            (WireFormat::Json, _) => Err(DecodeError::NoJsonForm {
                kind: kind.as_str(),
            }),
        };
        match result {
            Ok(message) => Ok(Decoded {
                version: SCHEMA_VERSION,
                format,
                message,
            }),
            Err(reason) => Err(Rejected {
                kind,
                format,
                reason,
                payload,
            }),
        }
    }
}
