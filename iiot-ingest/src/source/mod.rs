//! Sources: where payloads come from, with manual acknowledgement.
//!
//! A source hands out [`Delivery`]s and takes their tokens back through
//! [`Source::ack`] once the pipeline committed them. Until then the broker still
//! owns the message and redelivers it after a crash.

use std::future::Future;

use bytes::Bytes;
use iiot_core::types::Timestamp;

pub mod memory;
#[cfg(feature = "mqtt")]
pub mod mqtt;

/// One received payload.
#[derive(Debug)]
pub struct Delivery<T> {
    /// The topic it arrived on.
    pub topic: String,
    /// The payload, untouched.
    pub payload: Bytes,
    /// When it was received.
    pub received_at: Timestamp,
    /// Hand this back to [`Source::ack`] after commit.
    pub token: T,
}

/// Why a source could not deliver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The connection dropped; the source reconnects on the next call.
    #[error("source disconnected: {detail}")]
    Disconnected {
        /// What happened.
        detail: String,
    },
    /// The source is closed for good.
    #[error("source closed")]
    Closed,
    /// The broker refused a subscription filter; nothing arrives through it.
    #[error("subscription {filter:?} refused: {detail}")]
    SubscriptionRefused {
        /// The filter.
        filter: String,
        /// The broker's reason.
        detail: String,
    },
    /// The broker keeps sending a packet larger than the source's limit (MQTT
    /// 3.1.1 cannot skip it): every later message of the session waits behind it.
    /// Raise `max_packet_bytes`, use MQTT 5, or set the broker's limit
    /// (Mosquitto: `message_size_limit`).
    #[error(
        "the broker keeps sending a packet of {size} bytes, larger than max_packet_bytes \
         ({limit}); use MQTT 5 or set the broker's message_size_limit"
    )]
    PacketTooLarge {
        /// Remaining length of the packet.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// A stream of deliveries with manual acknowledgement.
pub trait Source: Send {
    /// What identifies a delivery to acknowledge.
    type Token: Send;

    /// The next delivery; `Ok(None)` when the source ended.
    ///
    /// # Errors
    /// [`SourceError::Disconnected`] (retry) or [`SourceError::Closed`].
    ///
    /// # Cancel safety
    /// Must be cancel safe: the pipeline polls it inside `select!`.
    fn recv(
        &mut self,
    ) -> impl Future<Output = Result<Option<Delivery<Self::Token>>, SourceError>> + Send;

    /// Acknowledges a delivery: the broker may forget it.
    ///
    /// # Errors
    /// [`SourceError`]; an ack that cannot be sent means the broker redelivers,
    /// which the sink's idempotency absorbs.
    fn ack(&mut self, token: Self::Token) -> impl Future<Output = Result<(), SourceError>> + Send;
}
