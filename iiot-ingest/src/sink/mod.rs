//! Sinks: where committed telemetry goes.
//!
//! A sink commits a [`CommitBatch`] atomically and idempotently: redelivered
//! telemetry (same `(device_id, message_id)`) writes no second row. The pipeline
//! acknowledges the broker only after [`Sink::commit`] returned `Ok`.

use std::future::Future;

use crate::record::{CommitBatch, CommitReport, DeviceSequenceState};

/// The class of a sink failure; the pipeline reacts differently to each.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The connection failed or was lost (server restart, killed backend,
    /// network). Nothing was committed; retry the same batch after reconnecting.
    #[error("sink unavailable: {detail}")]
    Unavailable {
        /// What happened.
        detail: String,
    },
    /// The sink refused the batch's content (a constraint, a value it cannot
    /// store). Nothing was committed; retrying the same batch will fail again, so
    /// the pipeline splits it to isolate the poison record.
    #[error("sink rejected the batch: {detail}")]
    Rejected {
        /// What the sink said.
        detail: String,
    },
    /// The sink is misconfigured or its schema cannot be created.
    #[error("sink setup failed: {detail}")]
    Setup {
        /// What happened.
        detail: String,
    },
}

impl SinkError {
    /// Whether retrying the same batch later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// A destination for committed telemetry.
pub trait Sink: Send {
    /// Commits everything in `batch` in one transaction, skipping telemetry the
    /// sink already holds.
    ///
    /// # Errors
    /// [`SinkError`]; on any error nothing of `batch` is committed.
    ///
    /// # Cancel safety
    /// Dropping the future leaves the transaction uncommitted or committed, never
    /// half-written; the pipeline then retries, which is idempotent.
    fn commit(
        &mut self,
        batch: &CommitBatch,
    ) -> impl Future<Output = Result<CommitReport, SinkError>> + Send;

    /// Reads back per-device sequence state (highest sequence, open gaps) so gap
    /// detection resumes after a restart.
    ///
    /// # Errors
    /// [`SinkError`].
    fn load_sequence_state(
        &mut self,
    ) -> impl Future<Output = Result<Vec<DeviceSequenceState>, SinkError>> + Send;
}
/// Records the metrics every sink reports for a successful commit:
/// `iiot_ingest_sink_{rows_written,batches_written,batches_skipped}_total` and the
/// `iiot_ingest_sink_commit_seconds` histogram, labelled `sink = name`.
#[cfg(any(feature = "postgres", feature = "sqlite", feature = "kafka"))]
pub(crate) fn record_commit(
    sink: &'static str,
    report: &CommitReport,
    started: std::time::Instant,
) {
    metrics::counter!("iiot_ingest_sink_rows_written_total", "sink" => sink)
        .increment(report.rows_written);
    metrics::counter!("iiot_ingest_sink_batches_written_total", "sink" => sink)
        .increment(report.batches_written);
    metrics::counter!("iiot_ingest_sink_batches_skipped_total", "sink" => sink)
        .increment(report.batches_skipped);
    metrics::histogram!("iiot_ingest_sink_commit_seconds", "sink" => sink)
        .record(started.elapsed().as_secs_f64());
    tracing::debug!(
        sink,
        rows = report.rows_written,
        written = report.batches_written,
        skipped = report.batches_skipped,
        "commit"
    );
}

pub mod memory;

#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;
