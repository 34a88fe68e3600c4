//! Per-device metrics the SDK's pipeline counters do not label by device yet.
//!
//! [`DeviceMetricsSink`] wraps any sink and, after each successful commit, counts
//! per device:
//!
//! | metric | signal |
//! |---|---|
//! | `iiot_reference_device_samples_committed_total{device}` | throughput (samples of telemetry batches in committed transactions; a batch the sink already held counts again, which only happens on redelivery after a restart) |
//! | `iiot_reference_device_dead_letters_total{device, reason}` | errors (`device = "unknown"` when the topic names none) |
//! | `iiot_reference_device_gaps_opened_total{device}` | errors (missing sequence numbers) |
//! | `iiot_reference_device_data_loss_records_total{device}` | errors (records the gateway announced lost) |
//!
//! Connectivity and freshness come per device from the pipeline itself
//! (`iiot_ingest_device_online`, `iiot_ingest_device_last_seen_seconds`).

use iiot_core::topic::Topic;
use iiot_ingest::record::{CommitBatch, CommitReport, DeviceSequenceState, GapChange};
use iiot_ingest::sink::{Sink, SinkError};

/// A sink that counts per-device metrics of what it committed.
#[derive(Debug)]
pub struct DeviceMetricsSink<K> {
    inner: K,
}

impl<K> DeviceMetricsSink<K> {
    /// Wraps `inner`.
    pub fn new(inner: K) -> Self {
        Self { inner }
    }
}

fn record(batch: &CommitBatch) {
    for t in &batch.telemetry {
        metrics::counter!(
            "iiot_reference_device_samples_committed_total",
            "device" => t.batch.device_id.to_string()
        )
        .increment(t.batch.samples.len() as u64);
    }
    for d in &batch.dead_letters {
        let device = Topic::parse(&d.topic)
            .map_or_else(|_| "unknown".to_owned(), |t| t.path.device_id().to_string());
        metrics::counter!(
            "iiot_reference_device_dead_letters_total",
            "device" => device,
            "reason" => d.reason.label()
        )
        .increment(1);
    }
    for g in &batch.gaps {
        if let GapChange::Opened(gap) = g {
            metrics::counter!(
                "iiot_reference_device_gaps_opened_total",
                "device" => gap.device_id.to_string()
            )
            .increment(1);
        }
    }
    for l in &batch.data_loss {
        metrics::counter!(
            "iiot_reference_device_data_loss_records_total",
            "device" => l.device_id.to_string()
        )
        .increment(l.count());
    }
}

impl<K: Sink> Sink for DeviceMetricsSink<K> {
    async fn commit(&mut self, batch: &CommitBatch) -> Result<CommitReport, SinkError> {
        let report = self.inner.commit(batch).await?;
        record(batch);
        Ok(report)
    }

    async fn load_sequence_state(&mut self) -> Result<Vec<DeviceSequenceState>, SinkError> {
        self.inner.load_sequence_state().await
    }

    async fn expire_unconfirmed_commands(
        &mut self,
        now: iiot_core::types::Timestamp,
        grace: std::time::Duration,
    ) -> Result<u64, SinkError> {
        self.inner.expire_unconfirmed_commands(now, grace).await
    }
}
