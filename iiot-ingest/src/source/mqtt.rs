//! The MQTT source: a platform client of `iiot-protocols`' MQTT core with
//! manual acknowledgements, so the broker keeps every message until the pipeline
//! committed it.
//!
//! * Persistent session (MQTT 5 clean start off, session never expires; 3.1.1
//!   clean session off): messages published while ingest is down, and messages
//!   received but not acknowledged when it died, are delivered (again) when it
//!   reconnects.
//! * Manual acks: a QoS 1 message is acknowledged (PUBACK) only through
//!   [`Source::ack`], i.e. after commit, in delivery order, and never on a
//!   connection other than the one that delivered it (the broker redelivers
//!   such a message; dedupe absorbs the copy).
//! * Shared subscriptions (`$share/{group}/{filter}`) spread the load over
//!   several ingest workers: the broker spreads *messages*, not devices, so two
//!   workers see alternate batches of one device.
//! * Bounded, whatever the broker does: under MQTT 5 the source announces a
//!   Receive Maximum of `channel_capacity`, so the broker never has more
//!   unacknowledged deliveries in flight than the source holds, and the
//!   connection keeps being read (keepalive, acks) while the pipeline is slow.
//!   Under 3.1.1 the session stops reading while a delivery waits for room, so
//!   TCP flow control holds the broker back; acks are written directly to the
//!   connection meanwhile (Mosquitto 2.0 streams a reconnecting 3.1.1 client its
//!   whole backlog regardless of `max_inflight_messages`).
//! * No poison packet: under MQTT 5, `max_packet_bytes` is announced as Maximum
//!   Packet Size, and the broker drops larger messages for this client instead of
//!   sending them. Under 3.1.1 a larger packet cannot be skipped; the source
//!   reports [`SourceError::PacketTooLarge`] once the broker sends it again after
//!   a reconnect, and reconnects with growing backoff.
//! * A filter the broker refuses (SUBACK failure) is reported as
//!   [`SourceError::SubscriptionRefused`] and counted in
//!   `iiot_mqtt_subscribe_refused_total`.
//! * Dropping the source writes the acks already handed to it and a DISCONNECT
//!   before the connection closes.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use iiot_core::publish::QoS;
use iiot_core::types::Timestamp;
use iiot_protocols::mqtt::{
    AckToken, ConfigError, ConnectionState, DisconnectReason, Inbound, InboundAcks, MqttConfig,
    MqttVersion, Session, SessionHandle, SubscribeError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Delivery, Source, SourceError};

/// The default subscription filters, shared among ingest workers
/// (`$share/iiot-ingest/…`): telemetry (and `telemetry/data-loss`), status,
/// commands as their issuer published them (`commands/{id}`) and the devices'
/// acks (`commands/{id}/ack`). Without the last two the commands table holds
/// nothing.
pub const DEFAULT_FILTERS: &[&str] = &[
    "$share/iiot-ingest/+/+/+/+/+/+/telemetry/#",
    "$share/iiot-ingest/+/+/+/+/+/+/status",
    "$share/iiot-ingest/+/+/+/+/+/+/commands/+",
    "$share/iiot-ingest/+/+/+/+/+/+/commands/+/ack",
];

/// MQTT source configuration.
///
/// ## Defaults
///
/// | field | default |
/// |---|---|
/// | `url` | `mqtt://127.0.0.1:1883` (`mqtts://` for TLS) |
/// | `protocol` | `"5"` (MQTT 5; `"3.1.1"` for brokers without it) |
/// | `client_id` | `iiot-ingest` (must be stable across restarts: it names the persistent session) |
/// | `filters` | [`DEFAULT_FILTERS`]: `$share/iiot-ingest/+/+/+/+/+/+/telemetry/#`, `…/status`, `…/commands/+` (commands as issued) and `…/commands/+/ack` (device acks) |
/// | `keepalive` | `"30s"` (at least 1 s) |
/// | `channel_capacity` | 1 000 deliveries waiting for the pipeline (MQTT 5: also the Receive Maximum announced to the broker; sizes the ack queue, at least 64) |
/// | `reconnect_min` / `reconnect_max` | `"1s"` / `"30s"` (the first wait doubles per failed attempt up to the cap, jittered) |
/// | `ca_path`, `client_cert_path`, `client_key_path` | none (PEM files for `mqtts://`) |
/// | `username`, `password` | none |
/// | `max_packet_bytes` | 2 MiB (MQTT 5: announced as Maximum Packet Size; match the broker's `message_size_limit`) |
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttSourceConfig {
    /// `mqtt://host:port` or `mqtts://host:port`.
    pub url: String,
    /// MQTT version.
    pub protocol: MqttVersion,
    /// Client id; names the persistent session, so keep it stable.
    pub client_id: String,
    /// Subscription filters (QoS 1).
    pub filters: Vec<String>,
    /// Keep-alive interval.
    #[serde(with = "iiot_core::duration::human")]
    pub keepalive: Duration,
    /// Deliveries waiting for the pipeline at most; past that the source stops
    /// reading from the broker.
    pub channel_capacity: NonZeroUsize,
    /// First wait before a reconnect attempt; doubles per failed attempt.
    #[serde(with = "iiot_core::duration::human")]
    pub reconnect_min: Duration,
    /// Longest wait between reconnect attempts.
    #[serde(with = "iiot_core::duration::human")]
    pub reconnect_max: Duration,
    /// CA certificate (PEM) for `mqtts://`.
    pub ca_path: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub client_cert_path: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    pub client_key_path: Option<PathBuf>,
    /// Username, if the broker wants one.
    pub username: Option<String>,
    /// Password, if the broker wants one.
    pub password: Option<String>,
    /// Largest packet accepted, bytes.
    pub max_packet_bytes: usize,
}

impl Default for MqttSourceConfig {
    fn default() -> Self {
        Self {
            url: "mqtt://127.0.0.1:1883".into(),
            protocol: MqttVersion::V5,
            client_id: "iiot-ingest".into(),
            filters: DEFAULT_FILTERS.iter().map(|f| (*f).to_owned()).collect(),
            keepalive: Duration::from_secs(30),
            channel_capacity: NonZeroUsize::new(1000).unwrap_or(NonZeroUsize::MIN),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(30),
            ca_path: None,
            client_cert_path: None,
            client_key_path: None,
            username: None,
            password: None,
            max_packet_bytes: 2 * 1024 * 1024,
        }
    }
}

/// Why the MQTT source could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MqttSourceError {
    /// The connection settings are wrong (URL, TLS files, identity, values).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A subscription filter is not a valid MQTT filter.
    #[error(transparent)]
    Filter(#[from] SubscribeError),
    /// No filters to subscribe to.
    #[error("no subscription filters")]
    NoFilters,
}

/// Identifies one received message for acknowledgement (`None`: QoS 0, nothing to ack).
#[derive(Debug)]
pub struct MqttToken(Option<AckToken>);

/// The MQTT source. Dropping it stops its session (after it wrote the acks
/// already handed over).
pub struct MqttSource {
    inbound: Inbound,
    handle: SessionHandle,
    refused: watch::Receiver<Vec<SubscribeError>>,
    reported_refusals: usize,
    state: watch::Receiver<ConnectionState>,
    reported_too_large: bool,
    _stop: DropGuard,
}

impl std::fmt::Debug for MqttSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttSource")
            .field("client_id", &self.handle.client_id())
            .finish_non_exhaustive()
    }
}

impl MqttSourceConfig {
    /// The MQTT core's configuration of this source: a platform client with
    /// manual acks.
    pub fn session_config(&self) -> MqttConfig {
        let mut c = MqttConfig::platform(self.url.clone(), self.client_id.clone());
        c.set_protocol(self.protocol)
            .set_keepalive(self.keepalive.max(Duration::from_secs(1)))
            .set_inbound_acks(InboundAcks::Manual)
            .set_inbound_queue(self.channel_capacity)
            .set_reconnect_backoff(
                self.reconnect_min.max(Duration::from_millis(1)),
                self.reconnect_max
                    .max(self.reconnect_min.max(Duration::from_millis(1))),
            )
            .set_max_packet_size(
                NonZeroUsize::new(self.max_packet_bytes).unwrap_or(NonZeroUsize::MIN),
            );
        if let Some(ca) = &self.ca_path {
            c.set_ca_path(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.client_cert_path, &self.client_key_path) {
            c.set_client_identity(cert.clone(), key.clone());
        } else if let Some(one) = self
            .client_cert_path
            .as_ref()
            .or(self.client_key_path.as_ref())
        {
            // Let the core report the half-given identity.
            c.set_client_identity(one.clone(), PathBuf::new());
        }
        if let Some(user) = &self.username {
            c.set_credentials(user.clone(), self.password.clone().unwrap_or_default());
        }
        c
    }
}

impl MqttSource {
    /// Starts the session and returns the source. Must be called within a
    /// tokio runtime.
    ///
    /// # Errors
    /// [`MqttSourceError`] for a bad URL, bad TLS files or identity, an invalid
    /// filter or no filters.
    pub fn start(config: &MqttSourceConfig) -> Result<Self, MqttSourceError> {
        if config.filters.is_empty() {
            return Err(MqttSourceError::NoFilters);
        }
        if config.client_cert_path.is_some() != config.client_key_path.is_some() {
            return Err(ConfigError::TlsFiles {
                reason: "client_cert_path and client_key_path come together",
            }
            .into());
        }
        let (handle, mut session, inbound) = Session::new(&config.session_config())?;
        session.subscribe_on_connect(&config.filters, QoS::AtLeastOnce)?;
        let cancel = CancellationToken::new();
        tokio::spawn(session.run(cancel.clone()));
        Ok(Self {
            inbound,
            refused: handle.refused(),
            reported_refusals: 0,
            state: handle.state(),
            reported_too_large: false,
            handle,
            _stop: cancel.drop_guard(),
        })
    }

    /// The connection state of the source's session.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.handle.state()
    }

    /// A new refusal or a poison packet, reported once each.
    fn problem(&mut self) -> Option<SourceError> {
        let refused = self.refused.borrow_and_update().clone();
        if refused.len() > self.reported_refusals {
            self.reported_refusals = refused.len();
            let e = refused.last()?;
            return Some(SourceError::SubscriptionRefused {
                filter: e.filter.clone(),
                detail: e.kind.to_string(),
            });
        }
        match &*self.state.borrow_and_update() {
            ConnectionState::Disconnected {
                attempt,
                reason: DisconnectReason::PacketTooLarge { size, limit },
            } if *attempt >= 2 && !self.reported_too_large => {
                self.reported_too_large = true;
                Some(SourceError::PacketTooLarge {
                    size: *size,
                    limit: *limit,
                })
            }
            ConnectionState::Connected { .. } => {
                self.reported_too_large = false;
                None
            }
            _ => None,
        }
    }
}

impl Source for MqttSource {
    type Token = MqttToken;

    async fn recv(&mut self) -> Result<Option<Delivery<MqttToken>>, SourceError> {
        loop {
            tokio::select! {
                biased;
                m = self.inbound.recv() => {
                    return Ok(m.map(|m| Delivery {
                        topic: m.topic,
                        payload: m.payload,
                        received_at: Timestamp::now(),
                        token: MqttToken(m.token),
                    }));
                }
                r = self.refused.changed() => if r.is_err() { return Err(SourceError::Closed) },
                r = self.state.changed() => if r.is_err() { return Err(SourceError::Closed) },
            }
            if let Some(e) = self.problem() {
                return Err(e);
            }
        }
    }

    /// Hands the ack to the session, which writes it in delivery order on the
    /// connection that delivered the message (a token of an earlier connection is
    /// skipped: the broker redelivers that message). Waits only while the bounded
    /// ack queue is full; the session drains it before anything else, so that
    /// wait never depends on the pipeline.
    async fn ack(&mut self, token: MqttToken) -> Result<(), SourceError> {
        match token.0 {
            None => Ok(()),
            Some(t) => self.handle.ack(t).await.map_err(|_| SourceError::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn half_a_client_identity_is_refused_by_name() {
        let c = MqttSourceConfig {
            url: "mqtts://127.0.0.1:8883".into(),
            ca_path: Some("ca.pem".into()),
            client_cert_path: Some("cert.pem".into()),
            ..MqttSourceConfig::default()
        };
        let e = MqttSource::start(&c).unwrap_err();
        assert!(e.to_string().contains("client_key_path"), "{e}");
    }

    #[test]
    fn default_filters_cover_every_ingested_kind() {
        use iiot_core::topic::{Topic, TopicFilter};
        use iiot_core::types::{DeviceId, MessageId};
        use iiot_core::version::data_loss_topic;

        let filters: Vec<TopicFilter> = MqttSourceConfig::default()
            .filters
            .iter()
            .map(|f| TopicFilter::parse(f).unwrap())
            .collect();
        let path =
            iiot_core::topic::UnsPath::new("e", "s", "a", "l", "plc", DeviceId::new("d").unwrap())
                .unwrap();
        let id = MessageId::from_u128(1);
        let topics: [Topic; 5] = [
            path.telemetry(),
            data_loss_topic(&path),
            path.status(),
            path.command(id),
            path.command_ack(id),
        ];
        for t in &topics {
            let n = filters.iter().filter(|f| f.matches(&t.to_string())).count();
            assert_eq!(n, 1, "{t} matched by {n} filters");
        }
        assert!(
            !filters
                .iter()
                .any(|f| f.matches(&path.config_desired().to_string()))
        );
    }

    #[test]
    fn config_rejects_unknown_keys() {
        let c: MqttSourceConfig = serde_json::from_str(r#"{"url":"mqtt://h:1"}"#).unwrap();
        assert_eq!(c.client_id, "iiot-ingest");
        assert!(serde_json::from_str::<MqttSourceConfig>(r#"{"uri":"x"}"#).is_err());
    }
}
