//! The pipeline: source → decode → validate → dedupe → gap check → batch → sink →
//! acknowledge.
//!
//! * A delivery is acknowledged only after everything it produced (rows, a dead
//!   letter, a gap record) is committed. A crash anywhere before that means the
//!   broker redelivers, and the sink's idempotency turns the redelivery into no
//!   new rows.
//! * At most `max_in_flight` deliveries are held un-acknowledged; at the limit the
//!   pipeline commits and stops pulling (back-pressure), so memory stays bounded
//!   however slow the sink is.
//! * A transient sink error (connection lost, server restart) retries the same
//!   batch with exponential back-off. A batch the sink refuses is split until the
//!   poison telemetry batch (or command, or ack) is isolated; that one goes to
//!   the dead-letter table and the rest is committed.
//! * Telemetry, data loss, commands (`.../commands/{id}`, as an issuer published
//!   them) and command acks (`.../commands/{id}/ack`) become rows; status
//!   messages update the `iiot_ingest_device_online` gauge. See
//!   [`commands`](crate::commands) for how commands are tracked.
//! * Every [`command_sweep_interval`](PipelineConfig::command_sweep_interval)
//!   the pipeline asks the sink to mark commands without a final ack past their
//!   deadline plus [`command_grace`](PipelineConfig::command_grace) as
//!   `expired_unconfirmed`. A failed sweep is logged and tried again at the
//!   next interval; it never stops the pipeline.
//! * Nothing is dropped silently: undecodable payloads, unknown versions, limit
//!   violations, device-id mismatches (and command-id mismatches between a
//!   command or ack and its topic) and unexpected kinds become dead letters
//!   with the original bytes and a reason.
//!
//! ## Metrics
//! `iiot_ingest_rows_written_total`, `iiot_ingest_batches_written_total`,
//! `iiot_ingest_duplicates_total` (label `where`), `iiot_ingest_dead_letters_total`
//! (label `reason`), `iiot_ingest_commit_retries_total`, `iiot_ingest_commit_seconds`,
//! `iiot_ingest_commands_total`, `iiot_ingest_command_acks_total` (label `state`),
//! `iiot_ingest_commands_expired_unconfirmed_total`,
//! `iiot_ingest_command_sweep_errors_total`, and the per-device gauges
//! `iiot_ingest_device_last_seen_seconds` and `iiot_ingest_device_online`.

mod config;
mod stats;
mod work;

use std::time::Duration;

use bytes::Bytes;
use iiot_core::topic::Topic;
use iiot_core::types::Timestamp;
use iiot_core::version::{Message, MessageKind, Router};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::PipelineConfig;
pub use stats::PipelineStats;

use self::work::{Work, id_mismatch, split};
use crate::dedupe::DedupeWindow;
use crate::gaps::GapTracker;
use crate::record::{
    AcceptedAck, AcceptedBatch, AcceptedCommand, CommitBatch, DeadLetter, DeadLetterReason,
};
use crate::sink::{Sink, SinkError};
use crate::source::{Delivery, Source, SourceError};

/// Why the pipeline stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The sink failed in a way retrying cannot fix (setup, or it refused content
    /// that could not be isolated). Un-acknowledged deliveries will be redelivered.
    #[error("sink failed: {0}")]
    Sink(#[source] SinkError),
}

/// A read-only view of a running pipeline.
#[derive(Debug, Clone)]
pub struct PipelineHandle {
    stats: watch::Receiver<PipelineStats>,
}

impl PipelineHandle {
    /// The counters as of the last commit.
    pub fn stats(&self) -> PipelineStats {
        self.stats.borrow().clone()
    }

    /// Waits until `pred` holds for the published counters (or the pipeline ended).
    pub async fn wait_for(
        &mut self,
        mut pred: impl FnMut(&PipelineStats) -> bool,
    ) -> PipelineStats {
        let found = self
            .stats
            .wait_for(|s| pred(s))
            .await
            .map(|s| s.clone())
            .ok();
        found.unwrap_or_else(|| self.stats.borrow().clone())
    }
}

/// The ingest pipeline over a source and a sink.
pub struct Pipeline<S: Source, K: Sink> {
    source: S,
    sink: K,
    config: PipelineConfig,
    router: Router,
    dedupe: DedupeWindow,
    gaps: GapTracker,
    work: Work,
    rows: usize,
    pending: Vec<S::Token>,
    batch_started: Option<Instant>,
    last_receive: Option<Instant>,
    stats: PipelineStats,
    stats_tx: watch::Sender<PipelineStats>,
    /// When the next command sweep is due; `None`: sweeps are off.
    next_sweep: Option<Instant>,
}

enum Outcome {
    Committed,
    Cancelled,
}

impl<S: Source, K: Sink> Pipeline<S, K> {
    /// A pipeline reading `source` into `sink`: its handle and the pipeline to
    /// [`run`](Pipeline::run) (handle first, like every driver of iiot-rs).
    pub fn new(source: S, sink: K, config: PipelineConfig) -> (PipelineHandle, Self) {
        let (stats_tx, stats) = watch::channel(PipelineStats::default());
        let p = Self {
            source,
            sink,
            router: Router::new(config.limits.clone()),
            dedupe: DedupeWindow::new(config.dedupe_window, config.dedupe_capacity),
            gaps: GapTracker::new(config.max_open_gaps_per_device),
            next_sweep: (!config.command_sweep_interval.is_zero())
                .then(|| Instant::now() + config.command_sweep_interval),
            config,
            work: Work::default(),
            rows: 0,
            pending: Vec::new(),
            batch_started: None,
            last_receive: None,
            stats: PipelineStats::default(),
            stats_tx,
        };
        (PipelineHandle { stats }, p)
    }

    /// Runs until `cancel` fires or the source ends, committing what it holds
    /// before it returns.
    ///
    /// # Errors
    /// [`PipelineError::Sink`] on a sink failure that retrying cannot fix.
    ///
    /// # Cancel safety
    /// Cancel through `cancel`, not by dropping the future: deliveries not yet
    /// committed stay un-acknowledged either way and are redelivered, but only
    /// the token lets the pipeline commit what it holds first.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<PipelineStats, PipelineError> {
        if !self.restore_state(&cancel).await? {
            return Ok(self.stats);
        }
        loop {
            let deadline = self.batch_started.map(|t| {
                let latest = t + self.config.batch_max_delay;
                self.last_receive
                    .map_or(latest, |r| latest.min(r + self.config.idle_flush))
            });
            let can_pull = self.pending.len() < self.config.max_in_flight.get();
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    self.flush(&cancel).await?;
                    return Ok(self.stats);
                }
                () = sleep_until_opt(deadline), if deadline.is_some() => {
                    if matches!(self.flush(&cancel).await?, Outcome::Cancelled) {
                        return Ok(self.stats);
                    }
                }
                () = sleep_until_opt(self.next_sweep), if self.next_sweep.is_some() => {
                    self.sweep().await;
                }
                r = self.source.recv(), if can_pull => match r {
                    Ok(Some(d)) => {
                        self.process(d);
                        // A command's ack never waits for the telemetry batching
                        // delay: whoever issued it is waiting for it.
                        let urgent = !self.work.batch.command_acks.is_empty();
                        let full = urgent
                            || self.rows >= self.config.batch_max_rows.get()
                            || self.pending.len() >= self.config.max_in_flight.get();
                        if full && matches!(self.flush(&cancel).await?, Outcome::Cancelled) {
                            return Ok(self.stats);
                        }
                    }
                    Ok(None) | Err(SourceError::Closed) => {
                        self.flush(&cancel).await?;
                        return Ok(self.stats);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "source error; retrying");
                        tokio::select! {
                            () = cancel.cancelled() => {}
                            () = tokio::time::sleep(self.config.retry_initial) => {}
                        }
                    }
                },
            }
        }
    }

    /// Reads back sequence state; `false` when cancelled first.
    async fn restore_state(&mut self, cancel: &CancellationToken) -> Result<bool, PipelineError> {
        let mut attempt = 0;
        loop {
            match self.sink.load_sequence_state().await {
                Ok(states) => {
                    self.gaps.restore(states);
                    return Ok(true);
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "sink unavailable while restoring state; retrying");
                    if !self.backoff(&mut attempt, cancel).await {
                        return Ok(false);
                    }
                }
                Err(e) => return Err(PipelineError::Sink(e)),
            }
        }
    }

    fn dead_letter(
        &mut self,
        topic: String,
        payload: Bytes,
        reason: DeadLetterReason,
        detail: String,
        at: Timestamp,
    ) {
        self.work.batch.dead_letters.push(DeadLetter {
            topic,
            payload,
            reason,
            detail,
            received_at: at,
        });
    }

    fn process(&mut self, d: Delivery<S::Token>) {
        self.stats.received += 1;
        let now = Instant::now();
        self.last_receive = Some(now);
        if self.batch_started.is_none() {
            self.batch_started = Some(now);
        }
        let Delivery {
            topic,
            payload,
            received_at,
            token,
        } = d;
        self.pending.push(token);
        let parsed = match Topic::parse(&topic) {
            Ok(t) => t,
            Err(e) => {
                self.dead_letter(
                    topic,
                    payload,
                    DeadLetterReason::BadTopic,
                    e.to_string(),
                    received_at,
                );
                return;
            }
        };
        let kind = MessageKind::of_topic(&parsed);
        let decoded = match self.router.decode(kind, payload.clone()) {
            Ok(d) => d,
            Err(rejected) => {
                let detail = rejected.reason.to_string();
                self.dead_letter(
                    topic,
                    payload,
                    DeadLetterReason::Decode(rejected.reason),
                    detail,
                    received_at,
                );
                return;
            }
        };
        if let Some(id) = decoded.message.device_id()
            && id != parsed.path.device_id()
        {
            let detail = format!(
                "payload device {id} on topic of device {}",
                parsed.path.device_id()
            );
            self.dead_letter(
                topic,
                payload,
                DeadLetterReason::DeviceMismatch,
                detail,
                received_at,
            );
            return;
        }
        match decoded.message {
            Message::Telemetry(batch) => {
                metrics::gauge!("iiot_ingest_device_last_seen_seconds", "device" => batch.device_id.to_string())
                    .set(received_at.unix_millis() as f64 / 1000.0);
                if !self
                    .dedupe
                    .insert(&batch.device_id, batch.message_id, received_at)
                {
                    self.stats.duplicates_suppressed += 1;
                    metrics::counter!("iiot_ingest_duplicates_total", "where" => "memory")
                        .increment(1);
                    return;
                }
                let changes = self.gaps.observe(&batch.device_id, batch.seq, received_at);
                self.work.batch.gaps.extend(changes);
                self.rows += batch.samples.len();
                self.work.batch.telemetry.push(AcceptedBatch {
                    batch,
                    topic,
                    received_at,
                });
                self.work.payloads.push(payload);
            }
            Message::DataLoss(loss) => {
                if !self
                    .dedupe
                    .insert(&loss.device_id, loss.message_id, received_at)
                {
                    self.stats.duplicates_suppressed += 1;
                    return;
                }
                let changes = self.gaps.announce(&loss, received_at);
                self.work.batch.gaps.extend(changes);
                self.work.batch.data_loss.push(loss);
            }
            Message::Status(status) => {
                metrics::gauge!("iiot_ingest_device_online", "device" => status.device_id.to_string())
                    .set(if status.online { 1.0 } else { 0.0 });
            }
            Message::Command(command) => {
                if let Some(detail) = id_mismatch(&parsed.class, command.id) {
                    self.dead_letter(
                        topic,
                        payload,
                        DeadLetterReason::CommandIdMismatch,
                        detail,
                        received_at,
                    );
                    return;
                }
                self.work.batch.commands.push(AcceptedCommand {
                    command,
                    topic,
                    received_at,
                });
                self.work.command_payloads.push(payload);
            }
            Message::CommandAck(ack) => {
                if let Some(detail) = id_mismatch(&parsed.class, ack.command_id) {
                    self.dead_letter(
                        topic,
                        payload,
                        DeadLetterReason::CommandIdMismatch,
                        detail,
                        received_at,
                    );
                    return;
                }
                self.work.batch.command_acks.push(AcceptedAck {
                    ack,
                    topic,
                    received_at,
                });
                self.work.ack_payloads.push(payload);
            }
            other => {
                let detail = format!("{} messages are not ingested", kind.as_str());
                drop(other);
                self.dead_letter(
                    topic,
                    payload,
                    DeadLetterReason::UnexpectedKind,
                    detail,
                    received_at,
                );
            }
        }
    }

    /// Commits what the pipeline holds, then acknowledges every delivery it came from.
    async fn flush(&mut self, cancel: &CancellationToken) -> Result<Outcome, PipelineError> {
        self.batch_started = None;
        if self.pending.is_empty() && self.work.batch.is_empty() {
            return Ok(Outcome::Committed);
        }
        let work = std::mem::take(&mut self.work);
        self.rows = 0;
        if matches!(
            self.commit_isolating(work, cancel).await?,
            Outcome::Cancelled
        ) {
            tracing::info!(
                unacked = self.pending.len(),
                "cancelled before commit; the broker will redeliver"
            );
            self.pending.clear();
            return Ok(Outcome::Cancelled);
        }
        for token in std::mem::take(&mut self.pending) {
            if let Err(e) = self.source.ack(token).await {
                // The broker redelivers; the sink's idempotency absorbs it.
                tracing::warn!(error = %e, "ack failed");
            } else {
                self.stats.acked += 1;
            }
        }
        self.stats_tx.send_replace(self.stats.clone());
        Ok(Outcome::Committed)
    }

    /// Commits `work`, retrying transient failures and splitting refused batches
    /// until the poison telemetry batch, command or ack is isolated and
    /// dead-lettered.
    async fn commit_isolating(
        &mut self,
        work: Work,
        cancel: &CancellationToken,
    ) -> Result<Outcome, PipelineError> {
        let mut stack = vec![work];
        while let Some(mut w) = stack.pop() {
            let mut attempt = 0;
            loop {
                let started = Instant::now();
                match self.sink.commit(&w.batch).await {
                    Ok(report) => {
                        metrics::histogram!("iiot_ingest_commit_seconds")
                            .record(started.elapsed().as_secs_f64());
                        self.account(&w.batch, report);
                        break;
                    }
                    Err(e) if e.is_transient() => {
                        self.stats.commit_retries += 1;
                        metrics::counter!("iiot_ingest_commit_retries_total").increment(1);
                        tracing::warn!(error = %e, retry_in = ?self.retry_delay(attempt), "sink unavailable; retrying the same batch");
                        if !self.backoff(&mut attempt, cancel).await {
                            return Ok(Outcome::Cancelled);
                        }
                    }
                    Err(e @ SinkError::Rejected { .. }) if w.isolatable() > 1 => {
                        tracing::warn!(error = %e, code = ?e.code(), records = w.isolatable(), "sink refused the batch; splitting");
                        let (a, b) = split(w);
                        stack.push(b);
                        stack.push(a);
                        break;
                    }
                    Err(e @ SinkError::Rejected { .. }) if w.isolatable() == 1 => {
                        let Some(poison) = w.pop_poison(e.detail().to_owned()) else {
                            break;
                        };
                        tracing::error!(error = %e, code = ?e.code(), topic = %poison.topic, "poison record dead-lettered");
                        self.stats.poison_batches += 1;
                        w.batch.dead_letters.push(poison);
                    }
                    Err(e) => return Err(PipelineError::Sink(e)),
                }
            }
        }
        Ok(Outcome::Committed)
    }

    fn account(&mut self, batch: &CommitBatch, report: crate::record::CommitReport) {
        self.stats.commits += 1;
        self.stats.batches_accepted += report.batches_written;
        self.stats.duplicates_at_sink += report.batches_skipped;
        self.stats.rows_written += report.rows_written;
        self.stats.data_loss_records += batch.data_loss.len() as u64;
        self.stats.gaps_opened += batch
            .gaps
            .iter()
            .filter(|g| matches!(g, crate::record::GapChange::Opened(_)))
            .count() as u64;
        metrics::counter!("iiot_ingest_rows_written_total").increment(report.rows_written);
        metrics::counter!("iiot_ingest_batches_written_total").increment(report.batches_written);
        metrics::counter!("iiot_ingest_duplicates_total", "where" => "sink")
            .increment(report.batches_skipped);
        self.stats.commands += batch.commands.len() as u64;
        self.stats.command_acks += batch.command_acks.len() as u64;
        if !batch.commands.is_empty() {
            metrics::counter!("iiot_ingest_commands_total").increment(batch.commands.len() as u64);
        }
        for a in &batch.command_acks {
            metrics::counter!("iiot_ingest_command_acks_total", "state" => a.ack.state.as_str())
                .increment(1);
        }
        for dl in &batch.dead_letters {
            let label = dl.reason.label();
            metrics::counter!("iiot_ingest_dead_letters_total", "reason" => label.clone())
                .increment(1);
            *self.stats.dead_letters.entry(label).or_default() += 1;
        }
    }

    /// Asks the sink to mark overdue commands, then schedules the next sweep. A
    /// failure is logged and counted; the next interval tries again.
    async fn sweep(&mut self) {
        self.next_sweep = Some(Instant::now() + self.config.command_sweep_interval);
        match self
            .sink
            .expire_unconfirmed_commands(Timestamp::now(), self.config.command_grace)
            .await
        {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(commands = n, "commands marked expired_unconfirmed");
                self.stats.commands_expired_unconfirmed += n;
                metrics::counter!("iiot_ingest_commands_expired_unconfirmed_total").increment(n);
                self.stats_tx.send_replace(self.stats.clone());
            }
            Err(e) => {
                tracing::warn!(error = %e, "command expiry sweep failed; retrying at the next interval");
                self.stats.command_sweep_errors += 1;
                metrics::counter!("iiot_ingest_command_sweep_errors_total").increment(1);
                self.stats_tx.send_replace(self.stats.clone());
            }
        }
    }

    /// The delay before retry `attempt` (counted from 0): `retry_initial`, doubling per
    /// retry up to `retry_max`, without jitter (core's [`Backoff`](iiot_core::backoff::Backoff)
    /// with a jitter unit of 1).
    fn retry_delay(&self, attempt: u32) -> Duration {
        iiot_core::backoff::Backoff::new(self.config.retry_initial, self.config.retry_max)
            .delay(attempt, 1.0)
    }

    /// Sleeps for retry `attempt`'s delay and counts the retry; `false` when cancelled.
    async fn backoff(&self, attempt: &mut u32, cancel: &CancellationToken) -> bool {
        let d = self.retry_delay(*attempt);
        *attempt = attempt.saturating_add(1);
        tokio::select! {
            () = cancel.cancelled() => false,
            () = tokio::time::sleep(d) => true,
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
