//! The MQTT core (feature `mqtt`): one connection layer for everything MQTT in
//! the workspace, on rumqttc with rustls; no rumqttc type appears in this API.
//!
//! Three users, one driver ([`Session`]):
//!
//! - **the device session** ([`MqttConfig::new`]): client id = device id = the
//!   certificate's CN, retained birth after every CONNACK, last will, offline
//!   status on a clean shutdown;
//! - **platform clients** ([`MqttConfig::platform`]): a command issuer or OTA
//!   notifier publishing to any topic its ACL allows, CA-only or with its own
//!   certificate (validity checked, CN free), no birth or will;
//! - **ingest's MQTT source** (`iiot-ingest`), a platform client with manual acks.
//!
//! What they share:
//!
//! - **Connection.** Broker URL, TLS (server verification; a client certificate
//!   checked before connecting: CN, validity, PEM, each problem naming the file
//!   as [`ConfigError::Identity`]), username/password, keepalive, jittered
//!   exponential reconnect backoff, connection state as a `watch`
//!   ([`SessionHandle::state`]).
//! - **MQTT 5 by default, 3.1.1 selectable** ([`MqttVersion`]). Under MQTT 5 a
//!   PUBACK reason code (not authorized, quota exceeded, topic name invalid,
//!   payload format invalid) fails that publish back as
//!   `PublishErrorKind::Refused` with the message, so an outbox keeps it; under
//!   3.1.1 a broker that refuses a publish by ACL still answers PUBACK (Mosquitto
//!   does) and the message is gone. Session expiry ([`MqttConfig::set_session_expiry`])
//!   instead of the clean-session flag; a message's expiry
//!   (`OutboundMessage::with_expiry`) becomes its message expiry interval.
//! - **Confirmed publish.** [`SessionHandle`] implements
//!   [`iiot_core::publish::ConfirmedPublish`]: the future resolves on the
//!   broker's PUBACK for that very message. A publish whose connection drops
//!   before its PUBACK is failed back with `ConnectionLost` and the message;
//!   nothing is dropped silently, and the caller (the outbox forwarder) resends.
//! - **Subscriptions** checked against their SUBACK: a refused filter is a
//!   [`SubscribeError`] with the reason code, listed in
//!   [`SessionHandle::refused`] and counted in `iiot_mqtt_subscribe_refused_total`;
//!   subscriptions are restored when the broker lost the session.
//! - **Commands in.** [`InboundDeliveries`] makes a manual-ack session the
//!   [`Inbox`](iiot_core::command::Inbox) of `iiot-edge`'s command executor: a
//!   command's PUBACK goes out once the executor's ledger recorded it.
//! - **Two inbound modes** ([`InboundAcks`]). Auto: PUBACK on receipt. Manual:
//!   each QoS 1 delivery carries an [`AckToken`]; its PUBACK goes out only when
//!   the application hands it to [`SessionHandle::ack`], in delivery order, never
//!   on a connection other than the one that delivered it. Bounded either way:
//!   the inbound channel holds `inbound_queue` messages; under MQTT 5 the same
//!   number is announced as Receive Maximum, so the broker never has more
//!   unacknowledged deliveries out than we hold and the connection keeps being
//!   read while the application is slow; under 3.1.1 the driver stops reading
//!   (TCP flow control) and writes acks directly. Acks never wait for the
//!   application, so a broker backlog larger than the channel cannot deadlock.
//! - **No poison packet.** `max_packet_size` is announced as Maximum Packet Size
//!   under MQTT 5, and the broker drops larger messages for this client. Under
//!   3.1.1 a larger packet cannot be skipped (the broker sends it again after
//!   every reconnect): the driver reports [`DisconnectReason::PacketTooLarge`],
//!   logs one error naming the limit and the broker setting that prevents it
//!   (Mosquitto's `message_size_limit`), counts `iiot_mqtt_oversized_packets_total`
//!   and reconnects with growing backoff instead of a hot loop.
//! - **Observability.** Metrics (label `client` = client id where it matters):
//!   `iiot_mqtt_connects_total`, `iiot_mqtt_disconnects_total`,
//!   `iiot_mqtt_publishes_total`, `iiot_mqtt_acks_total`,
//!   `iiot_mqtt_publish_refused_total{reason}`, `iiot_mqtt_failed_back_total`,
//!   `iiot_mqtt_subscribe_refused_total`, `iiot_mqtt_oversized_packets_total`,
//!   gauge `iiot_mqtt_connected` (1 or 0), histogram
//!   `iiot_mqtt_publish_ack_seconds` (queue to PUBACK).
//!
//! Memory stays bounded under any outage: at most `request_queue` requests
//! wait and at most `inflight` publishes are unacknowledged.
//!
//! rumqttc's internals that the driver needs (its pending queue, buffered events
//! and held-back collision, and in 3.1.1 the network for direct ack writes) are
//! reached in one module per protocol version (`wire/v4.rs`, `wire/v5.rs`), with
//! unit tests that fail if an upgrade moves them.
//!
//! ```no_run
//! use iiot_core::publish::{ConfirmedPublish, OutboundMessage};
//! use iiot_protocols::mqtt::{MqttConfig, Session};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = MqttConfig::new("mqtts://broker.plant:8883", "pump-7", "acme/plant1/area2/line3/pump/pump-7");
//! config
//!     .set_ca_path("/etc/iiot/ca.pem")
//!     .set_client_identity("/etc/iiot/pump-7.pem", "/etc/iiot/pump-7.key")
//!     .set_firmware_version("1.4.2");
//! let (handle, session, _inbound) = Session::new(&config)?;
//! let cancel = CancellationToken::new();
//! let driver = tokio::spawn(session.run(cancel.clone()));
//! handle
//!     .publish_confirmed(OutboundMessage::new("acme/plant1/area2/line3/pump/pump-7/telemetry", b"...".to_vec()))
//!     .await?;
//! cancel.cancel();
//! driver.await?;
//! # Ok(()) }
//! ```

mod acks;
mod config;
mod driver;
#[cfg(feature = "embedded-broker")]
#[cfg_attr(docsrs, doc(cfg(feature = "embedded-broker")))]
pub mod embedded;
mod error;
mod handle;
mod identity;
mod session;
mod status;
mod tracker;
mod wire;

pub use acks::AckToken;
pub use config::{InboundAcks, LEGACY_KEYS, MqttConfig, WhenDisconnected};
pub use error::{
    AckError, ConfigError, DisconnectReason, IdentityError, IdentityProblem, SubscribeError,
    SubscribeErrorKind,
};
pub use handle::{
    Confirmation, ConnectionState, Inbound, InboundDeliveries, InboundMessage, MqttAck,
    SessionHandle,
};
pub use session::Session;
pub use status::{
    StatusEncoder, json_status, json_status_encoder, protobuf_status, protobuf_status_encoder,
};
pub use wire::MqttVersion;
