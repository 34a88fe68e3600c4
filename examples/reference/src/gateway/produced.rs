//! The produced log: what the gateway produced, recorded outside the process so that
//! it survives the process (a SIGKILL included).
//!
//! Enabled by `produced_log = "PATH"` in gateway.toml. The file is opened for appending
//! (every run adds to it) and gets one JSON object per line:
//!
//! | `event` | written | fields |
//! |---|---|---|
//! | `open` | after the outbox opened, before the first poll | `device`, `pid`, the outbox's `next_seq`, `appended`, `backlog` |
//! | `batch` | after the batch's append to the outbox is durable | `seq`, `message_id` (ULID text), `samples`: `[{tag, time_ns}]` (source time, Unix ns) |
//! | `stopped` | when polling stopped and the last batch is appended (clean stop only) | this run's `batches`, `samples`, `append_errors`; the outbox's `next_seq`, `appended`, `dropped_records`, `expired_records`, `unreadable_records` |
//!
//! ## What a reader may conclude
//! - Every `batch` line is a batch that was durably in the outbox: the line is
//!   written only after the append returned (and, under group commit, after
//!   [`Appended::durable`](iiot_edge::outbox::Appended::durable) resolved).
//! - The converse has a window: a kill between the append and the line loses the
//!   line, not the batch. The batch loop appends one batch at a time, so per kill at
//!   most one durable batch has no line: the one just below the next run's
//!   `open.next_seq` (the outbox's own count of what is durable).
//! - Each line is one `write(2)` after the previous one completed. A kill in the
//!   middle of a write can leave a partial last line; the next run ends it with a
//!   newline before its `open` line, so a reader skips an unparsable line directly
//!   before an `open`.
//! - The file is not fsynced: a power cut can lose the last lines, never add one.
//!
//! **Stability warning:** this is a test and audit aid, not a stable format; fields
//! may be added (readers should ignore unknown ones).

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use iiot_core::types::{MessageId, Sample, TelemetryBatch};
use iiot_edge::outbox::OutboxStats;
use iiot_edge::runtime::{BatchObserver, RuntimeCounters};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;

use crate::error::AppError;

/// One line of the produced log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProducedEntry {
    /// A gateway run opened its outbox.
    Open {
        /// The device id.
        device: String,
        /// The gateway's process id.
        pid: u32,
        /// The sequence number the next append gets: everything below is durable
        /// (or was acknowledged and removed).
        next_seq: u64,
        /// Records ever appended to this outbox (persistent).
        appended: u64,
        /// Records stored and not yet confirmed by the broker.
        backlog: u64,
    },
    /// A telemetry batch durably appended to the outbox.
    Batch {
        /// Its outbox sequence number (`TelemetryBatch.seq`).
        seq: u64,
        /// Its message id.
        message_id: MessageId,
        /// Its samples, in batch order.
        samples: Vec<ProducedSample>,
    },
    /// Polling stopped and the last batch was appended.
    Stopped {
        /// Batches this run appended durably (each has a `batch` line).
        batches: u64,
        /// Samples in them.
        samples: u64,
        /// Batches this run could not append (logged; not produced).
        append_errors: u64,
        /// The sequence number the next append gets.
        next_seq: u64,
        /// Records ever appended to this outbox (persistent).
        appended: u64,
        /// Records the outbox dropped for space, ever (persistent).
        dropped_records: u64,
        /// Records the outbox expired by age, ever (persistent).
        expired_records: u64,
        /// Records the outbox found unreadable, ever (persistent).
        unreadable_records: u64,
    },
}

/// A sample's identity in the produced log.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProducedSample {
    /// The tag path.
    pub tag: String,
    /// The source timestamp, nanoseconds since the Unix epoch.
    pub time_ns: i64,
}

impl From<&Sample> for ProducedSample {
    fn from(s: &Sample) -> Self {
        Self {
            tag: s.tag().to_string(),
            time_ns: s.source_time().unix_nanos(),
        }
    }
}

impl ProducedEntry {
    /// The `open` line for an outbox in state `stats`.
    pub fn open(device: &str, stats: &OutboxStats) -> Self {
        Self::Open {
            device: device.to_owned(),
            pid: std::process::id(),
            next_seq: stats.next_seq.0,
            appended: stats.appended,
            backlog: stats.backlog_records,
        }
    }
}

/// The open produced log.
#[derive(Debug)]
pub struct ProducedLog {
    path: PathBuf,
    file: tokio::fs::File,
}

impl ProducedLog {
    /// Opens (or creates) `path` for appending, ending a partial last line that a
    /// killed run left.
    ///
    /// # Errors
    /// [`AppError::Io`] naming the path.
    pub async fn open(path: &Path) -> Result<Self, AppError> {
        let owned = path.to_owned();
        let opened = tokio::task::spawn_blocking(move || open_blocking(&owned))
            .await
            .map_err(|e| AppError::Task {
                task: "produced log open",
                detail: e.to_string(),
            })?;
        let file = opened
            .map_err(|e| AppError::io(format!("cannot open produced log {}", path.display()), e))?;
        Ok(Self {
            path: path.to_owned(),
            file: tokio::fs::File::from_std(file),
        })
    }

    /// Appends `entry` as one line and waits until it is written (to the OS, not
    /// fsynced). A failure is logged and counted
    /// (`iiot_reference_gateway_produced_log_errors_total`); the gateway keeps
    /// producing, and the `stopped` line's counts then exceed the `batch` lines.
    pub async fn write(&mut self, entry: &ProducedEntry) {
        let mut line = match serde_json::to_vec(entry) {
            Ok(l) => l,
            Err(e) => {
                self.failed(&e);
                return;
            }
        };
        line.push(b'\n');
        let written = async {
            self.file.write_all(&line).await?;
            self.file.flush().await
        }
        .await;
        if let Err(e) = written {
            self.failed(&e);
        }
    }

    fn failed(&self, e: &dyn std::fmt::Display) {
        metrics::counter!("iiot_reference_gateway_produced_log_errors_total").increment(1);
        tracing::error!(path = %self.path.display(), error = %e, "cannot write the produced log");
    }
}

fn open_blocking(path: &Path) -> std::io::Result<std::fs::File> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    let len = file.metadata()?.len();
    if len > 0 {
        file.seek(SeekFrom::Start(len - 1))?;
        let mut last = [0u8; 1];
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            tracing::warn!(path = %path.display(), "produced log ends in a partial line (a killed run); ending it");
            std::io::Write::write_all(&mut file, b"\n")?;
        }
    }
    Ok(file)
}

/// The produced log as the runtime's batch observer: one line per durable batch,
/// then the reference metrics (a reader of both never sees a count the log has not).
pub(crate) struct Produced(pub(crate) Option<ProducedLog>);

impl BatchObserver for Produced {
    async fn durable(&mut self, batch: &TelemetryBatch) {
        if let Some(log) = &mut self.0 {
            log.write(&ProducedEntry::Batch {
                seq: batch.seq.0,
                message_id: batch.message_id,
                samples: batch.samples.iter().map(ProducedSample::from).collect(),
            })
            .await;
        }
        metrics::counter!("iiot_reference_gateway_samples_total")
            .increment(batch.samples.len() as u64);
        metrics::counter!("iiot_reference_gateway_batches_total").increment(1);
    }

    async fn append_failed(&mut self, _samples: usize, _error: &str) {
        metrics::counter!("iiot_reference_gateway_append_errors_total").increment(1);
    }

    async fn stopped(&mut self, c: &RuntimeCounters, s: &OutboxStats) {
        let Some(log) = &mut self.0 else {
            return;
        };
        log.write(&ProducedEntry::Stopped {
            batches: c.batches.load(Ordering::Relaxed),
            samples: c.samples.load(Ordering::Relaxed),
            append_errors: c.append_errors.load(Ordering::Relaxed),
            next_seq: s.next_seq.0,
            appended: s.appended,
            dropped_records: s.dropped_records,
            expired_records: s.expired_records,
            unreadable_records: s.unreadable_records,
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let id = MessageId::from_parts(1_700_000_000_000, 7);
        let e = ProducedEntry::Batch {
            seq: 3,
            message_id: id,
            samples: vec![ProducedSample {
                tag: "tank1/level".into(),
                time_ns: 1_700_000_000_123_456_789,
            }],
        };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(
            text,
            format!(
                "{{\"event\":\"batch\",\"seq\":3,\"message_id\":\"{id}\",\"samples\":\
                 [{{\"tag\":\"tank1/level\",\"time_ns\":1700000000123456789}}]}}"
            )
        );
        assert_eq!(serde_json::from_str::<ProducedEntry>(&text).unwrap(), e);
    }

    #[tokio::test]
    async fn a_partial_last_line_is_ended_before_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("produced.jsonl");
        std::fs::write(&path, "{\"event\":\"batch\",\"se").unwrap();
        let mut log = ProducedLog::open(&path).await.unwrap();
        let stopped = ProducedEntry::Stopped {
            batches: 0,
            samples: 0,
            append_errors: 0,
            next_seq: 0,
            appended: 0,
            dropped_records: 0,
            expired_records: 0,
            unreadable_records: 0,
        };
        log.write(&stopped).await;
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text:?}");
        assert_eq!(lines[0], "{\"event\":\"batch\",\"se");
        assert_eq!(
            serde_json::from_str::<ProducedEntry>(lines[1]).unwrap(),
            stopped
        );
        // A complete file gets nothing added on open.
        drop(ProducedLog::open(&path).await.unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }
}
