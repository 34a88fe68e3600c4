//! The cloneable [`SessionHandle`] and what it hands out: confirmations,
//! the inbound receiver, the connection state.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use iiot_core::publish::{ConfirmedPublish, OutboundMessage, PublishError, PublishErrorKind, QoS};
use tokio::sync::{Notify, mpsc, oneshot, watch};

use super::acks::AckToken;
use super::config::WhenDisconnected;
use super::error::{AckError, DisconnectReason, SubscribeError, SubscribeErrorKind};
use super::tracker::{Tracker, Waiter};
use super::wire::{Client, QueueError};

/// The connection as the session sees it; observe it with [`SessionHandle::state`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Before the first CONNACK.
    Connecting,
    /// CONNACK received.
    Connected {
        /// Whether the broker still had the session (and its subscriptions).
        session_present: bool,
    },
    /// The connection is down; the session retries with backoff.
    Disconnected {
        /// Failed attempts since the last CONNACK.
        attempt: u32,
        /// Why.
        reason: DisconnectReason,
    },
    /// The driver stopped; every later publish fails with `Closed`.
    Closed,
}

impl ConnectionState {
    /// Whether a CONNACK was received and the connection has not dropped since.
    pub fn is_connected(&self) -> bool {
        matches!(self, Self::Connected { .. })
    }
}

/// A message received on a subscribed topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// The topic it was published to.
    pub topic: String,
    /// The payload, byte for byte.
    pub payload: Bytes,
    /// The QoS it was delivered with.
    pub qos: QoS,
    /// Whether the broker delivered it from its retained store.
    pub retain: bool,
    /// With [`super::InboundAcks::Manual`], the token of a QoS 1 delivery: the
    /// broker keeps the message until it is handed to [`SessionHandle::ack`].
    /// `None` for QoS 0 and in auto-ack mode.
    pub token: Option<AckToken>,
}

/// Receiver of the messages on subscribed topics (bounded, see `inbound_queue`).
#[derive(Debug)]
pub struct Inbound {
    pub(crate) rx: mpsc::Receiver<InboundMessage>,
}

impl Inbound {
    /// The next message; `None` once the session stopped.
    ///
    /// # Cancel safety
    /// Cancel safe: a message is never lost by dropping the future.
    pub async fn recv(&mut self) -> Option<InboundMessage> {
        self.rx.recv().await
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<InboundMessage> {
        self.rx.try_recv().ok()
    }
}

/// Resolves when the broker confirmed one publish (PUBACK for QoS 1, written to
/// the socket for QoS 0).
///
/// # Cancel safety
/// Dropping it does not withdraw the message: the session still sends and tracks
/// it; the caller just no longer learns the outcome.
#[derive(Debug)]
#[must_use = "a confirmation does nothing unless awaited"]
pub struct Confirmation {
    rx: oneshot::Receiver<Result<(), PublishError>>,
    message: Option<OutboundMessage>,
}

impl Future for Confirmation {
    type Output = Result<(), PublishError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(r)) => Poll::Ready(r),
            Poll::Ready(Err(_)) => {
                let message = self
                    .message
                    .take()
                    .unwrap_or_else(|| OutboundMessage::new(String::new(), Bytes::new()));
                Poll::Ready(Err(PublishError {
                    message,
                    kind: PublishErrorKind::Closed,
                }))
            }
        }
    }
}

pub(crate) struct Shared {
    pub(crate) client: Client,
    pub(crate) acks: mpsc::Sender<AckToken>,
    pub(crate) refused: watch::Receiver<Vec<SubscribeError>>,
    pub(crate) tracker: Mutex<Tracker>,
    pub(crate) room: Notify,
    pub(crate) state: watch::Receiver<ConnectionState>,
    pub(crate) closed: AtomicBool,
    pub(crate) client_id: String,
    pub(crate) ack_timeout: Duration,
    pub(crate) when_disconnected: WhenDisconnected,
    /// The smaller of our `max_packet_size` and the broker's (MQTT 5 CONNACK).
    pub(crate) max_packet_size: AtomicUsize,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Tracker> {
        // A panic while holding the lock leaves the tracker consistent enough to fail
        // waiters back; keep going rather than poison every caller.
        self.tracker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The cloneable handle: publish, subscribe, observe. Cheap to clone.
#[derive(Clone)]
pub struct SessionHandle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("client_id", &self.shared.client_id)
            .finish_non_exhaustive()
    }
}

fn topic_problem(topic: &str) -> Option<&'static str> {
    if topic.is_empty() {
        Some("empty topic")
    } else if topic.contains(['+', '#', '\0']) {
        Some("wildcard or NUL in topic")
    } else {
        None
    }
}

impl SessionHandle {
    /// The client id (= device id).
    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    /// A receiver of the connection state.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.clone()
    }

    /// Waits until connected, at most `timeout`. Returns whether connected.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.state();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(ConnectionState::is_connected)).await,
            Ok(Ok(_))
        )
    }

    /// Queues `message` without waiting and returns the future of its confirmation.
    ///
    /// # Errors
    /// The message is given back with `QueueFull` (the request queue is full),
    /// `NotConnected` (policy [`WhenDisconnected::Refuse`]), `Rejected` (invalid
    /// topic, or larger than `max_packet_size`) or `Closed`.
    pub fn try_publish(&self, message: OutboundMessage) -> Result<Confirmation, PublishError> {
        let fail = |message, kind| Err(PublishError { message, kind });
        if let Some(reason) = topic_problem(&message.topic) {
            return fail(
                message,
                PublishErrorKind::Rejected {
                    reason: reason.to_owned(),
                },
            );
        }
        // Remaining length of the PUBLISH: topic length prefix, topic, packet id,
        // payload. rumqttc would fail the whole connection on an oversized packet
        // and the resend would fail it again: refuse it here, for good.
        // MQTT 5 adds properties (expiry: 5 bytes, length: up to 4).
        let size = 2 + message.topic.len() + 2 + message.payload.len() + 9;
        let limit = self.shared.max_packet_size.load(Ordering::Relaxed);
        if size > limit {
            return fail(
                message,
                PublishErrorKind::Rejected {
                    reason: format!("packet of {size} bytes exceeds max_packet_size {limit}"),
                },
            );
        }
        if self.shared.when_disconnected == WhenDisconnected::Refuse
            && !self.shared.state.borrow().is_connected()
        {
            return fail(message, PublishErrorKind::NotConnected);
        }
        let (tx, rx) = oneshot::channel();
        let mut tracker = self.shared.lock();
        // Checked under the lock: the driver sets it under the lock before failing
        // every waiter, so no waiter can slip in after that.
        if self.shared.closed.load(Ordering::Acquire) {
            drop(tracker);
            return fail(message, PublishErrorKind::Closed);
        }
        let sent = self.shared.client.try_publish(&message);
        if sent.is_err() {
            drop(tracker);
            let kind = if self.shared.closed.load(Ordering::Acquire) {
                PublishErrorKind::Closed
            } else {
                PublishErrorKind::QueueFull
            };
            return fail(message, kind);
        }
        tracker.queued_in_channel(Waiter::Publish {
            message: message.clone(),
            reply: Some(tx),
            queued: Instant::now(),
        });
        drop(tracker);
        metrics::counter!("iiot_mqtt_publishes_total").increment(1);
        Ok(Confirmation {
            rx,
            message: Some(message),
        })
    }

    /// Queues `message`, waiting for room in the request queue, and returns the
    /// future of its confirmation. Keeping several confirmations pending pipelines
    /// publishes up to the in-flight limit.
    ///
    /// # Errors
    /// As [`SessionHandle::try_publish`], except that a full queue is waited out.
    ///
    /// # Cancel safety
    /// Cancel safe: if dropped before it returns, the message was not queued.
    pub async fn publish(
        &self,
        mut message: OutboundMessage,
    ) -> Result<Confirmation, PublishError> {
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_publish(message) {
                Err(PublishError {
                    message: m,
                    kind: PublishErrorKind::QueueFull,
                }) => {
                    message = m;
                    room.await;
                }
                other => return other,
            }
        }
    }

    /// Subscribes to `filter` and waits for the SUBACK (at most the ack timeout).
    /// Messages arrive on the [`Inbound`] receiver. The subscription is remembered
    /// and restored whenever the broker reports that it lost the session.
    ///
    /// # Errors
    /// [`SubscribeError`] naming the filter and the kind of failure.
    ///
    /// # Cancel safety
    /// Dropping the future does not withdraw the subscription.
    pub async fn subscribe(
        &self,
        filter: impl Into<String>,
        qos: QoS,
    ) -> Result<(), SubscribeError> {
        let filter = filter.into();
        let err = |filter, kind| Err(SubscribeError { filter, kind });
        if let Err(reason) = iiot_core::topic::TopicFilter::parse(&filter) {
            return err(filter, SubscribeErrorKind::InvalidFilter { reason });
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut tracker = self.shared.lock();
            if self.shared.closed.load(Ordering::Acquire) {
                return err(filter, SubscribeErrorKind::Closed);
            }
            if let Err(QueueError::Full) = self.shared.client.try_subscribe(&filter, qos) {
                return err(filter, SubscribeErrorKind::QueueFull);
            }
            tracker.subscriptions.insert(filter.clone(), qos);
            tracker.queued_in_channel(Waiter::Subscribe {
                filters: vec![filter.clone()],
                reply: Some(tx),
            });
        }
        match tokio::time::timeout(self.shared.ack_timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => err(filter, SubscribeErrorKind::Closed),
            Err(_) => err(filter, SubscribeErrorKind::Timeout),
        }
    }
}

impl SessionHandle {
    /// Acknowledges a delivery made with [`super::InboundAcks::Manual`]: its PUBACK
    /// goes out once every earlier delivery of the same connection was acked too.
    /// A token of a connection that has since dropped is ignored (the broker
    /// redelivers that message, with a new token). Waits only while the bounded
    /// ack queue is full; the driver drains it before anything else.
    ///
    /// # Errors
    /// [`AckError::Closed`] once the driver stopped (the broker redelivers).
    ///
    /// # Cancel safety
    /// Cancel safe: if dropped before it returns, the ack was not queued.
    pub async fn ack(&self, token: AckToken) -> Result<(), AckError> {
        self.shared
            .acks
            .send(token)
            .await
            .map_err(|_| AckError::Closed)
    }

    /// As [`SessionHandle::ack`], without waiting.
    ///
    /// # Errors
    /// [`AckError::QueueFull`] (the token is given back) or [`AckError::Closed`].
    pub fn try_ack(&self, token: AckToken) -> Result<(), AckError> {
        self.shared.acks.try_send(token).map_err(|e| match e {
            mpsc::error::TrySendError::Full(t) => AckError::QueueFull(t),
            mpsc::error::TrySendError::Closed(_) => AckError::Closed,
        })
    }

    /// The filters the broker refused so far (SUBACK failure codes), newest last,
    /// also those restored after a reconnect. Each refusal also counts in
    /// `iiot_mqtt_subscribe_refused_total`.
    pub fn refused(&self) -> watch::Receiver<Vec<SubscribeError>> {
        self.shared.refused.clone()
    }
}

impl ConfirmedPublish for SessionHandle {
    /// Queues the message (waiting for room) and resolves on its PUBACK, or fails
    /// after the configured ack timeout.
    async fn publish_confirmed(&self, message: OutboundMessage) -> Result<(), PublishError> {
        let copy = message.clone();
        let attempt = async { self.publish(message).await?.await };
        match tokio::time::timeout(self.shared.ack_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(PublishError {
                message: copy,
                kind: PublishErrorKind::Timeout,
            }),
        }
    }
}

/// The session's deliveries as a command [`Inbox`](iiot_core::command::Inbox) for
/// the executor of `iiot-edge`. Configure the session with
/// [`super::InboundAcks::Manual`]: then a command's PUBACK goes out only when the
/// executor acknowledged it (after its ledger recorded it durably), so a gateway
/// that crashes in between gets it again. In auto-ack mode the broker forgets a
/// command on receipt and that guarantee is lost.
#[derive(Debug)]
pub struct InboundDeliveries {
    handle: SessionHandle,
    inbound: Inbound,
}

impl InboundDeliveries {
    /// Wraps the session's handle and its [`Inbound`] receiver.
    pub fn new(handle: SessionHandle, inbound: Inbound) -> Self {
        Self { handle, inbound }
    }
}

/// The PUBACK of one delivery of [`InboundDeliveries`].
#[derive(Debug)]
pub struct MqttAck {
    handle: SessionHandle,
    token: AckToken,
}

impl iiot_core::command::Acknowledge for MqttAck {
    async fn ack(self) {
        if let Err(e) = self.handle.ack(self.token).await {
            tracing::debug!(error = %e, "mqtt: ack after the session stopped; the broker delivers again");
        }
    }
}

impl iiot_core::command::Inbox for InboundDeliveries {
    type Ack = MqttAck;

    async fn recv(&mut self) -> Option<iiot_core::command::Delivery<MqttAck>> {
        let m = self.inbound.recv().await?;
        Some(iiot_core::command::Delivery {
            topic: m.topic,
            payload: m.payload,
            retain: m.retain,
            ack: m.token.map(|token| MqttAck {
                handle: self.handle.clone(),
                token,
            }),
        })
    }
}
