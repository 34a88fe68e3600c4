//! Building a [`Session`]: configuration checks, identity, the wire options.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iiot_core::publish::OutboundMessage;
use iiot_core::types::{DeviceId, Status, Timestamp, check_segment};
use tokio::sync::{Notify, mpsc, watch};

use super::acks::AckOrder;
use super::config::{InboundAcks, MqttConfig};
use super::error::ConfigError;
use super::handle::{ConnectionState, Inbound, SessionHandle, Shared};
use super::identity;
use super::status::{StatusEncoder, json_status_encoder};
use super::tracker::Tracker;
use super::wire::{self, MqttVersion, Options, Will};

/// Acks taken from the queue per write at most.
pub(crate) const ACK_BATCH: usize = 256;
/// Smallest ack queue.
const MIN_ACK_QUEUE: usize = 64;

/// The device half of a session: what goes into birth, last will and the
/// offline status. A platform client has none.
#[allow(clippy::struct_field_names)] // `device_id` is the contract's name
pub(crate) struct Device {
    pub(crate) encoder: StatusEncoder,
    pub(crate) device_id: DeviceId,
    pub(crate) status_topic: String,
    pub(crate) firmware_version: Option<String>,
    pub(crate) gateway_id: Option<String>,
    pub(crate) start_time: Timestamp,
}

impl Device {
    pub(crate) fn will(&self) -> Will {
        let mut status = Status::offline(self.device_id.clone(), Some("connection lost".into()));
        // Registered long before it fires: the epoch says "time unknown".
        status.time = Timestamp::UNIX_EPOCH;
        status.gateway_id.clone_from(&self.gateway_id);
        Will {
            topic: self.status_topic.clone(),
            payload: (self.encoder)(&status),
        }
    }

    pub(crate) fn status(&self, online: bool, reason: Option<&str>) -> OutboundMessage {
        let mut status = if online {
            Status::birth(self.device_id.clone())
        } else {
            Status::offline(self.device_id.clone(), reason.map(str::to_owned))
        };
        status.firmware_version.clone_from(&self.firmware_version);
        status.gateway_id.clone_from(&self.gateway_id);
        status.start_time = Some(self.start_time);
        OutboundMessage::new(self.status_topic.clone(), (self.encoder)(&status)).with_retain(true)
    }
}

/// The driver of one MQTT connection: a device session (birth, last will,
/// client id = device id) or a platform client ([`MqttConfig::platform`]). Build
/// it with [`Session::new`], then spawn [`Session::run`].
pub struct Session {
    pub(crate) wire: wire::Wire,
    pub(crate) shared: Arc<Shared>,
    pub(crate) state_tx: watch::Sender<ConnectionState>,
    pub(crate) refused_tx: watch::Sender<Vec<super::SubscribeError>>,
    pub(crate) inbound_tx: mpsc::Sender<super::InboundMessage>,
    pub(crate) acks_rx: mpsc::Receiver<super::AckToken>,
    pub(crate) device: Option<Device>,
    pub(crate) manual: bool,
    pub(crate) order: AckOrder,
    /// Deliveries read from the broker that did not fit the inbound channel yet.
    pub(crate) held: VecDeque<super::InboundMessage>,
    /// Poll the broker only while fewer than this many deliveries are held.
    pub(crate) hold_limit: usize,
    pub(crate) generation: u64,
    /// Oversized-packet failures since the last delivery (a poison packet when > 1).
    pub(crate) too_large: u32,
    /// Since when the broker is unreachable, once that was logged at warn level
    /// (`None`: connected, or not tried yet).
    pub(crate) outage: Option<tokio::time::Instant>,
    /// The broker's URL, for logs.
    pub(crate) broker: String,
    pub(crate) our_max_packet: usize,
    pub(crate) reconnect: (Duration, Duration),
    pub(crate) shutdown_timeout: Duration,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("client_id", &self.shared.client_id)
            .field("platform", &self.device.is_none())
            .finish_non_exhaustive()
    }
}

fn validate(config: &MqttConfig) -> Result<DeviceId, ConfigError> {
    let device_id = DeviceId::new(config.client_id.clone()).map_err(|_| {
        let problem = match check_segment(&config.client_id, DeviceId::MAX_LEN) {
            Err(p) => p,
            Ok(()) => iiot_core::types::SegmentProblem::Empty,
        };
        ConfigError::ClientId {
            client_id: config.client_id.clone(),
            problem,
        }
    })?;
    for segment in config
        .topic_prefix
        .split('/')
        .filter(|_| !config.is_platform())
    {
        if let Err(problem) = check_segment(segment, 1024) {
            return Err(ConfigError::TopicPrefix {
                prefix: config.topic_prefix.clone(),
                segment: segment.to_owned(),
                problem,
            });
        }
    }
    if !config.is_platform()
        && config.topic_prefix.rsplit('/').next() != Some(config.client_id.as_str())
    {
        return Err(ConfigError::TopicPrefixDevice {
            prefix: config.topic_prefix.clone(),
            client_id: config.client_id.clone(),
        });
    }
    if config.inflight.get() > usize::from(u16::MAX - 1) {
        return Err(ConfigError::Value {
            field: "inflight",
            reason: "more than 65534",
        });
    }
    if config.reconnect_min.is_zero() || config.reconnect_min > config.reconnect_max {
        return Err(ConfigError::Value {
            field: "reconnect_min",
            reason: "must be > 0 and <= reconnect_max",
        });
    }
    if config.keepalive > Duration::from_secs(u64::from(u16::MAX)) {
        return Err(ConfigError::Value {
            field: "keepalive",
            reason: "more than 65535 s",
        });
    }
    Ok(device_id)
}

fn tls(config: &MqttConfig, tls: bool) -> Result<Option<Arc<rustls::ClientConfig>>, ConfigError> {
    if config.cert_paths().is_none()
        && (config.client_cert_path.is_some() || config.client_key_path.is_some())
    {
        return Err(ConfigError::TlsFiles {
            reason: "client certificate and key go together",
        });
    }
    // A device's certificate names it (CN = client id); a platform client's need not.
    let cn = (!config.is_platform()).then_some(config.client_id.as_str());
    match (tls, &config.ca_path, config.cert_paths()) {
        (true, None, _) => Err(ConfigError::MissingCa),
        (true, Some(ca), identity) => Ok(Some(identity::client_config(ca, identity, cn)?)),
        (false, None, None) => Ok(None),
        (false, _, _) => Err(ConfigError::TlsFiles {
            reason: "certificate files given for mqtt://; use mqtts://",
        }),
    }
}

impl Session {
    /// Validates the configuration, checks the identity files (CN = client id for
    /// a device, validity, PEM) and builds the session. Nothing is sent before
    /// [`Session::run`]. A device session's status messages are JSON
    /// ([`super::json_status`]); see [`Session::set_status_encoder`].
    ///
    /// # Errors
    /// [`ConfigError`], with [`ConfigError::Identity`] naming the file and the problem.
    pub fn new(config: &MqttConfig) -> Result<(SessionHandle, Session, Inbound), ConfigError> {
        let device_id = validate(config)?;
        let broker = config.broker()?;
        if config.password.is_some() && config.username.is_none() {
            return Err(ConfigError::Value {
                field: "password",
                reason: "needs a username",
            });
        }
        let manual = config.inbound_acks == InboundAcks::Manual;
        let inbound = config.inbound_queue.get();
        let options = Options {
            version: config.protocol,
            client_id: config.client_id.clone(),
            host: broker.host.clone(),
            port: broker.port,
            tls: tls(config, broker.tls)?,
            keepalive: config.keepalive,
            clean: config.clean_session,
            session_expiry: config.session_expiry,
            credentials: config
                .username
                .clone()
                .map(|u| (u, config.password.clone().unwrap_or_default())),
            max_packet_size: config.max_packet_size.get(),
            inflight: u16::try_from(config.inflight.get()).unwrap_or(u16::MAX - 1),
            request_queue: config.request_queue.get(),
            connect_timeout: config.connect_timeout,
            manual_acks: manual,
            receive_maximum: u16::try_from(inbound).unwrap_or(u16::MAX),
        };
        let device = (!config.is_platform()).then(|| Device {
            encoder: json_status_encoder(),
            device_id,
            status_topic: config.status_topic(),
            firmware_version: config.firmware_version.clone(),
            gateway_id: config.gateway_id.clone(),
            start_time: Timestamp::now(),
        });
        let (client, wire) = wire::build(&options, device.as_ref().map(Device::will));
        // MQTT 5 with manual acks keeps reading while the application is slow
        // (Receive Maximum bounds what the broker sends); otherwise a held
        // delivery stops the reading (TCP flow control holds the broker back).
        let hold_limit = if manual && config.protocol == MqttVersion::V5 {
            inbound
        } else {
            1
        };
        let (state_tx, state_rx) = watch::channel(ConnectionState::Connecting);
        let (refused_tx, refused_rx) = watch::channel(Vec::new());
        let (inbound_tx, inbound_rx) = mpsc::channel(inbound);
        let (acks_tx, acks_rx) = mpsc::channel(inbound.max(MIN_ACK_QUEUE));
        let shared = Arc::new(Shared {
            client,
            acks: acks_tx,
            refused: refused_rx,
            tracker: Mutex::new(Tracker::default()),
            room: Notify::new(),
            state: state_rx,
            closed: AtomicBool::new(false),
            client_id: config.client_id.clone(),
            ack_timeout: config.ack_timeout,
            when_disconnected: config.when_disconnected,
            max_packet_size: AtomicUsize::new(config.max_packet_size.get()),
        });
        let session = Session {
            wire,
            shared: shared.clone(),
            state_tx,
            refused_tx,
            inbound_tx,
            acks_rx,
            device,
            manual,
            order: AckOrder::default(),
            held: VecDeque::new(),
            hold_limit,
            generation: 0,
            too_large: 0,
            outage: None,
            broker: config.broker_url.clone(),
            our_max_packet: config.max_packet_size.get(),
            reconnect: (config.reconnect_min, config.reconnect_max),
            shutdown_timeout: config.shutdown_timeout,
        };
        Ok((
            SessionHandle { shared },
            session,
            Inbound { rx: inbound_rx },
        ))
    }

    /// Replaces the status encoder (birth, last will, offline on shutdown), e.g. with
    /// the Protobuf status codec of `iiot-core`. No effect on a platform client.
    pub fn set_status_encoder(&mut self, encoder: StatusEncoder) -> &mut Self {
        if let Some(device) = &mut self.device {
            device.encoder = encoder;
            let will = device.will();
            self.wire.set_will(will);
        }
        self
    }

    /// Subscribes to `filters` on every connection where the broker does not
    /// have them (the first CONNACK of this driver, and whenever the broker lost
    /// the session), without waiting for a SUBACK here: a refused filter shows in
    /// [`SessionHandle::refused`] and in `iiot_mqtt_subscribe_refused_total`.
    ///
    /// # Errors
    /// [`super::SubscribeError`] with `InvalidFilter` (and the rule it breaks) for a
    /// filter that is not a valid MQTT filter.
    pub fn subscribe_on_connect(
        &mut self,
        filters: &[String],
        qos: iiot_core::publish::QoS,
    ) -> Result<&mut Self, super::SubscribeError> {
        for f in filters {
            if let Err(reason) = iiot_core::topic::TopicFilter::parse(f) {
                return Err(super::SubscribeError {
                    filter: f.clone(),
                    kind: super::SubscribeErrorKind::InvalidFilter { reason },
                });
            }
        }
        let mut tracker = self.shared.lock();
        for f in filters {
            tracker.subscriptions.insert(f.clone(), qos);
        }
        tracker.restore_needed = true;
        drop(tracker);
        Ok(self)
    }
}

/// The reconnect delay after failed attempt number `attempt` (counted from 1): core's
/// [`Backoff`](iiot_core::backoff::Backoff) from `min` to `max`, whose retry 0 is attempt 1
/// here. So `min · 2^(attempt-1)` capped at `max`, then a draw (`unit` in 0..1) between half
/// of that and all of it.
pub(crate) fn backoff_delay(min: Duration, max: Duration, attempt: u32, unit: f64) -> Duration {
    iiot_core::backoff::Backoff::new(min, max).delay(attempt.saturating_sub(1), unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        assert_eq!(backoff_delay(min, max, 1, 1.0), min);
        assert_eq!(backoff_delay(min, max, 1, 0.0), min / 2);
        assert_eq!(backoff_delay(min, max, 3, 1.0), Duration::from_millis(400));
        assert_eq!(backoff_delay(min, max, 30, 1.0), max);
        assert_eq!(backoff_delay(min, max, u32::MAX, 0.0), max / 2);
    }

    #[tokio::test]
    async fn an_invalid_filter_is_refused_with_the_rule_it_breaks() {
        let config = super::super::MqttConfig::platform("mqtt://127.0.0.1:1", "ingest-1");
        let (_handle, mut session, _inbound) = Session::new(&config).unwrap();
        let e = session
            .subscribe_on_connect(&["a/#/b".into()], iiot_core::publish::QoS::AtLeastOnce)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.filter, "a/#/b");
        assert!(matches!(
            e.kind,
            super::super::SubscribeErrorKind::InvalidFilter { .. }
        ));
        assert_eq!(
            e.to_string(),
            "subscribe to \"a/#/b\" failed: invalid topic filter: '#' at level 2 (1-based) is \
             not the last level"
        );
    }
}
