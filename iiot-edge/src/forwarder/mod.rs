//! The forwarder: drains an [`Outbox`] through a [`ConfirmedPublish`] transport.
//!
//! A record is acknowledged to the outbox (and so removed) only after the transport confirmed
//! it, and acknowledgements move in sequence order: delivery is at least once and in order.
//! Data-loss events stored in the outbox are published first, through a caller-supplied
//! encoder (the wire encoding of `DataLoss` lives in `iiot-core`).
//!
//! Failures back off exponentially with jitter (`min(initial × 2ⁿ, max)`, each delay drawn
//! between half and all of it). After a failure, the backlog is replayed at
//! [`ForwarderConfig::replay_rate`] while new appends keep flowing into the outbox (and, with
//! [`ReplayOrder::LiveFirst`], out to the transport ahead of the backlog).
//!
//! The forwarder never drops a record on its own: a record the peer rejects
//! (`PublishErrorKind::Rejected`, or `Refused` with an MQTT 5 PUBACK reason such as "not
//! authorized") stays in the outbox, is logged at error level once per record, counted in
//! `iiot_outbox_publish_refused_total`, and retried with backoff like any other failure
//! (fix the ACL or topic); only the outbox's bounds discard records, and they announce it. A transport that reports `Closed` ends [`Forwarder::run`]. After a
//! failure the forwarder lets the rest of the in-flight window settle before retrying, so a
//! transport must time out its own stalled publishes.

mod config;
mod ranges;

use std::collections::VecDeque;
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use iiot_core::publish::{ConfirmedPublish, OutboundMessage, PublishError, PublishErrorKind};
use iiot_core::types::{DataLoss, Sequence};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::{ForwarderConfig, LEGACY_KEYS, ReplayOrder};

use crate::outbox::{Outbox, Record};
use ranges::Ranges;

/// What the forwarder reports while it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ForwarderStatus {
    /// Records confirmed by the transport.
    pub confirmed: u64,
    /// Data-loss events confirmed by the transport.
    pub losses_confirmed: u64,
    /// Failed publishes.
    pub failures: u64,
    /// The outbox was acknowledged up to here.
    pub acked: Option<Sequence>,
    /// Waiting out a backoff delay.
    pub backing_off: bool,
}

/// Why [`Forwarder::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwarderExit {
    /// The cancellation token fired.
    Cancelled,
    /// The transport reported it is closed for good.
    TransportClosed,
}

/// Observes a running [`Forwarder`].
#[derive(Debug, Clone)]
pub struct ForwarderHandle {
    status: watch::Receiver<ForwarderStatus>,
}

impl ForwarderHandle {
    /// The latest status.
    pub fn status(&self) -> ForwarderStatus {
        self.status.borrow().clone()
    }

    /// Waits until `pred` holds for the status (or the forwarder is gone).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn wait_for(&mut self, pred: impl FnMut(&ForwarderStatus) -> bool) {
        let _ = self.status.wait_for(pred).await;
    }
}

/// Drains an outbox through a confirmed-publish transport. Create with [`Forwarder::new`],
/// drive with [`Forwarder::run`].
pub struct Forwarder<P, E> {
    outbox: Outbox,
    publisher: Arc<P>,
    encoder: E,
    config: ForwarderConfig,
    status: watch::Sender<ForwarderStatus>,
}

/// One stream of records read from the outbox: `[cursor, end)`.
struct Stream {
    cursor: u64,
    end: Option<u64>,
    buf: VecDeque<Record>,
    paced: bool,
    live: bool,
}

impl Stream {
    fn new(cursor: u64, end: Option<u64>, paced: bool, live: bool) -> Self {
        Self {
            cursor,
            end,
            buf: VecDeque::new(),
            paced,
            live,
        }
    }
    fn exhausted(&self) -> bool {
        self.buf.is_empty() && self.end.is_some_and(|e| self.cursor >= e)
    }
    fn min_unsent(&self) -> u64 {
        self.buf.front().map_or(self.cursor, |r| r.seq.0)
    }
}

type PublishFuture = Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send>>;

/// One publish awaiting its confirmation. Its future is polled by the forwarder's
/// own task, oldest first (not spawned), so the publishes of a window enter the
/// transport in sequence order: the broker sees records in order.
struct InFlight {
    seq: u64,
    sent: Instant,
    fut: Option<PublishFuture>,
    done: Option<Result<(), PublishError>>,
}

impl InFlight {
    /// Its outcome, polling it to the end.
    async fn settle(mut self) -> Result<(), PublishError> {
        match (self.done.take(), self.fut.take()) {
            (Some(r), _) => r,
            (None, Some(f)) => f.await,
            (None, None) => Ok(()),
        }
    }
}

/// Polls every unsettled publish of the window, oldest first; ready once the
/// oldest has its outcome.
fn poll_window(inflight: &mut VecDeque<InFlight>, cx: &mut Context<'_>) -> Poll<()> {
    for f in inflight.iter_mut() {
        if f.done.is_none()
            && let Some(fut) = f.fut.as_mut()
            && let Poll::Ready(r) = fut.as_mut().poll(cx)
        {
            f.done = Some(r);
            f.fut = None;
        }
    }
    match inflight.front() {
        Some(f) if f.done.is_some() => Poll::Ready(()),
        Some(_) => Poll::Pending,
        None => Poll::Ready(()),
    }
}

impl<P, E> Forwarder<P, E>
where
    P: ConfirmedPublish + 'static,
    E: Fn(&DataLoss) -> OutboundMessage + Send + Sync + 'static,
{
    /// A forwarder draining `outbox` through `publisher`; `encoder` turns data-loss events into
    /// messages. Returns its handle and the forwarder to [`run`](Forwarder::run) (handle
    /// first, like every driver of iiot-rs).
    pub fn new(
        outbox: Outbox,
        publisher: P,
        encoder: E,
        config: ForwarderConfig,
    ) -> (ForwarderHandle, Self) {
        let (status, rx) = watch::channel(ForwarderStatus::default());
        (
            ForwarderHandle { status: rx },
            Self {
                outbox,
                publisher: Arc::new(publisher),
                encoder,
                config,
                status,
            },
        )
    }

    /// Runs until cancelled or the transport closes. Records still unconfirmed then stay in
    /// the outbox and are sent again by the next run.
    ///
    /// # Cancel safety
    /// Cancelling the token is the clean stop. Dropping the future is also safe: in-flight
    /// publishes are dropped (transports keep track of them) and nothing unconfirmed was
    /// acknowledged.
    pub async fn run(self, cancel: CancellationToken) -> ForwarderExit {
        let mut run = Run::new(self);
        let exit = run.main(&cancel).await;
        // Unconfirmed publishes are dropped: the outbox still holds them.
        run.inflight.clear();
        exit
    }
}

struct Run<P, E> {
    f: Forwarder<P, E>,
    streams: Vec<Stream>,
    inflight: VecDeque<InFlight>,
    confirmed: Ranges,
    acked: u64,
    attempt: u32,
    next_slot: Instant,
    losses: watch::Receiver<u64>,
    /// The last look found no loss event to send: skip until the set changes.
    losses_idle: bool,
    /// The record the peer last refused (logged once, not on every retry).
    refused: Option<u64>,
}

enum Step {
    Continue,
    Exit(ForwarderExit),
}

impl<P, E> Run<P, E>
where
    P: ConfirmedPublish + 'static,
    E: Fn(&DataLoss) -> OutboundMessage + Send + Sync + 'static,
{
    fn new(f: Forwarder<P, E>) -> Self {
        let losses = f.outbox.subscribe_losses();
        let mut r = Self {
            f,
            streams: Vec::new(),
            inflight: VecDeque::new(),
            confirmed: Ranges::default(),
            acked: 0,
            attempt: 0,
            next_slot: Instant::now(),
            losses,
            losses_idle: false,
            refused: None,
        };
        let head = r.f.outbox.stats().head.0;
        r.acked = head;
        r.reconnected(head);
        r
    }

    /// (Re)builds the streams from `from`: what is durable now is backlog (paced).
    fn reconnected(&mut self, from: u64) {
        let end = self.f.outbox.stats().durable_end.0;
        let paced = self.f.config.replay_rate.is_some();
        self.streams = match self.f.config.order {
            ReplayOrder::LiveFirst => vec![
                Stream::new(end, None, false, true),
                Stream::new(from, Some(end), paced, false),
            ],
            _ => vec![
                Stream::new(from, Some(end), paced, false),
                Stream::new(end, None, false, true),
            ],
        };
        self.next_slot = Instant::now();
    }

    async fn main(&mut self, cancel: &CancellationToken) -> ForwarderExit {
        loop {
            if cancel.is_cancelled() {
                return ForwarderExit::Cancelled;
            }
            if self.losses.has_changed().unwrap_or(false) {
                self.losses.borrow_and_update();
                self.losses_idle = false;
            }
            let pending_losses = self.f.outbox.stats().pending_losses > 0 && !self.losses_idle;
            if pending_losses && self.inflight.is_empty() {
                match self.send_losses(cancel).await {
                    Step::Continue => continue,
                    Step::Exit(e) => return e,
                }
            }
            if !pending_losses && let Err(e) = self.fill(cancel).await {
                tracing::warn!(error = %e, "forwarder: outbox read failed");
                if let Step::Exit(x) = self.backoff(cancel).await {
                    return x;
                }
                continue;
            }
            if self.inflight.is_empty() {
                self.wait_for_work(cancel).await;
                continue;
            }
            tokio::select! {
                () = cancel.cancelled() => return ForwarderExit::Cancelled,
                () = std::future::poll_fn(|cx| poll_window(&mut self.inflight, cx)) => {}
            }
            let Some(mut done) = self.inflight.pop_front() else {
                continue;
            };
            match done.done.take() {
                Some(Ok(())) => self.confirm(&done),
                Some(Err(e)) => {
                    if let Step::Exit(x) = self.failed(done, e.kind, cancel).await {
                        return x;
                    }
                }
                None => self.inflight.push_front(done),
            }
        }
    }

    /// Starts publishes until the window is full or nothing is readable.
    async fn fill(&mut self, cancel: &CancellationToken) -> Result<(), crate::outbox::OutboxError> {
        let window = self.f.config.max_in_flight.get();
        while self.inflight.len() < window {
            let Some(i) = self.next_stream().await? else {
                return Ok(());
            };
            let Some(rec) = self.streams[i].buf.pop_front() else {
                return Ok(());
            };
            let paced = self.streams[i].paced;
            if paced && let Some(rate) = self.f.config.replay_rate {
                let now = Instant::now();
                if self.next_slot > now {
                    tokio::select! {
                        () = cancel.cancelled() => {
                            self.streams[i].buf.push_front(rec);
                            return Ok(());
                        }
                        () = tokio::time::sleep_until(self.next_slot) => {}
                    }
                }
                let step = Duration::from_secs(1) / rate.get();
                self.next_slot = self.next_slot.max(now) + step;
            }
            let publisher = self.publisher();
            let msg = rec.message;
            let mut fut: PublishFuture =
                Box::pin(async move { publisher.publish_confirmed(msg).await });
            // First poll now, in sequence order: the transport takes the message
            // before the next one is made.
            let done = match fut
                .as_mut()
                .poll(&mut Context::from_waker(std::task::Waker::noop()))
            {
                Poll::Ready(r) => Some(r),
                Poll::Pending => None,
            };
            self.inflight.push_back(InFlight {
                seq: rec.seq.0,
                sent: Instant::now(),
                fut: done.is_none().then_some(fut),
                done,
            });
        }
        Ok(())
    }

    fn publisher(&self) -> Arc<P> {
        Arc::clone(&self.f.publisher)
    }

    /// The stream to send from next (refilling buffers), or `None` if nothing is readable.
    async fn next_stream(&mut self) -> Result<Option<usize>, crate::outbox::OutboxError> {
        self.streams.retain(|s| !s.exhausted() || s.live);
        let durable_end = self.f.outbox.stats().durable_end.0;
        for i in 0..self.streams.len() {
            let s = &mut self.streams[i];
            if s.buf.is_empty() && s.cursor < durable_end && !s.exhausted() {
                let batch = self
                    .f
                    .outbox
                    .read(
                        Sequence(s.cursor),
                        self.f.config.read_batch,
                        self.f.config.read_max_bytes,
                    )
                    .await?;
                let s = &mut self.streams[i];
                if let Some(last) = batch.last() {
                    s.cursor = last.seq.0 + 1;
                } else {
                    // Everything up to what is durable was acknowledged or dropped.
                    s.cursor = s.cursor.max(durable_end.min(s.end.unwrap_or(u64::MAX)));
                }
                for r in batch {
                    if s.end.is_some_and(|e| r.seq.0 >= e) {
                        s.cursor = s.cursor.min(r.seq.0);
                        break;
                    }
                    if !self.confirmed.contains(r.seq.0) {
                        s.buf.push_back(r);
                    }
                }
                if let Some(e) = s.end {
                    s.cursor = s.cursor.min(e);
                }
            }
            if !self.streams[i].buf.is_empty() {
                return Ok(Some(i));
            }
            // In order: never send live records while the backlog has any left.
            if self.f.config.order == ReplayOrder::InOrder && !self.streams[i].exhausted() {
                return Ok(None);
            }
        }
        Ok(None)
    }

    fn confirm(&mut self, done: &InFlight) {
        self.attempt = 0;
        self.confirmed.insert(done.seq);
        metrics::counter!("iiot_outbox_sent_total").increment(1);
        metrics::histogram!("iiot_outbox_publish_latency_seconds")
            .record(done.sent.elapsed().as_secs_f64());
        self.ack_confirmed();
        self.f.status.send_modify(|s| {
            s.confirmed += 1;
            s.backing_off = false;
        });
    }

    /// Acknowledges everything below the lowest record not yet confirmed.
    fn ack_confirmed(&mut self) {
        let mut floor = u64::MAX;
        for s in &self.streams {
            if !s.exhausted() || s.live {
                floor = floor.min(s.min_unsent());
            }
        }
        for f in &self.inflight {
            floor = floor.min(f.seq);
        }
        // Records below `floor` were all read and confirmed (or no longer exist).
        let floor = floor.min(self.f.outbox.stats().durable_end.0);
        if floor > self.acked {
            self.acked = floor;
            self.f.outbox.ack(Sequence(floor - 1));
            self.confirmed.prune_below(floor);
            self.f
                .status
                .send_modify(|s| s.acked = Some(Sequence(floor - 1)));
        }
    }

    async fn failed(
        &mut self,
        first: InFlight,
        kind: PublishErrorKind,
        cancel: &CancellationToken,
    ) -> Step {
        // Let the rest of the window settle: what was confirmed is not sent again.
        let mut retry_from = first.seq;
        let mut closed = kind == PublishErrorKind::Closed;
        for f in std::mem::take(&mut self.inflight) {
            let seq = f.seq;
            match f.settle().await {
                Ok(()) => self.confirmed.insert(seq),
                Err(e) => {
                    closed |= e.kind == PublishErrorKind::Closed;
                    retry_from = retry_from.min(seq);
                }
            }
        }
        metrics::counter!("iiot_outbox_publish_failures_total").increment(1);
        self.f.status.send_modify(|s| s.failures += 1);
        if closed {
            tracing::warn!("forwarder: transport closed");
            return Step::Exit(ForwarderExit::TransportClosed);
        }
        if !kind.is_retryable() {
            metrics::counter!("iiot_outbox_publish_refused_total").increment(1);
            if self.refused != Some(first.seq) {
                self.refused = Some(first.seq);
                tracing::error!(seq = first.seq, error = %kind,
                    "forwarder: record refused by the peer; it stays in the outbox and is \
                     retried with backoff (reported once per record)");
            }
        }
        let mut from = retry_from;
        for s in &self.streams {
            if !s.exhausted() || s.live {
                from = from.min(s.min_unsent());
            }
        }
        let from = from.max(self.acked);
        let step = self.backoff(cancel).await;
        self.reconnected(from);
        step
    }

    async fn backoff(&mut self, cancel: &CancellationToken) -> Step {
        let delay = self
            .f
            .config
            .backoff()
            .delay(self.attempt, rand::random::<f64>());
        self.attempt = self.attempt.saturating_add(1);
        // Once per failure streak: the transport says why (the MQTT session logs
        // the broker's cause at warn, once per outage); each retry at debug.
        if self.attempt == 1 {
            tracing::info!(
                ?delay,
                "forwarder: publishing failed; retrying with backoff"
            );
        } else {
            tracing::debug!(?delay, attempt = self.attempt, "forwarder: backing off");
        }
        self.f.status.send_modify(|s| s.backing_off = true);
        tokio::select! {
            () = cancel.cancelled() => Step::Exit(ForwarderExit::Cancelled),
            () = tokio::time::sleep(delay) => Step::Continue,
        }
    }

    async fn send_losses(&mut self, cancel: &CancellationToken) -> Step {
        let events = match self
            .f
            .outbox
            .losses(NonZeroUsize::MIN.saturating_add(15))
            .await
        {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "forwarder: reading data-loss events failed");
                return self.backoff(cancel).await;
            }
        };
        if events.is_empty() {
            self.losses_idle = true;
            return Step::Continue;
        }
        for ev in events {
            let msg = (self.f.encoder)(&ev.loss);
            let res = tokio::select! {
                () = cancel.cancelled() => return Step::Exit(ForwarderExit::Cancelled),
                r = self.f.publisher.publish_confirmed(msg) => r,
            };
            match res {
                Ok(()) => {
                    self.f.outbox.ack_loss(&ev);
                    self.attempt = 0;
                    self.f.status.send_modify(|s| s.losses_confirmed += 1);
                }
                Err(e) => {
                    self.f.status.send_modify(|s| s.failures += 1);
                    if e.kind == PublishErrorKind::Closed {
                        return Step::Exit(ForwarderExit::TransportClosed);
                    }
                    return self.backoff(cancel).await;
                }
            }
        }
        // Make the acknowledgements visible before looking again (no duplicate events).
        self.f.outbox.sync().await;
        Step::Continue
    }

    async fn wait_for_work(&mut self, cancel: &CancellationToken) {
        let from = self
            .streams
            .iter()
            .filter(|s| !s.exhausted() || s.live)
            .map(|s| s.cursor)
            .min()
            .unwrap_or(u64::MAX);
        tokio::select! {
            () = cancel.cancelled() => {}
            () = self.f.outbox.readable(Sequence(from)) => {}
            _ = self.losses.changed() => self.losses_idle = false,
        }
    }
}
