//! The [`Session`] driver: connects, reconnects, pairs events with waiters.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iiot_core::publish::OutboundMessage;
use iiot_core::types::{DeviceId, Status, Timestamp, check_segment};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet,
    Publish, Request, SubscribeFilter, TlsConfiguration, Transport,
};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::config::MqttConfig;
use super::error::{ConfigError, DisconnectReason};
use super::handle::{
    ConnectionState, Inbound, InboundMessage, SessionHandle, Shared, from_qos, to_qos,
};
use super::identity;
use super::status::{StatusEncoder, json_status_encoder};
use super::tracker::{Outcome, Tracker, Waiter};

/// The driver of one MQTT session. Build it with [`Session::new`], then spawn
/// [`Session::run`].
pub struct Session {
    eventloop: EventLoop,
    shared: Arc<Shared>,
    state_tx: watch::Sender<ConnectionState>,
    inbound_tx: mpsc::Sender<InboundMessage>,
    encoder: StatusEncoder,
    device_id: DeviceId,
    status_topic: String,
    firmware_version: Option<String>,
    gateway_id: Option<String>,
    start_time: Timestamp,
    reconnect: (Duration, Duration),
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("client_id", &self.shared.client_id)
            .finish_non_exhaustive()
    }
}

fn secs(d: Duration) -> u64 {
    d.as_secs().max(1)
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
    for segment in config.topic_prefix.split('/') {
        if let Err(problem) = check_segment(segment, 1024) {
            return Err(ConfigError::TopicPrefix {
                prefix: config.topic_prefix.clone(),
                segment: segment.to_owned(),
                problem,
            });
        }
    }
    if config.topic_prefix.rsplit('/').next() != Some(config.client_id.as_str()) {
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

impl Session {
    /// Validates the configuration, checks the identity files (CN = client id,
    /// validity, PEM) and builds the session. Nothing is sent before [`Session::run`].
    /// The status messages are JSON ([`super::json_status`]); see
    /// [`Session::set_status_encoder`].
    ///
    /// # Errors
    /// [`ConfigError`], with [`ConfigError::Identity`] naming the file and the problem.
    pub fn new(config: &MqttConfig) -> Result<(SessionHandle, Session, Inbound), ConfigError> {
        let device_id = validate(config)?;
        let broker = config.broker()?;
        let mut options = MqttOptions::new(config.client_id.clone(), broker.host, broker.port);
        options
            .set_keep_alive(Duration::from_secs(secs(config.keepalive)))
            .set_clean_session(config.clean_session)
            .set_inflight(u16::try_from(config.inflight.get()).unwrap_or(u16::MAX - 1))
            .set_max_packet_size(config.max_packet_size.get(), config.max_packet_size.get());
        if config.cert_paths().is_none()
            && (config.client_cert_path.is_some() || config.client_key_path.is_some())
        {
            return Err(ConfigError::TlsFiles {
                reason: "client certificate and key go together",
            });
        }
        match (broker.tls, &config.ca_path, config.cert_paths()) {
            (true, None, _) => return Err(ConfigError::MissingCa),
            (true, Some(ca), identity) => {
                let tls = identity::client_config(ca, identity, &config.client_id)?;
                options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
            }
            (false, None, None) => {}
            (false, _, _) => {
                return Err(ConfigError::TlsFiles {
                    reason: "certificate files given for mqtt://; use mqtts://",
                });
            }
        }
        let (client, mut eventloop) = AsyncClient::new(options, config.request_queue.get());
        let mut net = eventloop.network_options();
        net.set_connection_timeout(secs(config.connect_timeout));
        eventloop.set_network_options(net);

        let (state_tx, state_rx) = watch::channel(ConnectionState::Connecting);
        let (inbound_tx, inbound_rx) = mpsc::channel(config.inbound_queue.get());
        let shared = Arc::new(Shared {
            client,
            tracker: Mutex::new(Tracker::default()),
            room: Notify::new(),
            state: state_rx,
            closed: AtomicBool::new(false),
            client_id: config.client_id.clone(),
            ack_timeout: config.ack_timeout,
            when_disconnected: config.when_disconnected,
            max_packet_size: config.max_packet_size.get(),
        });
        let mut session = Session {
            eventloop,
            shared: shared.clone(),
            state_tx,
            inbound_tx,
            encoder: json_status_encoder(),
            device_id,
            status_topic: config.status_topic(),
            firmware_version: config.firmware_version.clone(),
            gateway_id: config.gateway_id.clone(),
            start_time: Timestamp::now(),
            reconnect: (config.reconnect_min, config.reconnect_max),
            shutdown_timeout: config.shutdown_timeout,
        };
        session.set_last_will();
        Ok((
            SessionHandle { shared },
            session,
            Inbound { rx: inbound_rx },
        ))
    }

    /// Replaces the status encoder (birth, last will, offline on shutdown), e.g. with
    /// the Protobuf status codec of `iiot-core`.
    pub fn set_status_encoder(&mut self, encoder: StatusEncoder) -> &mut Self {
        self.encoder = encoder;
        self.set_last_will();
        self
    }

    fn set_last_will(&mut self) {
        let mut status = Status::offline(self.device_id.clone(), Some("connection lost".into()));
        // Registered long before it fires: the epoch says "time unknown".
        status.time = Timestamp::UNIX_EPOCH;
        status.gateway_id.clone_from(&self.gateway_id);
        let payload = (self.encoder)(&status);
        self.eventloop.mqtt_options.set_last_will(LastWill {
            topic: self.status_topic.clone(),
            message: payload,
            qos: rumqttc::QoS::AtLeastOnce,
            retain: true,
        });
    }

    fn status(&self, online: bool, reason: Option<&str>) -> OutboundMessage {
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

    /// Puts a publish at the head of the line (`pending` is served before the queue).
    fn push_pending(
        &mut self,
        tracker: &mut Tracker,
        message: OutboundMessage,
        reply: Option<super::tracker::PublishReply>,
    ) {
        let mut p = Publish::from_bytes(
            message.topic.clone(),
            to_qos(message.qos),
            message.payload.clone(),
        );
        p.retain = message.retain;
        self.eventloop.pending.push_back(Request::Publish(p));
        tracker.queued_in_pending(Waiter::Publish {
            message,
            reply,
            queued: Instant::now(),
        });
    }

    fn on_connack(&mut self, session_present: bool) {
        metrics::counter!("iiot_mqtt_connects_total").increment(1);
        tracing::info!(client_id = %self.shared.client_id, session_present, "connected");
        let birth = self.status(true, None);
        let shared = self.shared.clone();
        let mut tracker = shared.lock();
        if (!session_present || tracker.restore_needed) && !tracker.subscriptions.is_empty() {
            let filters: Vec<SubscribeFilter> = tracker
                .subscriptions
                .iter()
                .map(|(f, q)| SubscribeFilter::new(f.clone(), *q))
                .collect();
            tracing::info!(count = filters.len(), "restoring subscriptions");
            let names = filters.iter().map(|f| f.path.clone()).collect();
            self.eventloop
                .pending
                .push_back(Request::Subscribe(rumqttc::Subscribe::new_many(filters)));
            tracker.queued_in_pending(Waiter::Subscribe {
                filters: names,
                reply: None,
            });
        }
        tracker.restore_needed = false;
        self.push_pending(&mut tracker, birth, None);
        drop(tracker);
        metrics::gauge!("iiot_mqtt_connected").set(1.0);
        self.state_tx
            .send_replace(ConnectionState::Connected { session_present });
    }

    fn record(&self, out: Outcome) {
        if let Some(latency) = out.acked {
            metrics::counter!("iiot_mqtt_acks_total").increment(1);
            metrics::histogram!("iiot_mqtt_publish_ack_seconds").record(latency.as_secs_f64());
        }
        if out.failed > 0 {
            metrics::counter!("iiot_mqtt_failed_back_total").increment(out.failed as u64);
        }
        if out.from_channel || out.failed > 0 {
            self.shared.room.notify_waiters();
        }
    }

    /// Handles one event; returns a received message to forward.
    fn on_event(&mut self, event: Event) -> Option<InboundMessage> {
        let now = Instant::now();
        let out = match event {
            Event::Incoming(Packet::ConnAck(c)) => {
                self.on_connack(c.session_present);
                return None;
            }
            Event::Incoming(Packet::Publish(p)) => {
                return Some(InboundMessage {
                    topic: p.topic,
                    payload: p.payload,
                    qos: from_qos(p.qos),
                    retain: p.retain,
                });
            }
            Event::Incoming(Packet::PubAck(a)) => self.shared.lock().puback(a.pkid, now),
            Event::Incoming(Packet::SubAck(s)) => {
                self.shared.lock().suback(s.pkid, &s.return_codes);
                return None;
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => self.shared.lock().outgoing_publish(pkid),
            Event::Outgoing(Outgoing::AwaitAck(pkid)) => self.shared.lock().await_ack(pkid),
            Event::Outgoing(Outgoing::Subscribe(pkid)) => {
                self.shared.lock().outgoing_other(Some(pkid))
            }
            Event::Outgoing(Outgoing::Unsubscribe(_) | Outgoing::Disconnect) => {
                self.shared.lock().outgoing_other(None)
            }
            Event::Incoming(_) | Event::Outgoing(_) => return None,
        };
        self.record(out);
        None
    }

    /// Returns the received messages that rumqttc had buffered (and acknowledged)
    /// before the error; they must still be delivered.
    fn on_error(&mut self, error: &ConnectionError, attempt: u32) -> Vec<InboundMessage> {
        let was_connected = self.shared.state.borrow().is_connected();
        if was_connected {
            metrics::counter!("iiot_mqtt_disconnects_total").increment(1);
            metrics::gauge!("iiot_mqtt_connected").set(0.0);
            tracing::warn!(client_id = %self.shared.client_id, %error, "connection lost");
        } else {
            tracing::debug!(client_id = %self.shared.client_id, %error, attempt, "connect failed");
        }
        // Events rumqttc generated but had not returned yet (a publish written just
        // before the write failed, PUBACKs read in the same batch): pair them first,
        // or the waiters would be out of step with the requests.
        let buffered: Vec<Event> = self.eventloop.state.events.drain(..).collect();
        let mut received = Vec::new();
        for event in buffered {
            if let Some(msg) = self.on_event(event) {
                received.push(msg);
            }
        }
        let taken: Vec<Request> = std::mem::take(&mut self.eventloop.pending).into();
        // rumqttc's held-back publish; its waiter is the tracker's collision.
        let _ = self.eventloop.state.collision.take();
        let out = self.shared.lock().connection_lost(taken);
        if out.failed > 0 {
            tracing::info!(failed_back = out.failed, "unconfirmed requests failed back");
        }
        self.record(out);
        self.state_tx.send_replace(ConnectionState::Disconnected {
            attempt,
            reason: reason_of(error),
        });
        received
    }

    fn backoff(&self, attempt: u32) -> Duration {
        backoff_delay(
            self.reconnect.0,
            self.reconnect.1,
            attempt,
            rand::random::<f64>(),
        )
    }

    /// Runs the session until `cancel` fires: connects, reconnects with jittered
    /// backoff, publishes the retained birth after every CONNACK, restores
    /// subscriptions when the broker lost the session, and pairs every PUBACK with
    /// its caller. On cancel it publishes the retained offline status, waits for
    /// its PUBACK (at most `shutdown_timeout`), disconnects cleanly (so the broker
    /// does not send the will) and fails every open request with `Closed`.
    ///
    /// # Cancel safety
    /// Meant to be spawned and stopped through `cancel`; dropping the future
    /// instead skips the clean shutdown (the broker then publishes the will).
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut attempt: u32 = 0;
        loop {
            let polled = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                r = self.eventloop.poll() => r,
            };
            match polled {
                Ok(event) => {
                    if matches!(event, Event::Incoming(Packet::ConnAck(_))) {
                        attempt = 0;
                    }
                    if let Some(msg) = self.on_event(event) {
                        tokio::select! {
                            biased;
                            () = cancel.cancelled() => break,
                            r = self.inbound_tx.send(msg) => {
                                if r.is_err() {
                                    tracing::debug!("inbound receiver dropped");
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    attempt = attempt.saturating_add(1);
                    for msg in self.on_error(&e, attempt) {
                        tokio::select! {
                            biased;
                            () = cancel.cancelled() => break,
                            r = self.inbound_tx.send(msg) => {
                                if r.is_err() {
                                    tracing::debug!("inbound receiver dropped");
                                }
                            }
                        }
                    }
                    if cancel.is_cancelled() {
                        break;
                    }
                    let delay = self.backoff(attempt);
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.shutdown().await;
    }

    async fn shutdown(mut self) {
        if self.shared.state.borrow().is_connected() {
            let offline = self.status(false, Some("shutdown"));
            let (tx, mut rx) = oneshot::channel();
            {
                let shared = self.shared.clone();
                let mut tracker = shared.lock();
                self.push_pending(&mut tracker, offline, Some(tx));
            }
            let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
            let acked = loop {
                if let Ok(r) = rx.try_recv() {
                    break r.is_ok();
                }
                match tokio::time::timeout_at(deadline, self.eventloop.poll()).await {
                    Ok(Ok(event)) => {
                        if let Some(msg) = self.on_event(event) {
                            let _ = self.inbound_tx.try_send(msg);
                        }
                    }
                    Ok(Err(_)) | Err(_) => break false,
                }
            };
            if acked {
                self.eventloop
                    .pending
                    .push_back(Request::Disconnect(rumqttc::Disconnect));
                self.shared.lock().queued_in_pending(Waiter::Disconnect);
                loop {
                    match tokio::time::timeout_at(deadline, self.eventloop.poll()).await {
                        Ok(Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_)) | Err(_) => {
                            break;
                        }
                        Ok(Ok(event)) => {
                            if let Some(msg) = self.on_event(event) {
                                let _ = self.inbound_tx.try_send(msg);
                            }
                        }
                    }
                }
            } else {
                tracing::warn!("offline status not confirmed before shutdown timeout");
            }
        }
        let failed = {
            let mut tracker = self.shared.lock();
            self.shared.closed.store(true, Ordering::Release);
            tracker.close()
        };
        if failed > 0 {
            tracing::info!(failed, "requests failed back at shutdown");
        }
        self.shared.room.notify_waiters();
        metrics::gauge!("iiot_mqtt_connected").set(0.0);
        self.state_tx.send_replace(ConnectionState::Closed);
        tracing::info!(client_id = %self.shared.client_id, "session closed");
    }
}

/// Exponential backoff with jitter: `min · 2^(attempt-1)` capped at `max`, then a
/// uniform draw (`unit` in 0..1) between half of that and all of it.
fn backoff_delay(min: Duration, max: Duration, attempt: u32, unit: f64) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    let full = min.saturating_mul(factor).min(max);
    let half = full / 2;
    half + full.saturating_sub(half).mul_f64(unit.clamp(0.0, 1.0))
}

/// Whether a rustls error (e.g. an alert from the peer) sits in the error's chain.
fn is_tls(error: &(dyn std::error::Error + 'static)) -> bool {
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

fn reason_of(error: &ConnectionError) -> DisconnectReason {
    if is_tls(error) {
        return DisconnectReason::Tls;
    }
    tracing::trace!(?error, "connection error");
    match error {
        ConnectionError::ConnectionRefused(code) => DisconnectReason::Refused { code: *code as u8 },
        ConnectionError::Tls(_) => DisconnectReason::Tls,
        ConnectionError::Io(e) => DisconnectReason::Io { kind: e.kind() },
        ConnectionError::MqttState(rumqttc::StateError::Io(e)) => {
            DisconnectReason::Io { kind: e.kind() }
        }
        ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted) => {
            DisconnectReason::Io {
                kind: std::io::ErrorKind::ConnectionAborted,
            }
        }
        ConnectionError::NetworkTimeout | ConnectionError::FlushTimeout => {
            DisconnectReason::Timeout
        }
        _ => DisconnectReason::Protocol,
    }
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
}
