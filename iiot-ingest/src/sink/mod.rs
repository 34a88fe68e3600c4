//! Sinks: where committed telemetry (and commands, acks, data loss, gaps and
//! dead letters) goes.
//!
//! A sink commits a [`CommitBatch`] atomically and idempotently: redelivered
//! telemetry (same `(device_id, message_id)`) writes no second row, and a
//! redelivered command or ack changes nothing in the commands table. The
//! pipeline acknowledges the broker only after [`Sink::commit`] returned `Ok`.
//!
//! ## Errors
//! A [`SinkError`]'s variant is the pipeline's reaction ([`SinkErrorKind`]):
//! retry the same batch, split it to isolate a poison record, or stop. Each sink
//! decides the variant from the backend's typed answer, never from message text,
//! and passes that answer on: the [`ErrorCode`] (PostgreSQL's SQLSTATE, SQLite's
//! extended result code, Kafka's error code) and the driver's error as the
//! [`source`](std::error::Error::source).

use std::future::Future;
use std::time::Duration;

use iiot_core::types::Timestamp;

use crate::record::{CommitBatch, CommitReport, DeviceSequenceState};

/// A boxed driver error, kept as the [`source`](std::error::Error::source) of a
/// [`SinkError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A PostgreSQL SQLSTATE: five ASCII upper-case letters or digits, e.g. `23505`
/// (unique violation). The first two characters are its class (`23`: integrity
/// constraint violation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SqlState([u8; 5]);

impl SqlState {
    /// `code` as a SQLSTATE; `None` unless it is five ASCII upper-case letters or
    /// digits.
    pub fn new(code: &str) -> Option<Self> {
        let bytes: [u8; 5] = code.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
            .then_some(Self(bytes))
    }

    /// The five characters.
    pub fn as_str(&self) -> &str {
        // Checked in `new`: ASCII only.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The class: the first two characters (`23` for `23505`).
    pub fn class(&self) -> &str {
        self.as_str().get(..2).unwrap_or_default()
    }
}

impl std::fmt::Display for SqlState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The code a backend answered a failed request with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// PostgreSQL's SQLSTATE (`DbError::code`), e.g. `23505`.
    SqlState(SqlState),
    /// SQLite's extended result code, e.g. 2067 (`SQLITE_CONSTRAINT_UNIQUE`) or
    /// 1299 (`SQLITE_CONSTRAINT_NOTNULL`); its low byte is the primary code (19,
    /// `SQLITE_CONSTRAINT`): see [`ErrorCode::sqlite_primary`].
    Sqlite(i32),
    /// A Kafka protocol error code, e.g. 10 (`MESSAGE_TOO_LARGE`) or 29
    /// (`TOPIC_AUTHORIZATION_FAILED`).
    Kafka(i16),
}

impl ErrorCode {
    /// The SQLSTATE, for a PostgreSQL error.
    pub fn sqlstate(&self) -> Option<SqlState> {
        match self {
            Self::SqlState(s) => Some(*s),
            _ => None,
        }
    }

    /// SQLite's primary result code (the low byte of the extended one), for an
    /// SQLite error.
    pub fn sqlite_primary(&self) -> Option<i32> {
        match self {
            Self::Sqlite(extended) => Some(extended & 0xff),
            _ => None,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SqlState(s) => write!(f, "SQLSTATE {s}"),
            Self::Sqlite(c) => write!(f, "SQLite code {c}"),
            Self::Kafka(c) => write!(f, "Kafka error code {c}"),
        }
    }
}

/// How the pipeline reacts to a [`SinkError`]: its variant, as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SinkErrorKind {
    /// [`SinkError::Unavailable`]: retry the same batch.
    Unavailable,
    /// [`SinkError::Rejected`]: split the batch to isolate the poison record.
    Rejected,
    /// [`SinkError::Setup`]: stop; retrying cannot help.
    Setup,
}

impl SinkErrorKind {
    /// The `kind` label of the `iiot_ingest_sink_errors_total` metric:
    /// `unavailable`, `rejected` or `setup`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Rejected => "rejected",
            Self::Setup => "setup",
        }
    }
}

/// The class of a sink failure; the pipeline reacts differently to each.
///
/// Every variant carries the same typed data: `detail`, a complete one-line
/// description (what the sink was doing and what the backend said; it already
/// includes the text of `source`), the backend's `code` where it answered with
/// one, and the driver's error as `source` where there is one. Build them with
/// [`SinkError::new`] (or [`unavailable`](SinkError::unavailable),
/// [`rejected`](SinkError::rejected), [`setup`](SinkError::setup)),
/// [`with_code`](SinkError::with_code) and [`with_source`](SinkError::with_source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The connection failed or was lost (server restart, killed backend,
    /// network, a timeout). Nothing was committed; retry the same batch after
    /// reconnecting.
    #[error("sink unavailable: {detail}")]
    #[non_exhaustive]
    Unavailable {
        /// What happened.
        detail: String,
        /// The backend's code, if it answered (`57P01` for a terminated backend).
        code: Option<ErrorCode>,
        /// The driver's error.
        #[source]
        source: Option<BoxError>,
    },
    /// The sink refused the batch's content (a constraint, a value it cannot
    /// store). Nothing was committed; retrying the same batch will fail again, so
    /// the pipeline splits it to isolate the poison record.
    #[error("sink rejected the batch: {detail}")]
    #[non_exhaustive]
    Rejected {
        /// What the sink said.
        detail: String,
        /// The backend's code, if it answered (`23505` for a unique violation).
        code: Option<ErrorCode>,
        /// The driver's error.
        #[source]
        source: Option<BoxError>,
    },
    /// The sink is misconfigured or its schema cannot be created.
    #[error("sink setup failed: {detail}")]
    #[non_exhaustive]
    Setup {
        /// What happened.
        detail: String,
        /// The backend's code, if it answered (`42P01` for a missing table).
        code: Option<ErrorCode>,
        /// The driver's error, or the config error.
        #[source]
        source: Option<BoxError>,
    },
}

impl SinkError {
    /// An error of `kind` with `detail`, no code and no source.
    pub fn new(kind: SinkErrorKind, detail: impl Into<String>) -> Self {
        Self::from_parts(kind, detail.into(), None, None)
    }

    /// [`SinkError::Unavailable`] with `detail`.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(SinkErrorKind::Unavailable, detail)
    }

    /// [`SinkError::Rejected`] with `detail`.
    pub fn rejected(detail: impl Into<String>) -> Self {
        Self::new(SinkErrorKind::Rejected, detail)
    }

    /// [`SinkError::Setup`] with `detail`.
    pub fn setup(detail: impl Into<String>) -> Self {
        Self::new(SinkErrorKind::Setup, detail)
    }

    /// The same error with the backend's `code`.
    #[must_use]
    pub fn with_code(self, code: ErrorCode) -> Self {
        let kind = self.kind();
        let (detail, _, source) = self.into_parts();
        Self::from_parts(kind, detail, Some(code), source)
    }

    /// The same error with `source` as its [`source`](std::error::Error::source).
    #[must_use]
    pub fn with_source(self, source: impl Into<BoxError>) -> Self {
        let kind = self.kind();
        let (detail, code, _) = self.into_parts();
        Self::from_parts(kind, detail, code, Some(source.into()))
    }

    /// The same detail, code and source as an error of `kind`, for a sink that
    /// knows better than the backend's code (the SQLite sink makes a constraint
    /// error while opening the file a setup error).
    #[must_use]
    pub fn with_kind(self, kind: SinkErrorKind) -> Self {
        let (detail, code, source) = self.into_parts();
        Self::from_parts(kind, detail, code, source)
    }

    fn from_parts(
        kind: SinkErrorKind,
        detail: String,
        code: Option<ErrorCode>,
        source: Option<BoxError>,
    ) -> Self {
        match kind {
            SinkErrorKind::Unavailable => Self::Unavailable {
                detail,
                code,
                source,
            },
            SinkErrorKind::Rejected => Self::Rejected {
                detail,
                code,
                source,
            },
            SinkErrorKind::Setup => Self::Setup {
                detail,
                code,
                source,
            },
        }
    }

    fn into_parts(self) -> (String, Option<ErrorCode>, Option<BoxError>) {
        match self {
            Self::Unavailable {
                detail,
                code,
                source,
            }
            | Self::Rejected {
                detail,
                code,
                source,
            }
            | Self::Setup {
                detail,
                code,
                source,
            } => (detail, code, source),
        }
    }

    /// Which of the three reactions this error asks for.
    pub fn kind(&self) -> SinkErrorKind {
        match self {
            Self::Unavailable { .. } => SinkErrorKind::Unavailable,
            Self::Rejected { .. } => SinkErrorKind::Rejected,
            Self::Setup { .. } => SinkErrorKind::Setup,
        }
    }

    /// The complete description (without the variant's prefix).
    pub fn detail(&self) -> &str {
        match self {
            Self::Unavailable { detail, .. }
            | Self::Rejected { detail, .. }
            | Self::Setup { detail, .. } => detail,
        }
    }

    /// The backend's code, if it answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Unavailable { code, .. }
            | Self::Rejected { code, .. }
            | Self::Setup { code, .. } => *code,
        }
    }

    /// The SQLSTATE, for an error PostgreSQL answered.
    pub fn sqlstate(&self) -> Option<SqlState> {
        self.code().and_then(|c| c.sqlstate())
    }

    /// Whether retrying the same batch later may succeed
    /// ([`SinkError::Unavailable`]).
    pub fn is_transient(&self) -> bool {
        self.kind() == SinkErrorKind::Unavailable
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

    /// Marks every tracked command that has no final state and whose
    /// `expires_at` plus `grace` lies before `now` as `expired_unconfirmed`
    /// (with `final_at = now`), in one transaction of its own; returns how many.
    /// A device's final ack that arrives later still replaces the mark (see
    /// [`commands`](crate::commands)).
    ///
    /// The pipeline calls it every
    /// [`command_sweep_interval`](crate::PipelineConfig::command_sweep_interval)
    /// with the wall clock; tests call it with an explicit `now`. The default
    /// does nothing and returns 0, for sinks without a commands table (Kafka is
    /// a log: its consumers apply the deadline themselves). A sink that wraps
    /// another must forward it.
    ///
    /// # Errors
    /// [`SinkError`]; then nothing was marked.
    fn expire_unconfirmed_commands(
        &mut self,
        now: Timestamp,
        grace: Duration,
    ) -> impl Future<Output = Result<u64, SinkError>> + Send {
        let _ = (now, grace);
        std::future::ready(Ok(0))
    }
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

#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod command_sql;
pub mod memory;

#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_is_five_upper_case_alphanumerics() {
        let s = SqlState::new("57P01").unwrap();
        assert_eq!(
            (s.as_str(), s.class(), s.to_string()),
            ("57P01", "57", "57P01".into())
        );
        for bad in ["", "2350", "235050", "57p01", "23 05", "235\u{e9}"] {
            assert_eq!(SqlState::new(bad), None, "{bad:?}");
        }
        assert_eq!(ErrorCode::SqlState(s).sqlstate(), Some(s));
        assert_eq!(ErrorCode::Sqlite(2067).sqlite_primary(), Some(19));
        assert_eq!(ErrorCode::Kafka(10).sqlstate(), None);
    }

    #[test]
    fn kind_code_and_source_are_data() {
        let io = std::io::Error::other("reset");
        let code = ErrorCode::SqlState(SqlState::new("23505").unwrap());
        let e = SinkError::rejected("commit: duplicate")
            .with_code(code)
            .with_source(io);
        assert_eq!(e.kind(), SinkErrorKind::Rejected);
        assert!(!e.is_transient());
        assert_eq!(e.code(), Some(code));
        assert_eq!(
            e.sqlstate().map(|s| s.to_string()).as_deref(),
            Some("23505")
        );
        assert_eq!(e.detail(), "commit: duplicate");
        assert_eq!(e.to_string(), "sink rejected the batch: commit: duplicate");
        assert!(
            std::error::Error::source(&e)
                .unwrap()
                .is::<std::io::Error>()
        );
        // Re-classed, it keeps its code and source.
        let e = e.with_kind(SinkErrorKind::Setup);
        assert!(matches!(
            e,
            SinkError::Setup {
                code: Some(_),
                source: Some(_),
                ..
            }
        ));
        assert_eq!(e.kind().label(), "setup");
        let e = SinkError::unavailable("lost");
        assert!(e.is_transient());
        assert_eq!((e.code(), e.kind().label()), (None, "unavailable"));
        assert!(std::error::Error::source(&e).is_none());
    }
}
