//! Session configuration.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use iiot_core::duration::legacy::{LegacyKey, LegacyUnit};
use iiot_core::publish::BrokerUrl;
use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use super::wire::MqttVersion;

/// When received QoS 1 messages are acknowledged (PUBACK) to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum InboundAcks {
    /// As soon as the session received it, before the application has it: a
    /// crash between the two loses the message. Fine for status and
    /// notifications that are re-sent anyway. Default.
    #[default]
    Auto,
    /// Only when the application hands the message's [`super::AckToken`] back
    /// ([`super::SessionHandle::ack`]), in delivery order, and never on a
    /// connection other than the one that delivered it: the broker keeps the
    /// message until then and redelivers it after a crash. Commands, firmware
    /// notifications and ingest use this.
    Manual,
}

/// What a publish does while the session is not connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WhenDisconnected {
    /// The message waits in the bounded request queue and goes out after the
    /// reconnect. When the queue is full, `try_publish` fails with `QueueFull`
    /// and `publish` waits for room. A message that was written to a connection
    /// that then dropped is failed back with `ConnectionLost`; nothing is dropped
    /// silently. Default.
    #[default]
    Queue,
    /// The publish fails at once with `NotConnected` and the message is given
    /// back: the caller's outbox keeps it and replays it after the reconnect.
    Refuse,
}

/// Configuration of an MQTT session. Deserializes with `deny_unknown_fields`;
/// every field but `client_id` and `topic_prefix` has a default. Durations are
/// human strings in config files (`keepalive = "30s"`, see [`iiot_core::duration`]);
/// files with the old numeric forms load through [`LEGACY_KEYS`].
///
/// ## Defaults
///
/// | field | default |
/// |---|---|
/// | `url` | `mqtt://127.0.0.1:1883` |
/// | `protocol` | `"5"` (MQTT 5; `"3.1.1"` for brokers without it) |
/// | `keepalive` | 30 s |
/// | `clean_session` | `false` (persistent session; MQTT 5: clean start off) |
/// | `session_expiry` | never (MQTT 5 session expiry interval 0xFFFFFFFF) |
/// | `username`, `password` | none |
/// | `inbound_acks` | [`InboundAcks::Auto`] |
/// | `ca_path`, `client_cert_path`, `client_key_path` | none |
/// | `inflight` | 100 unacknowledged QoS 1 publishes |
/// | `request_queue` | 1000 requests waiting for the connection |
/// | `inbound_queue` | 256 received messages not yet taken |
/// | `max_packet_size` | 1 MiB |
/// | `reconnect_min` / `reconnect_max` | 250 ms / 30 s (exponential, jittered) |
/// | `connect_timeout` | 5 s |
/// | `ack_timeout` | 30 s |
/// | `shutdown_timeout` | 5 s |
/// | `when_disconnected` | [`WhenDisconnected::Queue`] |
/// | `firmware_version`, `gateway_id` | none |
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    #[serde(rename = "url")]
    pub(crate) broker_url: String,
    pub(crate) client_id: String,
    pub(crate) topic_prefix: String,
    pub(crate) protocol: MqttVersion,
    #[serde(with = "iiot_core::duration::human")]
    pub(crate) keepalive: Duration,
    pub(crate) clean_session: bool,
    #[serde(with = "iiot_core::duration::human::option")]
    pub(crate) session_expiry: Option<Duration>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) inbound_acks: InboundAcks,
    pub(crate) ca_path: Option<PathBuf>,
    pub(crate) client_cert_path: Option<PathBuf>,
    pub(crate) client_key_path: Option<PathBuf>,
    pub(crate) inflight: NonZeroUsize,
    pub(crate) request_queue: NonZeroUsize,
    pub(crate) inbound_queue: NonZeroUsize,
    pub(crate) max_packet_size: NonZeroUsize,
    #[serde(with = "iiot_core::duration::human")]
    pub(crate) reconnect_min: Duration,
    #[serde(with = "iiot_core::duration::human")]
    pub(crate) reconnect_max: Duration,
    #[serde(with = "iiot_core::duration::human")]
    pub(crate) connect_timeout: Duration,
    #[serde(with = "iiot_core::duration::human")]
    pub(crate) ack_timeout: Duration,
    #[serde(with = "iiot_core::duration::human")]
    pub(crate) shutdown_timeout: Duration,
    pub(crate) when_disconnected: WhenDisconnected,
    pub(crate) firmware_version: Option<String>,
    pub(crate) gateway_id: Option<String>,
}

/// The old numeric and renamed keys of [`MqttConfig`] files, for
/// [`iiot_core::duration::legacy::upgrade_toml`]: durations were milliseconds and
/// the broker was `broker_url`.
pub const LEGACY_KEYS: &[LegacyKey] = &[
    LegacyKey::renamed("broker_url", "url"),
    LegacyKey::duration("keepalive", "keepalive", LegacyUnit::Millis),
    LegacyKey::duration("session_expiry", "session_expiry", LegacyUnit::Millis),
    LegacyKey::duration("reconnect_min", "reconnect_min", LegacyUnit::Millis),
    LegacyKey::duration("reconnect_max", "reconnect_max", LegacyUnit::Millis),
    LegacyKey::duration("connect_timeout", "connect_timeout", LegacyUnit::Millis),
    LegacyKey::duration("ack_timeout", "ack_timeout", LegacyUnit::Millis),
    LegacyKey::duration("shutdown_timeout", "shutdown_timeout", LegacyUnit::Millis),
];

const fn nz(n: usize) -> NonZeroUsize {
    match NonZeroUsize::new(n) {
        Some(v) => v,
        None => NonZeroUsize::MIN,
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            broker_url: "mqtt://127.0.0.1:1883".to_owned(),
            client_id: String::new(),
            topic_prefix: String::new(),
            protocol: MqttVersion::V5,
            keepalive: Duration::from_secs(30),
            clean_session: false,
            session_expiry: None,
            username: None,
            password: None,
            inbound_acks: InboundAcks::Auto,
            ca_path: None,
            client_cert_path: None,
            client_key_path: None,
            inflight: nz(100),
            request_queue: nz(1000),
            inbound_queue: nz(256),
            max_packet_size: nz(1024 * 1024),
            reconnect_min: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(5),
            when_disconnected: WhenDisconnected::Queue,
            firmware_version: None,
            gateway_id: None,
        }
    }
}

impl MqttConfig {
    /// A configuration with the required fields: the broker URL (`mqtt://host[:port]`
    /// or `mqtts://host[:port]`), the client id (= the device id, = the CN of the
    /// client certificate) and the UNS topic prefix of the device
    /// (`{enterprise}/{site}/{area}/{line}/{device_type}/{device_id}`, whose last
    /// segment must equal the client id). Nothing is checked until the session is
    /// built.
    pub fn new(
        broker_url: impl Into<String>,
        client_id: impl Into<String>,
        topic_prefix: impl Into<String>,
    ) -> Self {
        Self {
            broker_url: broker_url.into(),
            client_id: client_id.into(),
            topic_prefix: topic_prefix.into(),
            ..Self::default()
        }
    }

    /// A configuration for a platform client (command issuer, OTA notifier, ingest):
    /// not tied to a device, so no UNS prefix, no birth, no last will, and the
    /// client certificate's CN is not required to equal the client id (its validity
    /// is still checked). Build it with [`super::Session::new`] like a device
    /// session; it publishes to any topic the broker's ACL allows.
    pub fn platform(broker_url: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            broker_url: broker_url.into(),
            client_id: client_id.into(),
            ..Self::default()
        }
    }

    /// Whether this is a platform client ([`MqttConfig::platform`]): no topic prefix.
    pub fn is_platform(&self) -> bool {
        self.topic_prefix.is_empty()
    }

    /// The MQTT version: 5 (default) or 3.1.1.
    pub fn set_protocol(&mut self, version: MqttVersion) -> &mut Self {
        self.protocol = version;
        self
    }

    /// The protocol version.
    pub fn protocol(&self) -> MqttVersion {
        self.protocol
    }

    /// MQTT 5 session expiry: how long the broker keeps the session (and queues
    /// QoS 1 messages for it) after a disconnect. `None` (default) = never expires.
    /// Ignored under 3.1.1, where a persistent session never expires.
    pub fn set_session_expiry(&mut self, expiry: Option<Duration>) -> &mut Self {
        self.session_expiry = expiry;
        self
    }

    /// Username and password for the broker.
    pub fn set_credentials(
        &mut self,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> &mut Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }

    /// When received QoS 1 messages are acknowledged; see [`InboundAcks`].
    pub fn set_inbound_acks(&mut self, acks: InboundAcks) -> &mut Self {
        self.inbound_acks = acks;
        self
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The broker URL.
    pub fn broker_url(&self) -> &str {
        &self.broker_url
    }

    /// The UNS topic prefix of the device.
    pub fn topic_prefix(&self) -> &str {
        &self.topic_prefix
    }

    /// The retained status topic: `{topic_prefix}/status`.
    pub fn status_topic(&self) -> String {
        format!("{}/status", self.topic_prefix)
    }

    /// Keepalive interval (whole seconds on the wire; at least 1 s).
    pub fn set_keepalive(&mut self, keepalive: Duration) -> &mut Self {
        self.keepalive = keepalive;
        self
    }

    /// Clean session. `false` (default) keeps the broker-side session across
    /// reconnects, as the guide prescribes.
    pub fn set_clean_session(&mut self, clean: bool) -> &mut Self {
        self.clean_session = clean;
        self
    }

    /// PEM file with the CA certificate(s) that sign the broker's certificate.
    /// Required for `mqtts://`.
    pub fn set_ca_path(&mut self, path: impl Into<PathBuf>) -> &mut Self {
        self.ca_path = Some(path.into());
        self
    }

    /// PEM files with the client certificate (chain) and its private key, for mTLS.
    pub fn set_client_identity(
        &mut self,
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
    ) -> &mut Self {
        self.client_cert_path = Some(cert_path.into());
        self.client_key_path = Some(key_path.into());
        self
    }

    /// Most QoS 1 publishes on the wire without a PUBACK (at most 65 535).
    pub fn set_inflight(&mut self, inflight: NonZeroUsize) -> &mut Self {
        self.inflight = inflight;
        self
    }

    /// Capacity of the request queue between the handles and the connection.
    /// Together with `inflight` it bounds the memory held during an outage.
    pub fn set_request_queue(&mut self, capacity: NonZeroUsize) -> &mut Self {
        self.request_queue = capacity;
        self
    }

    /// Capacity of the channel of received messages. When it is full the session
    /// stops reading from the broker (back-pressure) instead of dropping.
    pub fn set_inbound_queue(&mut self, capacity: NonZeroUsize) -> &mut Self {
        self.inbound_queue = capacity;
        self
    }

    /// Largest MQTT packet sent or accepted, in bytes.
    pub fn set_max_packet_size(&mut self, bytes: NonZeroUsize) -> &mut Self {
        self.max_packet_size = bytes;
        self
    }

    /// Reconnect backoff: the first delay and the cap. Each failed attempt doubles
    /// the delay; the actual wait is drawn uniformly from half of it to all of it.
    pub fn set_reconnect_backoff(&mut self, min: Duration, max: Duration) -> &mut Self {
        self.reconnect_min = min;
        self.reconnect_max = max;
        self
    }

    /// Time allowed for TCP + TLS + CONNACK (whole seconds; at least 1 s).
    pub fn set_connect_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long `publish_confirmed` waits for the PUBACK before failing with `Timeout`.
    pub fn set_ack_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.ack_timeout = timeout;
        self
    }

    /// How long a clean shutdown waits for the offline status to be acknowledged.
    pub fn set_shutdown_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// What publishing does while disconnected.
    pub fn set_when_disconnected(&mut self, policy: WhenDisconnected) -> &mut Self {
        self.when_disconnected = policy;
        self
    }

    /// Firmware version announced in the birth message.
    pub fn set_firmware_version(&mut self, version: impl Into<String>) -> &mut Self {
        self.firmware_version = Some(version.into());
        self
    }

    /// Gateway id announced in the birth message.
    pub fn set_gateway_id(&mut self, gateway_id: impl Into<String>) -> &mut Self {
        self.gateway_id = Some(gateway_id.into());
        self
    }

    pub(crate) fn broker(&self) -> Result<Broker, ConfigError> {
        parse_broker(&self.broker_url)
    }

    pub(crate) fn cert_paths(&self) -> Option<(&Path, &Path)> {
        match (&self.client_cert_path, &self.client_key_path) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        }
    }
}

/// A parsed broker URL (core's parser; see [`BrokerUrl`]).
pub(crate) type Broker = BrokerUrl;

/// Parses a broker URL into the session's configuration error.
fn parse_broker(url: &str) -> Result<Broker, ConfigError> {
    BrokerUrl::parse(url).map_err(|e| ConfigError::BrokerUrl {
        url: e.url,
        reason: e.reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let b = parse_broker("mqtt://127.0.0.1:1883").unwrap();
        assert_eq!((b.host.as_str(), b.port, b.tls), ("127.0.0.1", 1883, false));
        let b = parse_broker("mqtts://broker.example").unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.tls),
            ("broker.example", 8883, true)
        );
        let b = parse_broker("mqtt://[::1]:1999/").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("::1", 1999));
        for bad in [
            "http://x",
            "mqtt://",
            "mqtt://h:x",
            "mqtt://h:0",
            "mqtt://u@h",
            "mqtt://h/p",
        ] {
            assert!(parse_broker(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_are_human_strings_in_config_files() {
        let json = r#"{"client_id":"d1","topic_prefix":"e/s/a/l/t/d1","keepalive":"15s",
            "reconnect_max":"2s 500ms","url":"mqtt://b:1884"}"#;
        let c: MqttConfig = serde_json::from_str(json).unwrap();
        assert_eq!(c.keepalive, Duration::from_secs(15));
        assert_eq!(c.reconnect_max, Duration::from_millis(2500));
        assert_eq!(c.broker_url(), "mqtt://b:1884");
        let text = serde_json::to_string(&c).unwrap();
        assert!(text.contains(r#""keepalive":"15s""#), "{text}");
        assert!(text.contains(r#""reconnect_max":"2s 500ms""#), "{text}");
        assert_eq!(serde_json::from_str::<MqttConfig>(&text).unwrap(), c);
        let e = serde_json::from_str::<MqttConfig>(r#"{"keepalive":30000}"#).unwrap_err();
        assert!(e.to_string().contains("needs a unit"), "{e}");
    }

    #[test]
    fn config_serde_rejects_unknown_fields() {
        let json = r#"{"client_id":"d1","topic_prefix":"e/s/a/l/t/d1","bogus":1}"#;
        assert!(serde_json::from_str::<MqttConfig>(json).is_err());
        let json = r#"{"client_id":"d1","topic_prefix":"e/s/a/l/t/d1"}"#;
        let c: MqttConfig = serde_json::from_str(json).unwrap();
        assert_eq!(
            c,
            MqttConfig::new("mqtt://127.0.0.1:1883", "d1", "e/s/a/l/t/d1")
        );
    }
}
