//! [`Session::run`]: connects, reconnects, pairs events with waiters, delivers
//! and acknowledges inbound messages.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use iiot_core::publish::OutboundMessage;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::acks::AckToken;
use super::error::DisconnectReason;
use super::handle::{ConnectionState, InboundMessage};
use super::session::{ACK_BATCH, Session, backoff_delay};
use super::tracker::{Outcome, PublishReply, Tracker, Waiter};
use super::wire::{Error, Event, InPublish};

/// Under this many consecutive oversized packets it is not called a loop yet.
const POISON_AFTER: u32 = 2;

fn reason_of(error: &Error) -> DisconnectReason {
    match error {
        Error::TooLarge { size, limit } => DisconnectReason::PacketTooLarge {
            size: *size,
            limit: *limit,
        },
        Error::Refused { code, .. } => DisconnectReason::Refused { code: *code },
        Error::Tls(_) => DisconnectReason::Tls,
        Error::Io { kind, .. } => DisconnectReason::Io { kind: *kind },
        Error::Timeout => DisconnectReason::Timeout,
        Error::ServerDisconnect { code, .. } => DisconnectReason::ServerDisconnect { code: *code },
        Error::OutgoingTooLarge { .. } | Error::Protocol(_) => DisconnectReason::Protocol,
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Session {
    fn client(&self) -> &str {
        &self.shared.client_id
    }

    /// Puts a publish at the head of the line (`pending` is served before the queue).
    fn push_pending(
        &mut self,
        tracker: &mut Tracker,
        message: OutboundMessage,
        reply: Option<PublishReply>,
    ) {
        self.wire.push_publish(&message);
        tracker.queued_in_pending(Waiter::Publish {
            message,
            reply,
            queued: Instant::now(),
        });
    }

    fn on_connack(&mut self, session_present: bool, broker_max: Option<usize>) {
        metrics::counter!("iiot_mqtt_connects_total", "client" => self.client().to_owned())
            .increment(1);
        self.generation += 1;
        self.order.connected(self.generation);
        let limit = broker_max.map_or(self.our_max_packet, |b| b.min(self.our_max_packet));
        self.shared.max_packet_size.store(limit, Ordering::Relaxed);
        match self.outage.take() {
            Some(since) => tracing::warn!(
                client_id = %self.client(), session_present, broker = %self.broker,
                "connected to {} again after {:.1?}", self.broker, since.elapsed()
            ),
            None => tracing::info!(client_id = %self.client(), session_present, "connected"),
        }
        let birth = self.device.as_ref().map(|d| d.status(true, None));
        let shared = self.shared.clone();
        let mut tracker = shared.lock();
        if (!session_present || tracker.restore_needed) && !tracker.subscriptions.is_empty() {
            let filters: Vec<(String, iiot_core::publish::QoS)> = tracker
                .subscriptions
                .iter()
                .map(|(f, q)| (f.clone(), *q))
                .collect();
            tracing::info!(count = filters.len(), "subscribing");
            self.wire.push_subscribe(&filters);
            tracker.queued_in_pending(Waiter::Subscribe {
                filters: filters.into_iter().map(|(f, _)| f).collect(),
                reply: None,
            });
        }
        tracker.restore_needed = false;
        if let Some(birth) = birth {
            self.push_pending(&mut tracker, birth, None);
        }
        drop(tracker);
        metrics::gauge!("iiot_mqtt_connected", "client" => self.client().to_owned()).set(1.0);
        self.state_tx
            .send_replace(ConnectionState::Connected { session_present });
    }

    fn record(&self, out: Outcome) {
        if let Some(latency) = out.acked {
            metrics::counter!("iiot_mqtt_acks_total").increment(1);
            metrics::histogram!("iiot_mqtt_publish_ack_seconds").record(latency.as_secs_f64());
        }
        if let Some(refusal) = out.refused {
            metrics::counter!("iiot_mqtt_publish_refused_total",
                "client" => self.client().to_owned(), "reason" => format!("{:#04x}", refusal.code()))
            .increment(1);
            tracing::debug!(client_id = %self.client(), %refusal, "publish refused by the broker");
        }
        if out.failed > 0 {
            metrics::counter!("iiot_mqtt_failed_back_total").increment(out.failed as u64);
        }
        if out.from_channel || out.failed > 0 {
            self.shared.room.notify_waiters();
        }
    }

    /// A publish from the broker: into the inbound channel, or held when it is full.
    fn deliver(&mut self, p: InPublish) {
        self.too_large = 0;
        let acked_by_us = p.qos != iiot_core::publish::QoS::AtMostOnce && self.manual;
        let token = if acked_by_us {
            match self.order.deliver(p.pkid, p.exactly_once) {
                Some(t) => Some(t),
                // Decoded from a connection that has since failed: the broker
                // redelivers it on the next one.
                None => return,
            }
        } else {
            None
        };
        let msg = InboundMessage {
            topic: p.topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            token,
        };
        if !self.held.is_empty() {
            self.held.push_back(msg);
            return;
        }
        match self.inbound_tx.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(m)) => self.held.push_back(m),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                metrics::counter!("iiot_mqtt_inbound_unread_total").increment(1);
            }
        }
    }

    /// Handles one event of the connection.
    fn on_event(&mut self, event: Event) {
        let now = Instant::now();
        let out = match event {
            Event::ConnAck {
                session_present,
                max_packet_size,
            } => {
                self.on_connack(session_present, max_packet_size);
                return;
            }
            Event::Publish(p) => {
                self.deliver(p);
                return;
            }
            Event::PubAck { pkid, refusal } => self.shared.lock().puback(pkid, refusal, now),
            Event::SubAck { pkid, granted } => {
                let mut tracker = self.shared.lock();
                let refused = tracker.suback(pkid, &granted);
                if refused > 0 {
                    metrics::counter!("iiot_mqtt_subscribe_refused_total",
                        "client" => self.client().to_owned())
                    .increment(refused as u64);
                    self.refused_tx.send_replace(tracker.refused.clone());
                }
                return;
            }
            Event::OutPublish(pkid) => self.shared.lock().outgoing_publish(pkid),
            Event::AwaitAck(pkid) => self.shared.lock().await_ack(pkid),
            Event::OutSubscribe(pkid) => self.shared.lock().outgoing_other(Some(pkid)),
            Event::OutOther | Event::OutDisconnect => self.shared.lock().outgoing_other(None),
            Event::Other => return,
        };
        self.record(out);
    }

    /// The connection failed: deliver what the auto-ack mode already acknowledged,
    /// fail back every unconfirmed request, detect a poison packet.
    fn on_error(&mut self, error: &Error, attempt: u32) {
        let was_connected = self.shared.state.borrow().is_connected();
        if was_connected {
            metrics::counter!("iiot_mqtt_disconnects_total", "client" => self.client().to_owned())
                .increment(1);
            metrics::gauge!("iiot_mqtt_connected", "client" => self.client().to_owned()).set(0.0);
        }
        let (buffered, taken) = self.wire.lost();
        // Events rumqttc generated but had not returned yet (a publish written just
        // before the write failed, PUBACKs read in the same batch): pair them first,
        // or the waiters would be out of step with the requests. Publishes read
        // before the failure are delivered in auto mode (rumqttc acked them) and
        // dropped in manual mode (not acked: the broker redelivers them).
        for event in buffered {
            match event {
                Event::Publish(_) if self.manual => {}
                other => self.on_event(other),
            }
        }
        self.order.disconnected();
        let out = self.shared.lock().connection_lost(taken);
        if out.failed > 0 {
            tracing::info!(failed_back = out.failed, "unconfirmed requests failed back");
        }
        self.record(out);
        if let Error::TooLarge { size, limit } = error {
            self.too_large = self.too_large.saturating_add(1);
            metrics::counter!("iiot_mqtt_oversized_packets_total",
                "client" => self.client().to_owned())
            .increment(1);
            if self.too_large == POISON_AFTER {
                tracing::error!(
                    client_id = %self.client(), size, limit,
                    "the broker sends the same packet of {size} bytes again after every \
                     reconnect, larger than max_packet_size ({limit} bytes): every later \
                     message of this session waits behind it. Raise max_packet_size, use \
                     MQTT 5 (the limit is announced in CONNECT and the broker drops larger \
                     messages), or limit messages at the broker (Mosquitto: \
                     message_size_limit {limit}); reconnecting with backoff"
                );
            }
        }
        // One warning per outage, with the cause; the retries after it at debug.
        if self.too_large >= POISON_AFTER {
        } else if was_connected {
            self.outage = Some(tokio::time::Instant::now());
            tracing::warn!(
                client_id = %self.client(), %error,
                "lost the connection to {}: {error}; reconnecting with backoff", self.broker
            );
        } else if self.outage.is_none() {
            self.outage = Some(tokio::time::Instant::now());
            tracing::warn!(
                client_id = %self.client(), %error,
                "cannot connect to {}: {error}; retrying with backoff", self.broker
            );
        } else {
            tracing::debug!(client_id = %self.client(), %error, attempt, "connect failed");
        }
        self.state_tx.send_replace(ConnectionState::Disconnected {
            attempt,
            reason: reason_of(error),
        });
    }

    /// The application acknowledged `first` (and maybe more): release what is in order.
    async fn on_ack(&mut self, first: AckToken) -> Result<(), Error> {
        let mut ready = Vec::new();
        let mut stale = 0usize;
        let mut next = Some(first);
        let mut taken = 0usize;
        while let Some(token) = next.take() {
            let r = self.order.ack(&token);
            stale += usize::from(r.stale);
            ready.extend(r.ready);
            taken += 1;
            if taken < ACK_BATCH {
                next = self.acks_rx.try_recv().ok();
            }
        }
        if stale > 0 {
            // Received on a connection that has since dropped: the broker
            // redelivers them on this one, and those copies are acknowledged.
            tracing::debug!(stale, "skipping acks from an earlier connection");
        }
        if ready.is_empty() {
            return Ok(());
        }
        self.wire.ack(&ready).await
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
    /// backoff, publishes the retained birth after every CONNACK (device
    /// sessions), subscribes where the broker lost the session, pairs every PUBACK
    /// with its caller, delivers inbound messages and writes manual acks in order.
    /// On cancel it sends the acks already handed to it and, for a device, the
    /// retained offline status (waiting for its PUBACK at most `shutdown_timeout`),
    /// disconnects cleanly (so the broker does not send the will) and fails every
    /// open request with `Closed`.
    ///
    /// Acks never wait for the application: they are taken first, also while the
    /// inbound channel is full. A poison packet (larger than `max_packet_size`,
    /// sent again after every reconnect under MQTT 3.1.1) does not reset the
    /// backoff at CONNACK, so the reconnects slow down to `reconnect_max`; it
    /// shows as [`DisconnectReason::PacketTooLarge`], one error line and
    /// `iiot_mqtt_oversized_packets_total`.
    ///
    /// # Cancel safety
    /// Meant to be spawned and stopped through `cancel`; dropping the future
    /// instead skips the clean shutdown (the broker then publishes the will).
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut attempt: u32 = 0;
        let mut retry_at: Option<tokio::time::Instant> = None;
        // A handle of our own: a permit borrows it across the select.
        let tx = self.inbound_tx.clone();
        loop {
            let can_poll = retry_at.is_none() && self.held.len() < self.hold_limit;
            let failed = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                Some(token) = self.acks_rx.recv() => self.on_ack(token).await.err(),
                p = tx.reserve(), if !self.held.is_empty() => {
                    match (p, self.held.pop_front()) {
                        (Ok(permit), Some(m)) => permit.send(m),
                        (Ok(_), None) => {}
                        (Err(_), _) => {
                            tracing::debug!("inbound receiver dropped");
                            self.held.clear();
                        }
                    }
                    None
                }
                () = sleep_until_opt(retry_at), if retry_at.is_some() => {
                    retry_at = None;
                    None
                }
                r = self.wire.poll(), if can_poll => match r {
                    Ok(event) => {
                        if matches!(event, Event::ConnAck { .. }) && self.too_large == 0 {
                            attempt = 0;
                        }
                        self.on_event(event);
                        None
                    }
                    Err(e) => Some(e),
                },
            };
            if let Some(e) = failed {
                self.wire.drop_connection();
                attempt = attempt.saturating_add(1).max(self.too_large);
                self.on_error(&e, attempt);
                retry_at = Some(tokio::time::Instant::now() + self.backoff(attempt));
            }
        }
        self.shutdown().await;
    }

    /// Polls until the DISCONNECT was written, an error, or `deadline`.
    async fn poll_until_disconnected(&mut self, deadline: tokio::time::Instant) {
        loop {
            match tokio::time::timeout_at(deadline, self.wire.poll()).await {
                Ok(Ok(Event::OutDisconnect)) => {
                    self.on_event(Event::OutDisconnect);
                    return;
                }
                Ok(Err(_)) | Err(_) => return,
                Ok(Ok(event)) => self.on_event(event),
            }
        }
    }

    async fn shutdown(mut self) {
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        if self.shared.state.borrow().is_connected() {
            // The acks already handed over go out first.
            self.acks_rx.close();
            while let Ok(token) = self.acks_rx.try_recv() {
                if self.on_ack(token).await.is_err() {
                    break;
                }
            }
            let offline = self
                .device
                .as_ref()
                .map(|d| d.status(false, Some("shutdown")));
            let confirmed = match offline {
                None => true,
                Some(offline) => {
                    let (tx, mut rx) = oneshot::channel();
                    {
                        let shared = self.shared.clone();
                        let mut tracker = shared.lock();
                        self.push_pending(&mut tracker, offline, Some(tx));
                    }
                    loop {
                        if let Ok(r) = rx.try_recv() {
                            break r.is_ok();
                        }
                        match tokio::time::timeout_at(deadline, self.wire.poll()).await {
                            Ok(Ok(event)) => self.on_event(event),
                            Ok(Err(_)) | Err(_) => break false,
                        }
                    }
                }
            };
            if confirmed {
                self.wire.push_disconnect();
                self.shared.lock().queued_in_pending(Waiter::Disconnect);
                self.poll_until_disconnected(deadline).await;
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
        metrics::gauge!("iiot_mqtt_connected", "client" => self.client().to_owned()).set(0.0);
        self.state_tx.send_replace(ConnectionState::Closed);
        tracing::info!(client_id = %self.client(), "session closed");
    }
}
