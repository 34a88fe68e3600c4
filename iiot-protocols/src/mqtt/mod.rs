//! The MQTT session (feature `mqtt`): the gateway's uplink.
//!
//! Built on rumqttc with rustls; no rumqttc type appears in this API.
//!
//! - **Identity before connecting.** With `mqtts://` and a client certificate,
//!   the certificate's CN must equal the client id (= the device id), and the
//!   CA and client certificates must be valid now. A bad file is a
//!   [`ConfigError::Identity`] naming the file and the problem.
//! - **Persistent session, last will, birth.** Clean session is off by default.
//!   The will is the retained `{topic_prefix}/status` with `online = false`;
//!   after every CONNACK the session publishes the retained birth (`online =
//!   true`, firmware version, gateway id, start time). A clean shutdown publishes
//!   the offline status, waits for its PUBACK, then disconnects.
//! - **Confirmed publish.** [`SessionHandle`] implements
//!   [`iiot_core::publish::ConfirmedPublish`]: the future resolves on the
//!   broker's PUBACK for that very message. A publish whose connection drops
//!   before its PUBACK is failed back with `ConnectionLost` and the message;
//!   nothing is dropped silently, and the caller (the outbox forwarder) resends.
//! - **Subscriptions** deliver into a bounded [`Inbound`] channel (when full the
//!   session stops reading: back-pressure, not loss) and are restored when the
//!   broker reports `session_present = false`.
//! - **Observability.** [`SessionHandle::state`] is a watch of
//!   [`ConnectionState`]. Metrics: `iiot_mqtt_connects_total`,
//!   `iiot_mqtt_disconnects_total`, `iiot_mqtt_publishes_total`,
//!   `iiot_mqtt_acks_total`, `iiot_mqtt_failed_back_total`, gauge
//!   `iiot_mqtt_connected` (1 or 0), histogram
//!   `iiot_mqtt_publish_ack_seconds` (queue to PUBACK).
//!
//! Memory stays bounded under any outage: at most `request_queue` requests
//! wait and at most `inflight` publishes are unacknowledged.
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
mod error;
mod handle;
mod identity;
mod session;
mod status;
mod tracker;
mod wire;

pub use acks::AckToken;
pub use config::{InboundAcks, MqttConfig, WhenDisconnected};
pub use error::{
    AckError, ConfigError, DisconnectReason, IdentityError, IdentityProblem, SubscribeError,
    SubscribeErrorKind,
};
pub use handle::{Confirmation, ConnectionState, Inbound, InboundMessage, SessionHandle};
pub use session::Session;
pub use status::{
    StatusEncoder, json_status, json_status_encoder, protobuf_status, protobuf_status_encoder,
};
pub use wire::MqttVersion;
