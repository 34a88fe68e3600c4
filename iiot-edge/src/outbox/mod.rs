//! The store-and-forward outbox: durable, ordered, bounded.
//!
//! Records are appended with a topic, payload and delivery options and get a persistent,
//! monotonic sequence number. They are read back in sequence order and removed only when
//! acknowledged (at least once, in order, across restarts). The store is bounded by bytes and
//! age; whatever the bounds discard is counted and becomes a [`DataLoss`] event, stored in the
//! outbox and published ahead of records by the [`Forwarder`](crate::forwarder::Forwarder).
//!
//! ## Layout
//! The outbox keeps an ordered byte map behind a small internal storage trait, on one of
//! two [`Engine`]s: the default log engine (an append-only log of checksummed frames with
//! an in-memory index; one `write` and one `fdatasync` per commit) or sled 0.34 (cargo
//! feature `sled`). Each commit group is stored as one or more segments (entries of at
//! most 64 KiB on the log engine, 6 KiB on sled, or one larger record) keyed by the first
//! sequence number they hold, plus one meta entry (cursors and counters) rewritten in the
//! same atomic batch, plus one entry per data-loss event. A commit group is one atomic
//! batch and one durability point, however many records it holds.
//!
//! **Stability warning:** the disk format is versioned (see `codec.rs`); stores written by a
//! newer format are refused, never modified.

mod codec;
mod config;
mod error;
mod open;
mod read;
mod shared;
pub(crate) mod storage;
mod writer;

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use iiot_core::publish::OutboundMessage;
use iiot_core::types::{DataLoss, DeviceId, MessageId, Sequence};
use tokio::sync::{Notify, oneshot, watch};

pub use codec::Record;
pub use config::{Durability, Engine, LEGACY_KEYS, OutboxConfig, WhenFull};
pub use error::{AppendError, DurableError, OpenError, OutboxError};

use codec::{LOSS_PREFIX, decode_loss};
use shared::{Pending, Reply, Shared, State};
#[cfg(test)]
use storage::Storage;

/// A durable, ordered, bounded store-and-forward queue. Cheap to clone; all clones share one
/// store and one writer thread. The store closes when the last clone is dropped (or on
/// [`close`](Self::close)).
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Outbox {
    /// The device, the engine and a snapshot of the cursors (no record contents).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.stats();
        f.debug_struct("Outbox")
            .field("device", self.device())
            .field("engine", &self.config().engine)
            .field("head", &s.head)
            .field("next_seq", &s.next_seq)
            .field("backlog_records", &s.backlog_records)
            .field("backlog_bytes", &s.backlog_bytes)
            .finish_non_exhaustive()
    }
}

struct Inner {
    shared: Arc<Shared>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

/// A record accepted by the outbox.
#[derive(Debug)]
pub struct Appended {
    seq: Sequence,
    rx: Option<oneshot::Receiver<Reply>>,
}

impl Appended {
    /// The record's sequence number.
    pub fn seq(&self) -> Sequence {
        self.seq
    }

    /// Resolves once the record is on disk (immediately if it already is).
    ///
    /// # Errors
    /// [`DurableError`] with the message given back if the write or flush failed or the
    /// outbox shut down first.
    ///
    /// # Cancel safety
    /// Dropping this future does not withdraw the record.
    pub async fn durable(self) -> Result<Sequence, DurableError> {
        let Some(rx) = self.rx else {
            return Ok(self.seq);
        };
        match rx.await {
            Ok(Ok(())) => Ok(self.seq),
            Ok(Err((source, message))) => Err(DurableError {
                seq: self.seq,
                source,
                message,
            }),
            // The writer drops replies only when it is gone; the message went with it.
            Err(_) => Err(DurableError {
                seq: self.seq,
                source: None,
                message: OutboundMessage::new("", Vec::new()),
            }),
        }
    }
}

/// A stored data-loss event, to publish and then acknowledge with
/// [`Outbox::ack_loss`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LossEvent {
    key: u64,
    /// The event.
    pub loss: DataLoss,
}

/// A snapshot of the outbox's cursors and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OutboxStats {
    /// First live sequence number (everything below is acknowledged, dropped or expired).
    pub head: Sequence,
    /// The sequence the next append gets.
    pub next_seq: Sequence,
    /// One past the last durable (readable) sequence.
    pub durable_end: Sequence,
    /// Live records stored.
    pub backlog_records: u64,
    /// Bytes of live records stored.
    pub backlog_bytes: u64,
    /// Records accepted but not yet written.
    pub pending_records: usize,
    /// How old the oldest live record is.
    pub oldest_age: Option<Duration>,
    /// Records ever appended (persistent).
    pub appended: u64,
    /// Records dropped by [`WhenFull::DropOldest`] (persistent).
    pub dropped_records: u64,
    /// Bytes dropped by [`WhenFull::DropOldest`] (persistent).
    pub dropped_bytes: u64,
    /// Records expired by the age bound (persistent).
    pub expired_records: u64,
    /// Bytes expired by the age bound (persistent).
    pub expired_bytes: u64,
    /// Records found unreadable and discarded (persistent).
    pub unreadable_records: u64,
    /// Data-loss events waiting to be published.
    pub pending_losses: u64,
}

impl Outbox {
    /// Opens (or creates) the outbox stored in directory `path` for `device`.
    ///
    /// A store that is corrupt is renamed to `<path>.corrupt-<time>`, a fresh store is
    /// started and a `DataLoss { reason: StoreCorrupt }` event is queued; this is logged at
    /// error level, and the open succeeds.
    ///
    /// # Errors
    /// [`OpenError`]: permission denied (naming the path), store locked by another handle,
    /// other I/O errors, a store of a newer format, or a corrupt store that could not be
    /// moved aside.
    ///
    /// # Cancel safety
    /// The open runs on a blocking thread; dropping the future lets it finish and then
    /// closes the store.
    pub async fn open(
        path: impl AsRef<Path>,
        device: DeviceId,
        config: OutboxConfig,
    ) -> Result<Self, OpenError> {
        let path = path.as_ref().to_owned();
        tokio::task::spawn_blocking(move || {
            let (loaded, engine) = open::open_store(&path, &device, &config)?;
            let mut config = config;
            config.engine = engine;
            Ok(Self::start(loaded, device, config, shared::system_clock()))
        })
        .await
        .map_err(|_| OpenError::Cancelled)?
    }

    /// Opens an outbox over an injected storage engine (tests: failing or crashing storage).
    #[cfg(test)]
    pub(crate) fn open_with(
        storage: &Arc<dyn Storage>,
        device: DeviceId,
        config: OutboxConfig,
        clock: shared::Clock,
    ) -> Result<Self, OpenError> {
        let loaded = open::load_or_init(storage)?;
        Ok(Self::start(loaded, device, config, clock))
    }

    fn start(
        loaded: open::Loaded,
        device: DeviceId,
        config: OutboxConfig,
        clock: shared::Clock,
    ) -> Self {
        let meta = loaded.meta;
        let (durable, _) = watch::channel(meta.next_seq);
        let (losses, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_seq: meta.next_seq,
                pending: Vec::new(),
                pending_bytes: 0,
                pending_since: None,
                ack_to: meta.head,
                ack_since: None,
                loss_acks: Vec::new(),
                meta,
                durable_end: meta.next_seq,
                oldest_at: loaded.oldest_at,
                loss_count: loaded.loss_count,
                syncs: Vec::new(),
                min_next_seq: meta.next_seq,
                unflushed: false,
                closed: false,
            }),
            wake: Condvar::new(),
            space: Notify::new(),
            durable,
            losses,
            storage: loaded.storage,
            config,
            device,
            clock,
        });
        let w = writer::Writer {
            shared: Arc::clone(&shared),
        };
        let handle = std::thread::Builder::new()
            .name("iiot-outbox-writer".into())
            .spawn(move || w.run());
        let writer = match handle {
            Ok(h) => Some(h),
            Err(e) => {
                // Without a writer nothing can be stored: refuse every append.
                tracing::error!(error = %e, "outbox: cannot start writer thread");
                shared.lock().closed = true;
                None
            }
        };
        Self {
            inner: Arc::new(Inner {
                shared,
                writer: Mutex::new(writer),
            }),
        }
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// The device this outbox belongs to (named in its data-loss events).
    pub fn device(&self) -> &DeviceId {
        &self.shared().device
    }

    /// The configuration it was opened with (`engine`: the engine the store is on, which
    /// for an existing store is the one that wrote it).
    pub fn config(&self) -> &OutboxConfig {
        &self.shared().config
    }

    /// Appends a message. Under [`Durability::EveryWrite`] this returns once the record is on
    /// disk; under [`Durability::GroupCommit`] once it is queued (await
    /// [`Appended::durable`]). With [`WhenFull::Block`] it waits for space.
    ///
    /// # Errors
    /// [`AppendError`], always with the message given back: too large, closed, or (under
    /// `EveryWrite`) an I/O error.
    ///
    /// # Cancel safety
    /// Dropping the future while it waits for space stores nothing. Once queued, the record is
    /// stored even if the future is dropped.
    pub async fn append(&self, message: OutboundMessage) -> Result<Appended, AppendError> {
        let mut slot = Some(message);
        self.append_with(move |_| {
            slot.take()
                .unwrap_or_else(|| OutboundMessage::new("", Vec::new()))
        })
        .await
    }

    /// Like [`append`](Self::append), but builds the message from its sequence number, so the
    /// number can go into the payload (e.g. `TelemetryBatch.seq`). `build` is called with the
    /// lock held (keep it short) and may be called again if the policy is
    /// [`WhenFull::Block`] and the record did not fit.
    ///
    /// # Errors
    /// As [`append`](Self::append).
    ///
    /// # Cancel safety
    /// As [`append`](Self::append).
    pub async fn append_with(
        &self,
        mut build: impl FnMut(Sequence) -> OutboundMessage,
    ) -> Result<Appended, AppendError> {
        let appended = match self.try_append_with(&mut build) {
            Err(AppendError::Full { message, .. }) if !self.shared().lock().closed => {
                drop(message);
                // Slow path: register for the space signal before retrying, so a wake-up
                // between the retry and the wait is not lost.
                loop {
                    let notified = self.shared().space.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    match self.try_append_with(&mut build) {
                        Err(AppendError::Full { message, .. }) if !self.shared().lock().closed => {
                            drop(message);
                            notified.await;
                        }
                        other => break other?,
                    }
                }
            }
            other => other?,
        };
        if matches!(self.config().durability, Durability::EveryWrite) {
            let seq = appended.durable().await.map_err(|e| match e.source {
                Some(source) => AppendError::Io {
                    seq: e.seq,
                    source,
                    message: e.message,
                },
                None => AppendError::Closed { message: e.message },
            })?;
            return Ok(Appended { seq, rx: None });
        }
        Ok(appended)
    }

    /// Queues a message without waiting: for space, or for the disk. Await
    /// [`Appended::durable`] to know it is on disk (under either durability policy).
    ///
    /// # Errors
    /// [`AppendError::Full`] when the policy is [`WhenFull::Block`] and there is no room, or
    /// when too much is waiting to be written; the other [`AppendError`]s as `append`.
    pub fn try_append(&self, message: OutboundMessage) -> Result<Appended, AppendError> {
        let mut slot = Some(message);
        self.try_append_with(&mut |_| {
            slot.take()
                .unwrap_or_else(|| OutboundMessage::new("", Vec::new()))
        })
    }

    fn try_append_with(
        &self,
        build: &mut impl FnMut(Sequence) -> OutboundMessage,
    ) -> Result<Appended, AppendError> {
        let shared = self.shared();
        let cfg = &shared.config;
        let mut st = shared.lock();
        let seq = st.next_seq;
        let message = build(Sequence(seq));
        if st.closed {
            return Err(AppendError::Closed { message });
        }
        if message.topic.len() > usize::from(u16::MAX) {
            let len = message.topic.len();
            return Err(AppendError::TopicTooLong { len, message });
        }
        let len = codec::record_len(&message);
        let limit = cfg.record_limit();
        if len > limit {
            return Err(AppendError::RecordTooLarge {
                len,
                limit,
                message,
            });
        }
        let used = Shared::used_bytes(&st);
        if cfg.when_full == WhenFull::Block && used + len > cfg.max_bytes.get() {
            return Err(AppendError::Full {
                used,
                limit: cfg.max_bytes.get(),
                message,
            });
        }
        let pending_limit = cfg.max_pending_bytes.get().max(limit);
        if st.pending_bytes + len > pending_limit {
            return Err(AppendError::Full {
                used: st.pending_bytes,
                limit: pending_limit,
                message,
            });
        }
        let (tx, rx) = oneshot::channel();
        st.next_seq += 1;
        st.pending_bytes += len;
        let was_empty = st.pending.is_empty();
        if was_empty {
            st.pending_since = Some(Instant::now());
        }
        // The writer only sleeps with nothing pending, or inside a group-commit window that
        // this record does not need to cut short: skip the wake-up syscall otherwise.
        let wake = was_empty || st.pending_bytes >= writer::GROUP_MAX_BYTES;
        st.pending.push(Pending {
            seq,
            at: shared.now(),
            len,
            message,
            done: tx,
        });
        drop(st);
        if wake {
            shared.wake.notify_one();
        }
        Ok(Appended {
            seq: Sequence(seq),
            rx: Some(rx),
        })
    }

    /// Reads durable records with `seq >= from` (and at or after the head), in order: at
    /// most `max_records`, and at most `max_bytes` unless the first record alone is larger.
    ///
    /// # Errors
    /// [`OutboxError::Io`] when the store cannot be read. Unreadable segments are skipped
    /// (and reported as data loss when the head passes them).
    ///
    /// # Cancel safety
    /// Cancel safe: reading changes nothing.
    pub async fn read(
        &self,
        from: Sequence,
        max_records: NonZeroUsize,
        max_bytes: NonZeroUsize,
    ) -> Result<Vec<Record>, OutboxError> {
        let shared = Arc::clone(&self.inner.shared);
        tokio::task::spawn_blocking(move || {
            read::read_blocking(&shared, from.0, max_records.get(), max_bytes.get())
        })
        .await
        .map_err(|_| OutboxError::Closed)?
    }

    /// Resolves once a record with `seq >= from` is readable (durable), or the outbox closed.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn readable(&self, from: Sequence) {
        let mut rx = self.shared().durable.subscribe();
        let _ = rx.wait_for(|&end| end > from.0).await;
    }

    /// Acknowledges every record with `seq <= upto`: they are removed. Takes effect for readers
    /// at once; it is persisted with the next commit group, at the latest 50 ms later (so
    /// acknowledging record by record does not cost a flush each), and a crash before that
    /// delivers them again (at least once). Acknowledging beyond what is durable is clamped.
    pub fn ack(&self, upto: Sequence) {
        let shared = self.shared();
        let mut st = shared.lock();
        let to = upto.0.saturating_add(1).min(st.durable_end);
        if to > st.ack_to {
            st.ack_to = to;
            if st.ack_since.is_none() {
                st.ack_since = Some(Instant::now());
                drop(st);
                shared.wake.notify_one();
            }
        }
    }

    /// The stored data-loss events (oldest first, at most `max`).
    ///
    /// # Errors
    /// [`OutboxError::Io`] when the store cannot be read.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn losses(&self, max: NonZeroUsize) -> Result<Vec<LossEvent>, OutboxError> {
        let shared = Arc::clone(&self.inner.shared);
        tokio::task::spawn_blocking(move || {
            let acked: Vec<u64> = shared.lock().loss_acks.iter().map(|a| a.0).collect();
            let rows = shared.storage.range(
                &codec::loss_key(0),
                &[LOSS_PREFIX + 1],
                max.get() + acked.len(),
            )?;
            let mut out = Vec::new();
            for (k, v) in rows {
                let key = codec::key_number(&k).unwrap_or(u64::MAX);
                if acked.contains(&key) || out.len() >= max.get() {
                    continue;
                }
                match decode_loss(&v) {
                    Ok(loss) => out.push(LossEvent { key, loss }),
                    Err(e) => {
                        // Cannot be published; remove it rather than block the queue.
                        tracing::error!(key, error = %e, "outbox: unreadable data-loss event dropped");
                        shared.lock().loss_acks.push((key, MessageId::from_u128(0)));
                        shared.wake.notify_one();
                    }
                }
            }
            Ok(out)
        })
        .await
        .map_err(|_| OutboxError::Closed)?
    }

    /// Resolves when the set of stored data-loss events changes.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn losses_changed(&self, seen: &mut watch::Receiver<u64>) {
        let _ = seen.changed().await;
    }

    /// A receiver to pass to [`losses_changed`](Self::losses_changed).
    pub fn subscribe_losses(&self) -> watch::Receiver<u64> {
        self.shared().losses.subscribe()
    }

    /// Acknowledges a published data-loss event; it is removed with the next commit group.
    pub fn ack_loss(&self, event: &LossEvent) {
        let shared = self.shared();
        shared
            .lock()
            .loss_acks
            .push((event.key, event.loss.message_id));
        shared.wake.notify_one();
    }

    /// Resolves once everything accepted before the call (appends, acknowledgements, loss
    /// acknowledgements) has been committed, and the age bound has been applied.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn sync(&self) {
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.shared().lock();
            if st.closed {
                return;
            }
            st.syncs.push(tx);
        }
        self.shared().wake.notify_one();
        let _ = rx.await;
    }

    /// A snapshot of cursors and counters.
    pub fn stats(&self) -> OutboxStats {
        let st = self.shared().lock();
        let m = &st.meta;
        let now = self.shared().now();
        OutboxStats {
            head: Sequence(m.head.max(st.ack_to.min(st.durable_end))),
            next_seq: Sequence(st.next_seq),
            durable_end: Sequence(st.durable_end),
            backlog_records: m.backlog_records,
            backlog_bytes: m.backlog_bytes,
            pending_records: st.pending.len(),
            oldest_age: st
                .oldest_at
                .map(|at| Duration::from_nanos(u64::try_from(now.saturating_sub(at)).unwrap_or(0))),
            appended: m.appended,
            dropped_records: m.dropped_records,
            dropped_bytes: m.dropped_bytes,
            expired_records: m.expired_records,
            expired_bytes: m.expired_bytes,
            unreadable_records: m.unreadable_records,
            pending_losses: st.loss_count,
        }
    }

    /// Stops accepting appends, writes and flushes what was accepted, and waits for the
    /// writer thread. Other clones see [`AppendError::Closed`] afterwards.
    ///
    /// # Cancel safety
    /// If dropped, the writer still finishes in the background.
    pub async fn close(self) {
        self.shared().lock().closed = true;
        self.shared().wake.notify_all();
        self.shared().space.notify_waiters();
        let handle = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

#[cfg(test)]
mod tests;
