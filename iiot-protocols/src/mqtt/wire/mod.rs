//! The one place that knows rumqttc: its MQTT 3.1.1 and MQTT 5 type trees are
//! translated here into the protocol-neutral events and requests the session
//! driver works with.
//!
//! rumqttc exposes a few fields that are public but not documented as API
//! (`EventLoop::pending`, `MqttState::events`, `MqttState::collision` and, in
//! 3.1.1, `EventLoop::network`). The driver needs them to pair every PUBACK with
//! its caller and to write manual acks while the delivery channel is full. Every
//! access sits in [`v4`] or [`v5`] (one file per protocol version); the unit tests
//! at the bottom of each file exercise them, so an upgrade that changes them fails
//! to compile or fails those tests instead of silently losing confirmations.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use iiot_core::publish::{OutboundMessage, PublishRefusal, QoS};

mod v4;
mod v5;

/// The MQTT protocol version of a connection.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[non_exhaustive]
pub enum MqttVersion {
    /// MQTT 3.1.1 (protocol level 4). A broker that refuses a publish by ACL still
    /// answers PUBACK (Mosquitto does), so a refusal is invisible: prefer MQTT 5.
    #[serde(rename = "3.1.1", alias = "v4", alias = "v3.1.1")]
    V311,
    /// MQTT 5: PUBACK and SUBACK reason codes, Maximum Packet Size and Receive
    /// Maximum announced in CONNECT, session and message expiry. Default.
    #[default]
    #[serde(rename = "5", alias = "v5")]
    V5,
}

/// What the driver needs to open connections; built from the public configs.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) version: MqttVersion,
    pub(crate) client_id: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) keepalive: Duration,
    /// 3.1.1 clean session / MQTT 5 clean start.
    pub(crate) clean: bool,
    /// MQTT 5 session expiry; `None` = never expires (0xFFFF_FFFF).
    pub(crate) session_expiry: Option<Duration>,
    pub(crate) credentials: Option<(String, String)>,
    /// Largest packet sent or received, bytes.
    pub(crate) max_packet_size: usize,
    /// Unacknowledged outgoing QoS 1 publishes.
    pub(crate) inflight: u16,
    pub(crate) request_queue: usize,
    pub(crate) connect_timeout: Duration,
    /// PUBACKs only when the application acks.
    pub(crate) manual_acks: bool,
    /// MQTT 5 Receive Maximum: unacknowledged deliveries the broker may have in flight.
    pub(crate) receive_maximum: u16,
}

/// The last will: retained, QoS 1.
#[derive(Debug, Clone)]
pub(crate) struct Will {
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
}

/// A publish received from the broker.
#[derive(Debug, Clone)]
pub(crate) struct InPublish {
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    pub(crate) pkid: u16,
    /// Delivered with QoS 2 (acknowledged with PUBREC).
    pub(crate) exactly_once: bool,
}

/// What the broker said about one filter of a SUBSCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Granted {
    Yes,
    /// Refused, with the MQTT 5 reason code (0x80 under 3.1.1).
    No(u8),
}

/// A protocol-neutral event of the connection.
#[derive(Debug, Clone)]
pub(crate) enum Event {
    ConnAck {
        session_present: bool,
        /// The broker's Maximum Packet Size (MQTT 5), if it announced one.
        max_packet_size: Option<usize>,
    },
    Publish(InPublish),
    PubAck {
        pkid: u16,
        /// `None` = accepted; otherwise the MQTT 5 reason.
        refusal: Option<PublishRefusal>,
    },
    SubAck {
        pkid: u16,
        granted: Vec<Granted>,
    },
    /// A publish request was written (packet id 0 = QoS 0).
    OutPublish(u16),
    /// A publish request collided with an unacknowledged packet id and waits.
    AwaitAck(u16),
    OutSubscribe(u16),
    /// An unsubscribe or disconnect request was taken.
    OutOther,
    OutDisconnect,
    Other,
}

/// A request rumqttc gave back after a connection loss, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// A publish; packet id 0 = never written.
    Publish {
        pkid: u16,
    },
    Subscribe,
    /// An unsubscribe or disconnect (consumed one request).
    Other,
    /// An ack or ping: no caller waits for it.
    Ignored,
}

/// Why a connection failed, protocol-neutral.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Error {
    #[error("incoming packet of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("outgoing packet of {size} bytes exceeds the broker's limit of {limit} bytes")]
    OutgoingTooLarge { size: usize, limit: usize },
    #[error("connection refused by the broker (code {code:#04x}: {reason})")]
    Refused { code: u8, reason: String },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("I/O: {detail}")]
    Io {
        kind: std::io::ErrorKind,
        detail: String,
    },
    #[error("timed out")]
    Timeout,
    #[error("the broker disconnected (reason {code:#04x}{})", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default())]
    ServerDisconnect { code: u8, reason: Option<String> },
    #[error("protocol: {0}")]
    Protocol(String),
}

/// The request side of a connection: cheap to clone, never blocks.
#[derive(Clone)]
pub(crate) enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// The request channel is full (or its event loop is gone: the driver's
/// `closed` flag tells the two apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueError {
    Full,
}

impl Client {
    /// Queues a publish (with its MQTT 5 message expiry, if any).
    pub(crate) fn try_publish(&self, message: &OutboundMessage) -> Result<(), QueueError> {
        match self {
            Client::V4(c) => v4::try_publish(c, message),
            Client::V5(c) => v5::try_publish(c, message),
        }
    }

    /// Queues a subscription.
    pub(crate) fn try_subscribe(&self, filter: &str, qos: QoS) -> Result<(), QueueError> {
        match self {
            Client::V4(c) => v4::try_subscribe(c, filter, qos),
            Client::V5(c) => v5::try_subscribe(c, filter, qos),
        }
    }
}

/// The event loop side of a connection (boxed: the two event loops differ in
/// size, and there is one per session).
pub(crate) enum Wire {
    V4(Box<v4::Wire>),
    V5(Box<v5::Wire>),
}

/// Builds the request handle and the event loop.
pub(crate) fn build(options: &Options, will: Option<Will>) -> (Client, Wire) {
    match options.version {
        MqttVersion::V311 => {
            let (c, w) = v4::build(options, will);
            (Client::V4(c), Wire::V4(Box::new(w)))
        }
        MqttVersion::V5 => {
            let (c, w) = v5::build(options, will);
            (Client::V5(c), Wire::V5(Box::new(w)))
        }
    }
}

impl Wire {
    /// The next event; reconnects when polled after an error.
    ///
    /// # Cancel safety
    /// As rumqttc's `poll`: cancel safe between events.
    pub(crate) async fn poll(&mut self) -> Result<Event, Error> {
        match self {
            Wire::V4(w) => w.poll().await,
            Wire::V5(w) => w.poll().await,
        }
    }

    /// Puts a publish at the head of the line (served before the request channel).
    pub(crate) fn push_publish(&mut self, message: &OutboundMessage) {
        match self {
            Wire::V4(w) => w.push_publish(message),
            Wire::V5(w) => w.push_publish(message),
        }
    }

    /// Puts one SUBSCRIBE of all `filters` at the head of the line.
    pub(crate) fn push_subscribe(&mut self, filters: &[(String, QoS)]) {
        match self {
            Wire::V4(w) => w.push_subscribe(filters),
            Wire::V5(w) => w.push_subscribe(filters),
        }
    }

    /// Puts a DISCONNECT at the head of the line.
    pub(crate) fn push_disconnect(&mut self) {
        match self {
            Wire::V4(w) => w.push_disconnect(),
            Wire::V5(w) => w.push_disconnect(),
        }
    }

    /// After an error of `poll` (or of a direct write): the events rumqttc had
    /// buffered but not returned, and the requests it moved back to `pending`
    /// (unacknowledged publishes with their ids, then unsent requests), in order.
    /// The held-back collision is discarded (the tracker has its waiter).
    pub(crate) fn lost(&mut self) -> (Vec<Event>, Vec<Taken>) {
        match self {
            Wire::V4(w) => w.lost(),
            Wire::V5(w) => w.lost(),
        }
    }

    /// Replaces the last will (takes effect at the next connect).
    pub(crate) fn set_will(&mut self, will: Will) {
        match self {
            Wire::V4(w) => w.set_will(will),
            Wire::V5(w) => w.set_will(will),
        }
    }

    /// Sends manual acks `(pkid, exactly_once)` on the live connection, in order.
    /// 3.1.1: written and flushed at once, without reading (so they go out while
    /// the delivery channel is full). MQTT 5: put at the head of the line, ahead
    /// of every queued request; a connection loss discards them with the rest of
    /// `pending` (see [`Wire::lost`]), so they never reach another connection.
    ///
    /// # Errors
    /// The connection failed while writing (3.1.1); call [`Wire::drop_connection`].
    pub(crate) async fn ack(&mut self, acks: &[(u16, bool)]) -> Result<(), Error> {
        match self {
            Wire::V4(w) => w.write_acks(acks).await,
            Wire::V5(w) => {
                w.push_acks(acks);
                Ok(())
            }
        }
    }

    /// Whether manual acks are written directly (3.1.1) rather than queued (MQTT 5).
    #[cfg(test)]
    pub(crate) fn writes_acks(&self) -> bool {
        matches!(self, Wire::V4(_))
    }

    /// Marks the connection dead after a failed direct write (3.1.1).
    pub(crate) fn drop_connection(&mut self) {
        match self {
            Wire::V4(w) => w.drop_connection(),
            Wire::V5(_) => {}
        }
    }
}

/// The event of an outgoing request (one type for both protocol trees).
pub(crate) fn outgoing(o: &rumqttc::Outgoing) -> Event {
    match o {
        rumqttc::Outgoing::Publish(pkid) => Event::OutPublish(*pkid),
        rumqttc::Outgoing::AwaitAck(pkid) => Event::AwaitAck(*pkid),
        rumqttc::Outgoing::Subscribe(pkid) => Event::OutSubscribe(*pkid),
        rumqttc::Outgoing::Unsubscribe(_) => Event::OutOther,
        rumqttc::Outgoing::Disconnect => Event::OutDisconnect,
        _ => Event::Other,
    }
}

/// Seconds for a wire field, at least 1.
pub(crate) fn secs(d: Duration) -> u64 {
    d.as_secs().max(1)
}

/// Whether a rustls error (e.g. an alert from the peer) sits in the error's chain.
pub(crate) fn is_tls(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(error);
    while let Some(e) = cur {
        if e.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(<dyn std::error::Error + Send + Sync>::is::<rustls::Error>)
        {
            return true;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(version: MqttVersion) -> Options {
        Options {
            version,
            client_id: "t".into(),
            host: "127.0.0.1".into(),
            port: 1,
            tls: None,
            keepalive: Duration::from_secs(5),
            clean: false,
            session_expiry: None,
            credentials: None,
            max_packet_size: 1024,
            inflight: 10,
            request_queue: 4,
            connect_timeout: Duration::from_secs(1),
            manual_acks: true,
            receive_maximum: 8,
        }
    }

    /// The rumqttc internals the driver relies on, for both protocol trees:
    /// requests put at the head of the line are what `lost` gives back, in order
    /// (acks ignored), and nothing is left behind.
    #[tokio::test]
    async fn internals_are_where_the_driver_expects_them() {
        for version in [MqttVersion::V311, MqttVersion::V5] {
            let (_client, mut wire) = build(&options(version), None);
            wire.push_publish(&OutboundMessage::new("a", b"1".to_vec()));
            wire.push_subscribe(&[("a/#".into(), QoS::AtLeastOnce)]);
            if !wire.writes_acks() {
                wire.ack(&[(7, false)]).await.unwrap();
            }
            wire.push_disconnect();
            let (events, taken) = wire.lost();
            assert!(events.is_empty(), "{version:?}");
            let expected: Vec<Taken> = if wire.writes_acks() {
                vec![Taken::Publish { pkid: 0 }, Taken::Subscribe, Taken::Other]
            } else {
                vec![
                    Taken::Publish { pkid: 0 },
                    Taken::Subscribe,
                    Taken::Ignored,
                    Taken::Other,
                ]
            };
            assert_eq!(taken, expected, "{version:?}");
            assert_eq!(wire.lost().1, vec![], "{version:?}: pending emptied");
        }
    }
}
