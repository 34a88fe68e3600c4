//! Readings into telemetry batches into the outbox: one batch at a time, each
//! stamped with the outbox's sequence number, a ULID message id and the gateway
//! time under the outbox's lock.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use iiot_core::codec::protobuf;
use iiot_core::publish::OutboundMessage;
use iiot_core::types::{
    BatchMetadata, DeviceId, MessageId, Sample, Sequence, TelemetryBatch, Timestamp,
};
use tokio::sync::mpsc;

use crate::outbox::{Outbox, OutboxStats};

/// How readings become telemetry batches.
///
/// ## Defaults
///
/// | field | default |
/// |---|---|
/// | `max_samples` | 100 samples close a batch |
/// | `max_delay` | 1 s after a batch's first sample closes it |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    pub(crate) max_samples: NonZeroUsize,
    pub(crate) max_delay: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_samples: NonZeroUsize::new(100).unwrap_or(NonZeroUsize::MIN),
            max_delay: Duration::from_secs(1),
        }
    }
}

impl BatchConfig {
    /// Closes a batch at this many samples.
    pub fn set_max_samples(&mut self, n: NonZeroUsize) -> &mut Self {
        self.max_samples = n;
        self
    }

    /// Closes a batch at the latest this long after its first sample.
    pub fn set_max_delay(&mut self, d: Duration) -> &mut Self {
        self.max_delay = d;
        self
    }
}

/// What the runtime produced so far: a batch counts once its append to the
/// outbox is durable (and after its [`BatchObserver::durable`] returned).
#[derive(Debug, Default)]
pub struct RuntimeCounters {
    /// Samples durably appended to the outbox.
    pub samples: AtomicU64,
    /// Telemetry batches durably appended to the outbox.
    pub batches: AtomicU64,
    /// Batches the outbox refused (each one logged with its reason).
    pub append_errors: AtomicU64,
}

/// Sees every batch the runtime made durable, one at a time and in sequence
/// order, before the counters count it: an audit log, a produced-sample record
/// for tests. `()` observes nothing.
pub trait BatchObserver: Send + 'static {
    /// `batch` (with its sequence, message id and gateway time) is durable in
    /// the outbox. The next batch waits until this returns.
    fn durable(&mut self, batch: &TelemetryBatch) -> impl Future<Output = ()> + Send;

    /// The outbox refused a batch (disk full, record too large); it is lost and
    /// counted in [`RuntimeCounters::append_errors`].
    fn append_failed(&mut self, samples: usize, error: &str) -> impl Future<Output = ()> + Send {
        let _ = (samples, error);
        async {}
    }

    /// The last batch was appended: the sources stopped.
    fn stopped(
        &mut self,
        counters: &RuntimeCounters,
        stats: &OutboxStats,
    ) -> impl Future<Output = ()> + Send {
        let _ = (counters, stats);
        async {}
    }
}

impl BatchObserver for () {
    async fn durable(&mut self, _batch: &TelemetryBatch) {}
}

/// Where closed batches go.
pub(crate) struct BatchTarget<O> {
    pub(crate) outbox: Outbox,
    pub(crate) topic: String,
    pub(crate) device: DeviceId,
    pub(crate) metadata: BatchMetadata,
    pub(crate) counters: Arc<RuntimeCounters>,
    pub(crate) observer: O,
}

impl<O: BatchObserver> BatchTarget<O> {
    /// Appends one batch, stamped with the outbox's sequence number; once it is
    /// durable, tells the observer and counts it.
    async fn append(&mut self, samples: Vec<Sample>) {
        let n = samples.len();
        let mut batch = TelemetryBatch::new(self.device.clone(), Sequence::default(), samples);
        batch.metadata = self.metadata.clone();
        let topic = self.topic.clone();
        let result = self
            .outbox
            .append_with(|seq| {
                batch.seq = seq;
                batch.message_id = MessageId::generate();
                batch.gateway_time = Timestamp::now();
                OutboundMessage::new(topic.clone(), protobuf::encode_telemetry(&batch))
            })
            .await;
        let durable = match result {
            // Immediate under `EveryWrite`; waits for the group commit otherwise.
            Ok(appended) => appended.durable().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(error) = durable {
            self.counters.append_errors.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("iiot_gateway_append_errors_total").increment(1);
            tracing::error!(%error, samples = n, "outbox refused a batch");
            self.observer.append_failed(n, &error).await;
            return;
        }
        // The observer first, then the counters: a reader of both never sees a
        // count the observer has not seen.
        self.observer.durable(&batch).await;
        self.counters.samples.fetch_add(n as u64, Ordering::Relaxed);
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("iiot_gateway_samples_total").increment(n as u64);
        metrics::counter!("iiot_gateway_batches_total").increment(1);
        tracing::trace!(seq = %batch.seq, samples = n, "batch in outbox");
    }

    async fn stopped(&mut self) {
        let stats = self.outbox.stats();
        self.observer.stopped(&self.counters, &stats).await;
    }
}

/// Collects readings into batches closed at `max_samples` or `max_delay` after
/// their first sample; ends, after appending the last batch, once every sender
/// of `readings` is gone (every source returned).
/// Readings taken from the queue at once.
const TAKE: usize = 256;

pub(crate) async fn batch_loop<O: BatchObserver>(
    mut readings: mpsc::Receiver<Sample>,
    mut target: BatchTarget<O>,
    cfg: BatchConfig,
) {
    let mut samples: Vec<Sample> = Vec::new();
    // Readings are taken from the queue in bulk, and one timer is re-armed per batch
    // (not a timer and a select per reading).
    let mut taken: Vec<Sample> = Vec::with_capacity(TAKE);
    let timer = tokio::time::sleep(cfg.max_delay);
    tokio::pin!(timer);
    let mut armed = false;
    loop {
        tokio::select! {
            n = readings.recv_many(&mut taken, TAKE) => {
                if n == 0 {
                    break;
                }
                for sample in taken.drain(..) {
                    if samples.is_empty() {
                        timer.as_mut().reset(tokio::time::Instant::now() + cfg.max_delay);
                        armed = true;
                    }
                    samples.push(sample);
                    if samples.len() >= cfg.max_samples.get() {
                        target.append(std::mem::take(&mut samples)).await;
                        armed = false;
                    }
                }
            }
            () = &mut timer, if armed => {
                target.append(std::mem::take(&mut samples)).await;
                armed = false;
            }
        }
    }
    if !samples.is_empty() {
        target.append(samples).await;
    }
    target.stopped().await;
}
