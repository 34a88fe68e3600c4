//! Errors of the MQTT session, by operation.

use std::io;
use std::path::PathBuf;

use iiot_core::types::{SegmentProblem, Timestamp};

/// The configuration cannot make a session. Nothing was sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The broker URL is not `mqtt://host[:port]` or `mqtts://host[:port]`.
    #[error("broker url {url:?}: {reason}")]
    BrokerUrl {
        /// The URL given.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The client id is not a valid device id.
    #[error("client id {client_id:?} {problem}")]
    ClientId {
        /// The client id given.
        client_id: String,
        /// What is wrong.
        problem: SegmentProblem,
    },
    /// A segment of the topic prefix is invalid.
    #[error("topic prefix {prefix:?}: segment {segment:?} {problem}")]
    TopicPrefix {
        /// The prefix given.
        prefix: String,
        /// The offending segment.
        segment: String,
        /// What is wrong.
        problem: SegmentProblem,
    },
    /// The device segment (last) of the topic prefix differs from the client id.
    #[error("topic prefix {prefix:?} must end with the client id {client_id:?}")]
    TopicPrefixDevice {
        /// The prefix given.
        prefix: String,
        /// The client id.
        client_id: String,
    },
    /// `mqtts://` without a CA file.
    #[error("mqtts:// needs ca_path")]
    MissingCa,
    /// Certificate files given for a plain `mqtt://` URL, or only one of cert and key.
    #[error("TLS files are inconsistent with the URL: {reason}")]
    TlsFiles {
        /// What is wrong.
        reason: &'static str,
    },
    /// A value out of range.
    #[error("{field}: {reason}")]
    Value {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// A CA, certificate or key file failed the identity check.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// A CA, certificate or key file failed the identity check made before connecting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
#[error("{path}: {problem}", path = path.display())]
pub struct IdentityError {
    /// The file at fault.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: IdentityProblem,
}

/// What is wrong with an identity file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityProblem {
    /// The file cannot be read (missing, permissions).
    #[error("cannot read: {0}")]
    Unreadable(#[source] io::Error),
    /// The file is not valid PEM.
    #[error("not valid PEM")]
    BadPem,
    /// The file holds no certificate.
    #[error("no certificate in file")]
    NoCertificate,
    /// The file holds no private key.
    #[error("no private key in file")]
    NoPrivateKey,
    /// The certificate is not parseable X.509.
    #[error("certificate is not valid X.509")]
    BadCertificate,
    /// The certificate has expired.
    #[error("certificate expired at {not_after}")]
    Expired {
        /// Its `notAfter`.
        not_after: Timestamp,
    },
    /// The certificate is not valid yet.
    #[error("certificate not valid before {not_before}")]
    NotYetValid {
        /// Its `notBefore`.
        not_before: Timestamp,
    },
    /// The certificate's subject has no common name.
    #[error("certificate subject has no CN")]
    NoCommonName,
    /// The certificate's CN differs from the client id.
    #[error("certificate CN {common_name:?} differs from client id {client_id:?}")]
    CommonNameMismatch {
        /// The certificate's CN.
        common_name: String,
        /// The configured client id.
        client_id: String,
    },
    /// TLS refused the certificate or key (e.g. key does not match, unsupported
    /// algorithm). The TLS library's error is the source.
    #[error("rejected by TLS: {0}")]
    Tls(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why a subscription failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[error("subscribe to {filter:?} failed: {kind}")]
pub struct SubscribeError {
    /// The topic filter.
    pub filter: String,
    /// What went wrong.
    pub kind: SubscribeErrorKind,
}

/// The class of a subscription failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeErrorKind {
    /// The filter is not a valid MQTT topic filter (checked by
    /// [`TopicFilter::parse`](iiot_core::topic::TopicFilter::parse) before anything is
    /// sent); `reason` says which rule it breaks.
    #[error("{reason}")]
    InvalidFilter {
        /// What iiot-core's filter parser reported (an
        /// [`InvalidFilter`](iiot_core::topic::TopicError::InvalidFilter) with its problem).
        reason: iiot_core::topic::TopicError,
    },
    /// The broker answered SUBACK with a failure: 0x80 under MQTT 3.1.1, the
    /// MQTT 5 reason code otherwise (0x87 not authorized, 0x8F filter invalid,
    /// 0x97 quota exceeded, 0x9E shared subscriptions not supported, ...).
    #[error("refused by the broker (reason {code:#04x})")]
    Refused {
        /// The SUBACK reason code.
        code: u8,
    },
    /// The request queue is full.
    #[error("queue full")]
    QueueFull,
    /// The connection dropped before the SUBACK. The subscription is remembered
    /// and restored after the reconnect.
    #[error("connection lost before SUBACK")]
    ConnectionLost,
    /// No SUBACK in time.
    #[error("timed out")]
    Timeout,
    /// The session is shut down.
    #[error("session closed")]
    Closed,
}

/// Why the connection is down, as seen by the session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The broker refused the CONNECT.
    Refused {
        /// The CONNACK return code (MQTT 3.1.1: 1 protocol, 2 client id,
        /// 3 unavailable, 4 credentials, 5 not authorized).
        code: u8,
    },
    /// The TLS handshake failed (unknown CA, certificate refused, name mismatch).
    Tls,
    /// A socket error.
    Io {
        /// Its kind.
        kind: io::ErrorKind,
    },
    /// The connect, a flush or a ping timed out.
    Timeout,
    /// A protocol error (unexpected packet, keepalive missed, a publish larger than the
    /// broker's announced limit).
    Protocol,
    /// The broker sent a packet larger than `max_packet_size` (the client cannot
    /// skip it; under MQTT 3.1.1 the broker sends it again after every
    /// reconnect). Raise the limit, or make the broker refuse such messages
    /// (Mosquitto: `message_size_limit`, or `max_packet_size`).
    PacketTooLarge {
        /// Remaining length of the packet, bytes.
        size: usize,
        /// The client's limit, bytes.
        limit: usize,
    },
    /// The broker closed the connection with an MQTT 5 DISCONNECT reason code.
    ServerDisconnect {
        /// The reason code.
        code: u8,
    },
}

/// Why a manual ack could not be queued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AckError {
    /// The ack queue is full; the token is given back.
    #[error("ack queue full")]
    QueueFull(super::AckToken),
    /// The session stopped; the broker redelivers the message.
    #[error("session closed")]
    Closed,
}
