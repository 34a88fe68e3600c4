//! An in-memory source fed through a bounded channel; records acknowledgements.
//! For tests and for embedding ingest in a process that already has the payloads.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use iiot_core::types::Timestamp;
use tokio::sync::mpsc;

use super::{Delivery, Source, SourceError};

/// The feeding side of a [`MemorySource`].
#[derive(Debug, Clone)]
pub struct MemoryFeed {
    tx: mpsc::Sender<(String, Bytes)>,
}

impl MemoryFeed {
    /// Sends a payload, waiting while the channel is full (back-pressure).
    ///
    /// # Errors
    /// Gives the topic and payload back when the source is gone.
    pub async fn send(
        &self,
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
    ) -> Result<(), (String, Bytes)> {
        self.tx
            .send((topic.into(), payload.into()))
            .await
            .map_err(|e| e.0)
    }

    /// Sends without waiting.
    ///
    /// # Errors
    /// Gives the topic and payload back when the channel is full or closed.
    pub fn try_send(
        &self,
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
    ) -> Result<(), (String, Bytes)> {
        self.tx
            .try_send((topic.into(), payload.into()))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(x) | mpsc::error::TrySendError::Closed(x) => x,
            })
    }
}

/// A source over a bounded channel. Delivery tokens are sequential numbers; the
/// acknowledged ones are recorded in order (see [`MemorySource::acked`]).
#[derive(Debug)]
pub struct MemorySource {
    rx: mpsc::Receiver<(String, Bytes)>,
    next: u64,
    acked: Arc<Mutex<Vec<u64>>>,
}

impl MemorySource {
    /// A source with room for `capacity` unread payloads, and its feed.
    pub fn new(capacity: usize) -> (Self, MemoryFeed) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                rx,
                next: 0,
                acked: Arc::default(),
            },
            MemoryFeed { tx },
        )
    }

    /// A shared view of the acknowledged tokens, in acknowledgement order.
    pub fn acked(&self) -> Arc<Mutex<Vec<u64>>> {
        Arc::clone(&self.acked)
    }
}

impl Source for MemorySource {
    type Token = u64;

    async fn recv(&mut self) -> Result<Option<Delivery<u64>>, SourceError> {
        Ok(self.rx.recv().await.map(|(topic, payload)| {
            let token = self.next;
            self.next += 1;
            Delivery {
                topic,
                payload,
                received_at: Timestamp::now(),
                token,
            }
        }))
    }

    async fn ack(&mut self, token: u64) -> Result<(), SourceError> {
        if let Ok(mut a) = self.acked.lock() {
            a.push(token);
        }
        Ok(())
    }
}
