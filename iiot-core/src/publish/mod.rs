//! The confirmed-publish contract between the edge (outbox forwarder) and a
//! transport (MQTT session, or anything else that can confirm delivery).
//!
//! A transport implements [`ConfirmedPublish`]; the future it returns resolves
//! only once the peer has confirmed the message (for MQTT QoS 1: the PUBACK).
//! "Confirmed" means the broker has it, not that a database has it.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

mod broker;

pub use broker::{BrokerUrl, BrokerUrlError, DEFAULT_PORT, DEFAULT_TLS_PORT};

/// Delivery guarantee requested for one publish.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum QoS {
    /// Fire and forget. A confirmed publish at this level resolves once written to the socket.
    AtMostOnce,
    /// The peer acknowledges (MQTT PUBACK). Default: telemetry, alarms, acks.
    #[default]
    AtLeastOnce,
}

/// One message to publish: topic, payload and delivery options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    /// Full topic, e.g. a [`crate::topic::Topic`] rendered to a string.
    pub topic: String,
    /// The payload, forwarded byte for byte.
    pub payload: Bytes,
    /// Delivery guarantee.
    pub qos: QoS,
    /// Whether the broker should retain it (status, birth).
    pub retain: bool,
    /// How long the broker may keep it for a subscriber before dropping it
    /// (MQTT 5 message expiry interval, whole seconds on the wire); `None` = no
    /// deadline. Transports without expiry ignore it. Commands set it from their TTL.
    pub expiry: Option<Duration>,
}

impl OutboundMessage {
    /// A QoS 1, non-retained message.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            payload: payload.into(),
            qos: QoS::AtLeastOnce,
            retain: false,
            expiry: None,
        }
    }

    /// Sets the message expiry (see [`OutboundMessage::expiry`]).
    #[must_use]
    pub fn with_expiry(mut self, expiry: Duration) -> Self {
        self.expiry = Some(expiry);
        self
    }

    /// Sets the QoS.
    #[must_use]
    pub fn with_qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    /// Sets the retain flag.
    #[must_use]
    pub fn with_retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }
}

/// Why a confirmed publish failed. The message is always given back.
#[derive(Debug, thiserror::Error)]
#[error("publish to {topic} failed: {kind}", topic = message.topic)]
pub struct PublishError {
    /// The message that was not confirmed, returned to the caller.
    pub message: OutboundMessage,
    /// What went wrong.
    pub kind: PublishErrorKind,
}

/// The class of a publish failure; callers react differently to each.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishErrorKind {
    /// Not connected now; retry after reconnect.
    #[error("not connected")]
    NotConnected,
    /// The connection dropped before the confirmation arrived. The peer may or
    /// may not have the message: resend (at least once) and let the consumer dedupe.
    #[error("connection lost before confirmation")]
    ConnectionLost,
    /// The confirmation did not arrive in time.
    #[error("timed out waiting for confirmation")]
    Timeout,
    /// The transport's queue is full (back-pressure); retry later.
    #[error("transport queue full")]
    QueueFull,
    /// The peer refused the message (e.g. MQTT 5 reason code, ACL); resending will not help.
    #[error("rejected by peer: {reason}")]
    Rejected {
        /// The peer's reason.
        reason: String,
    },
    /// The transport is shut down for good.
    #[error("transport closed")]
    Closed,
    /// The broker answered the publish with a refusal (an MQTT 5 PUBACK reason
    /// code): it does not have the message. Resending the same message will be
    /// refused again until the cause (ACL, quota, topic) is fixed.
    #[error("refused by the broker: {refusal}")]
    Refused {
        /// The broker's reason.
        refusal: PublishRefusal,
    },
}

impl PublishErrorKind {
    /// Whether retrying the same message later can succeed without a change
    /// elsewhere (an ACL, a quota, the topic).
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            Self::Rejected { .. } | Self::Closed | Self::Refused { .. }
        )
    }
}

/// Why a broker refused a publish: the MQTT 5 PUBACK reason codes of failure
/// (MQTT 5.0, 3.4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum PublishRefusal {
    /// 0x80: unspecified error.
    #[error("unspecified error (0x80)")]
    Unspecified,
    /// 0x83: implementation specific error.
    #[error("implementation specific error (0x83)")]
    ImplementationSpecific,
    /// 0x87: not authorized (the broker's ACL denies this topic to this client).
    #[error("not authorized (0x87)")]
    NotAuthorized,
    /// 0x90: topic name invalid.
    #[error("topic name invalid (0x90)")]
    TopicNameInvalid,
    /// 0x91: packet identifier in use.
    #[error("packet identifier in use (0x91)")]
    PacketIdInUse,
    /// 0x97: quota exceeded.
    #[error("quota exceeded (0x97)")]
    QuotaExceeded,
    /// 0x99: payload format invalid.
    #[error("payload format invalid (0x99)")]
    PayloadFormatInvalid,
}

impl PublishRefusal {
    /// The reason code on the wire.
    pub fn code(self) -> u8 {
        match self {
            Self::Unspecified => 0x80,
            Self::ImplementationSpecific => 0x83,
            Self::NotAuthorized => 0x87,
            Self::TopicNameInvalid => 0x90,
            Self::PacketIdInUse => 0x91,
            Self::QuotaExceeded => 0x97,
            Self::PayloadFormatInvalid => 0x99,
        }
    }

    /// The refusal of a reason code; `None` for success codes and codes that
    /// are not PUBACK failures.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x80 => Self::Unspecified,
            0x83 => Self::ImplementationSpecific,
            0x87 => Self::NotAuthorized,
            0x90 => Self::TopicNameInvalid,
            0x91 => Self::PacketIdInUse,
            0x97 => Self::QuotaExceeded,
            0x99 => Self::PayloadFormatInvalid,
            _ => return None,
        })
    }
}

/// A transport that can tell when a message was confirmed by its peer.
///
/// Implementations must be cancel safe in this sense: dropping the returned
/// future never loses track of the packet inside the transport, and the caller,
/// having no confirmation, will publish the message again (at least once).
pub trait ConfirmedPublish: Send + Sync {
    /// Publishes `message` and resolves once the peer confirmed it.
    ///
    /// # Errors
    /// [`PublishError`] with the message given back when it was not confirmed.
    fn publish_confirmed(
        &self,
        message: OutboundMessage,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_codes_round_trip_and_success_codes_are_not_refusals() {
        for code in 0u8..=255 {
            if let Some(r) = PublishRefusal::from_code(code) {
                assert_eq!(r.code(), code);
                assert!(code >= 0x80, "{code:#04x}");
                assert!(!PublishErrorKind::Refused { refusal: r }.is_retryable());
            }
        }
        assert_eq!(PublishRefusal::from_code(0x00), None);
        assert_eq!(PublishRefusal::from_code(0x10), None);
        assert_eq!(
            PublishRefusal::from_code(0x87),
            Some(PublishRefusal::NotAuthorized)
        );
    }

    #[test]
    fn expiry_is_absent_unless_set() {
        let m = OutboundMessage::new("t", b"x".to_vec());
        assert_eq!(m.expiry, None);
        assert_eq!(
            m.with_expiry(Duration::from_secs(30)).expiry,
            Some(Duration::from_secs(30))
        );
    }
}
